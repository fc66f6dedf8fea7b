#!/usr/bin/env bash
# A real search engine for the tests: OpenSearch 2.19 nodes assembled from Maven Central and
# run in one JVM (scripts/engine/: a pom.xml and a short main).
#
#   scripts/engine.sh start [--nodes N] [--http-port P] [--transport-port P]
#   scripts/engine.sh stop  [--http-port P]
#   scripts/engine.sh status [--http-port P]
#   scripts/engine.sh build      (prints the folder holding engine.jar and classpath.txt)
#
# start: builds the launcher once (artifacts cached in ~/.m2, the jar, its classpath and a
# class-data-sharing archive cached under ~/.cache/elastichash/engine/<hash of the sources>),
# starts N nodes on 127.0.0.1 (HTTP P..P+N-1, transport P'..P'+N-1) with their data under a
# temporary folder, waits until the cluster is green, and prints its base URL as the last line.
# A node already answering on the port (started by an earlier `start`) is reused.
# stop: stops the JVM started for that port and removes its data.
#
# Environment: EH_ENGINE_HEAP (default 1g; 1536m for 3 nodes), EH_ENGINE_TIMEOUT_S (180).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$HERE/engine"
cmd="${1:-}"
[[ -n "$cmd" ]] && shift
nodes=1
http_port=9200
transport_port=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
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
    # shellcheck source=scripts/apt.sh
    source "$HERE/apt.sh"
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
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
  [[ -n "$heap" ]] || { [[ "$nodes" -gt 1 ]] && heap=1536m || heap=1g; }
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

wait_green() {  # until the cluster is green or the JVM is gone; 1 on timeout or exit
  local deadline=$((SECONDS + timeout_s))
  until healthy; do
    if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      say "the engine exited; its log:"
      tail -40 "$state/engine.log" >&2
      return 1
    fi
    if [[ $SECONDS -ge $deadline ]]; then
      say "not green within ${timeout_s}s; its log: $state/engine.log"
      tail -20 "$state/engine.log" >&2
      return 1
    fi
    sleep 0.25
  done
}

start() {
  # One start at a time per port (two test commands at once share the node).
  exec 9>"$state.lock"
  flock 9
  if [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
    say "already running (pid $(cat "$state/pid"))"
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
  local cds=()
  [[ -f "$cache/app.jsa" ]] && cds=("-XX:SharedArchiveFile=$cache/app.jsa" -Xshare:auto)
  started=$(date +%s%N)
  # shellcheck disable=SC2046
  setsid $(java_cmd "$cache" "${cds[@]}") --home "$state/home" --nodes "$nodes" \
    --http-port "$http_port" --transport-port "$transport_port" \
    >"$state/engine.log" 2>&1 </dev/null 9>&- &  # the JVM must not hold the start lock
  echo $! >"$state/pid"
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
  if [[ ! -f "$state/pid" ]]; then
    say "not running on port $http_port"
    return 0
  fi
  local pid
  pid="$(cat "$state/pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -rf "$state"
  say "stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  build) ensure_tools; build ;;
  status)
    if healthy; then echo "$url"; else say "not running on port $http_port"; exit 1; fi ;;
  *) echo "usage: scripts/engine.sh start|stop|status|build [--nodes N] [--http-port P]" >&2
     exit 2 ;;
esac
