#!/usr/bin/env bash
# A real search engine for the tests: OpenSearch 2.19 nodes assembled from Maven Central and
# run in one JVM (scripts/engine/: a pom.xml and a short main).
#
#   scripts/engine.sh start [--nodes N] [--jvm-per-node] [--http-port P] [--transport-port P]
#   scripts/engine.sh stop  [--http-port P]
#   scripts/engine.sh status [--http-port P]
#   scripts/engine.sh kill-node I [--http-port P]     (--jvm-per-node: SIGKILL node I's JVM)
#   scripts/engine.sh start-node I [--http-port P]    (start node I again on its data)
#   scripts/engine.sh build      (prints the folder holding engine.jar and classpath.txt)
#
# start: builds the launcher once (artifacts cached in ~/.m2, the jar, its classpath and a
# class-data-sharing archive cached under ~/.cache/elastichash/engine/<hash of the sources>),
# starts N nodes on 127.0.0.1 (HTTP P..P+N-1, transport P'..P'+N-1) with their data under a
# temporary folder, waits until the cluster is green, and prints its base URL as the last line.
# A node already answering on the port (started by an earlier `start`) is reused.
# stop: stops the JVM started for that port and removes its data.
# --jvm-per-node: each node in its own JVM (pids in the state folder), so that a test can kill
# one node with SIGKILL (kill-node) and start it again on the data it left (start-node).
#
# Environment: EH_ENGINE_SETTINGS (node settings, k=v,k=v), EH_ENGINE_HEAP (default 1g; 1536m for 3 nodes in one JVM, 512m per node with
# --jvm-per-node), EH_ENGINE_TIMEOUT_S (180).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$HERE/engine"
cmd="${1:-}"
[[ -n "$cmd" ]] && shift
nodes=1
per_node=false
node_arg=""
http_port=9200
transport_port=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --jvm-per-node) per_node=true; shift ;;
    [0-9]*) node_arg="$1"; shift ;;
    --http-port) http_port="$2"; shift 2 ;;
    --transport-port) transport_port="$2"; shift 2 ;;
    *) echo "engine.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
transport_port="${transport_port:-$((http_port + 100))}"
url="http://127.0.0.1:$http_port"
state="${TMPDIR:-/tmp}/elastichash-engine-$http_port"
timeout_s="${EH_ENGINE_TIMEOUT_S:-180}"

say() { echo "engine: $*" >&2; }

healthy() {
  curl -sf -m 5 "$url/_cluster/health?wait_for_status=green&wait_for_nodes=%3E%3D$nodes&timeout=2s" >/dev/null 2>&1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_tools() {
  local missing=()
  command -v java >/dev/null || missing+=(default-jdk-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v curl >/dev/null || missing+=(curl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Build the launcher into a cache folder keyed by its sources; print that folder.
build() {
  local key cache
  key="$(cat "$SRC/pom.xml" "$SRC"/src/main/java/elastichash/engine/*.java | sha256sum | cut -c1-16)"
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/elastichash/engine/$key"
  if [[ ! -f "$cache/classpath.txt" ]]; then
    say "building the launcher (first run: resolves OpenSearch from Maven Central into ~/.m2)"
    local work
    work="$(mktemp -d)"
    cp -r "$SRC/pom.xml" "$SRC/src" "$work/"
    (cd "$work" && mvn -q -B package dependency:build-classpath \
        -Dmdep.outputFile=target/classpath.txt >&2)
    mkdir -p "$cache"
    cp "$work/target/elastichash-engine-1.jar" "$cache/engine.jar"
    cp "$work/target/classpath.txt" "$cache/classpath.txt.tmp"
    mv "$cache/classpath.txt.tmp" "$cache/classpath.txt"
    rm -rf "$work"
  fi
  echo "$cache"
}

java_cmd() {  # cache dir, extra JVM options...
  local cache="$1"
  shift
  local heap="${EH_ENGINE_HEAP:-}"
  if [[ -z "$heap" ]]; then
    if $per_node; then heap=512m; elif [[ "$nodes" -gt 1 ]]; then heap=1536m; else heap=1g; fi
  fi
  echo java "-Xms$heap" "-Xmx$heap" -XX:+UseSerialGC \
    -Dopensearch.set.netty.runtime.available.processors=false \
    -Dlog4j2.disable.jmx=true "$@" \
    -cp "$cache/engine.jar:$(cat "$cache/classpath.txt")" elastichash.engine.EngineMain
}

# Class-data sharing: classes parsed once and mapped at start, about twice as fast a start.
# Made by a node that starts and exits (the archive is written at exit).
ensure_archive() {
  local cache="$1"
  [[ -f "$cache/app.jsa" ]] && return 0
  say "recording the class-data archive (once)"
  local home
  home="$(mktemp -d)"
  # shellcheck disable=SC2046
  if $(java_cmd "$cache" "-XX:ArchiveClassesAtExit=$cache/app.jsa.tmp") --home "$home" \
      --http-port "$http_port" --transport-port "$transport_port" --exit-when-started true \
      >"$home/out.log" 2>&1 9>&- && [[ -f "$cache/app.jsa.tmp" ]]; then
    mv "$cache/app.jsa.tmp" "$cache/app.jsa"
  else
    say "no class-data archive (start will be slower): $(tail -3 "$home/out.log")"
  fi
  rm -rf "$home"
}

# One JVM: every node (node ""), or node I alone (--jvm-per-node); pid in $state/pid[.I].
launch() {  # cache dir, node index or ""
  local cache="$1" i="$2" cds=() only=() suffix=""
  [[ -f "$cache/app.jsa" ]] && cds=("-XX:SharedArchiveFile=$cache/app.jsa" -Xshare:auto)
  [[ -n "$i" ]] && { only=(--only-node "$i"); suffix=".$i"; }
  [[ -n "${EH_ENGINE_SETTINGS:-}" ]] && only+=(--settings "$EH_ENGINE_SETTINGS")
  # shellcheck disable=SC2046
  setsid $(java_cmd "$cache" "${cds[@]}") --home "$state/home" --nodes "$nodes" \
    --http-port "$http_port" --transport-port "$transport_port" "${only[@]}" \
    >>"$state/engine$suffix.log" 2>&1 </dev/null 9>&- &  # the JVM must not hold the start lock
  echo $! >"$state/pid$suffix"
}

pids() { cat "$state"/pid "$state"/pid.* 2>/dev/null || true; }

any_alive() {
  local pid
  for pid in $(pids); do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

wait_green() {  # until the cluster is green or every JVM is gone; 1 on timeout or exit
  local deadline=$((SECONDS + timeout_s))
  until healthy; do
    if ! any_alive; then
      say "the engine exited; its log:"
      tail -40 "$state"/engine*.log >&2
      return 1
    fi
    if [[ $SECONDS -ge $deadline ]]; then
      say "not green within ${timeout_s}s; its log: $state/engine*.log"
      tail -20 "$state"/engine*.log >&2
      return 1
    fi
    sleep 0.25
  done
}

start() {
  # One start at a time per port (two test commands at once share the node).
  exec 9>"$state.lock"
  flock 9
  if [[ -n "$(pids)" ]] && any_alive; then
    say "already running (pids $(pids | tr '\n' ' '))"
    wait_green || exit 1
    echo "$url"
    return 0
  fi
  if port_open "$http_port"; then
    say "port $http_port is taken by something this script did not start"
    exit 1
  fi
  ensure_tools
  local cache started
  cache="$(build)"
  ensure_archive "$cache"
  rm -rf "$state"
  mkdir -p "$state"
  started=$(date +%s%N)
  echo "$nodes" >"$state/nodes"
  echo "${EH_ENGINE_SETTINGS:-}" >"$state/settings"
  if $per_node; then
    local i
    for ((i = 0; i < nodes; i++)); do launch "$cache" "$i"; done
    echo "$cache" >"$state/cache"
  else
    launch "$cache" ""
  fi
  if ! wait_green; then
    stop
    exit 1
  fi
  say "$nodes node(s) green in $(( ($(date +%s%N) - started) / 1000000 ))ms" \
    "(OpenSearch $(curl -sf "$url" | sed -n 's/.*"number" : "\([^"]*\)".*/\1/p'))"
  echo "$url" >"$state/url"
  echo "$url"
}

stop() {
  if [[ -z "$(pids)" ]]; then
    say "not running on port $http_port"
    rm -rf "$state"
    return 0
  fi
  local pid
  for pid in $(pids); do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 120); do
    any_alive || break
    sleep 0.25
  done
  for pid in $(pids); do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$state"
  say "stopped"
}

# Sets pidfile, nodes and per_node for kill-node / start-node.
node_state() {
  [[ -n "$node_arg" ]] || { echo "engine.sh: $cmd needs a node index" >&2; exit 2; }
  [[ -f "$state/cache" ]] || { say "no --jvm-per-node engine on port $http_port"; exit 1; }
  nodes="$(cat "$state/nodes")"
  EH_ENGINE_SETTINGS="$(cat "$state/settings")"  # a restarted node keeps its settings
  per_node=true
  pidfile="$state/pid.$node_arg"
}

kill_node() {
  local pidfile pid
  node_state
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    say "node $node_arg (pid $pid) killed"
  else
    say "node $node_arg is not running"
  fi
}

start_node() {
  local pidfile pid deadline
  node_state
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    say "node $node_arg is running (pid $pid)"
    return 0
  fi
  launch "$(cat "$state/cache")" "$node_arg"
  pid="$(cat "$pidfile")"
  deadline=$((SECONDS + timeout_s))
  until curl -sf -m 2 "http://127.0.0.1:$((http_port + node_arg))/" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { say "node $node_arg exited"; tail -20 "$state/engine.$node_arg.log" >&2; exit 1; }
    [[ $SECONDS -lt $deadline ]] || { say "node $node_arg not up in ${timeout_s}s"; exit 1; }
    sleep 0.25
  done
  say "node $node_arg up (pid $pid)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  kill-node) kill_node ;;
  start-node) start_node ;;
  build) ensure_tools; build ;;
  status)
    if healthy; then echo "$url"; else say "not running on port $http_port"; exit 1; fi ;;
  *) echo "usage: scripts/engine.sh start|stop|status|build|kill-node I|start-node I" \
       "[--nodes N] [--jvm-per-node] [--http-port P]" >&2; exit 2 ;;
esac
