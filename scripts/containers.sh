#!/usr/bin/env bash
# Build the images and run the distributed stack in containers, on Docker or on podman.
#
#   scripts/containers.sh images   the project's image (cpu; gpu tried) + local RabbitMQ and engine
#   scripts/containers.sh up       start docker-compose.yml, wait until healthy, print the URL last
#   scripts/containers.sh down     stop the stack and remove what it made (containers, volumes)
#   scripts/containers.sh engine   print the container engine that would be used
#
# Docker is used when an engine answers (`docker info`); otherwise podman, installed from
# Debian when missing, with deploy/local/containers.conf (the sandbox settings) and images
# built FROM a local Debian bookworm base made by mmdebstrap: no registry is needed at all.
# CONTAINER_ENGINE=docker|podman forces one. EH_HTTP_PORT sets the gateway's host port.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PROJECT=${EH_STACK_PROJECT:-elastichash}
BASE_IMAGE=${EH_BASE_IMAGE:-localhost/elastichash-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the local base holds: python3 is 3.11 on bookworm, as in python:3.11-slim.
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,tini
BASE_RECIPE=3  # bump when the recipe below changes: a base with another recipe is rebuilt
HEALTH_TIMEOUT_S=${EH_STACK_TIMEOUT_S:-600}
BUILD_TIMEOUT_S=${EH_BUILD_TIMEOUT_S:-1200}  # one image build; mmdebstrap and apt get 900 s

log() { echo "containers: $*" >&2; }
die() { echo "containers: error: $*" >&2; exit 1; }

# shellcheck source=scripts/apt.sh
source scripts/apt.sh

engine() {
  if [[ -n ${CONTAINER_ENGINE:-} ]]; then
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null && timeout --foreground 10 docker info >/dev/null 2>&1; then
    echo docker
  else
    echo podman
  fi
}

# podman on a machine like CI's: installed from Debian when missing, sandbox settings.
setup_podman() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  # Name resolution between containers on a bridge network, and the rootless helpers.
  [[ -x /usr/lib/podman/aardvark-dns || -x /usr/libexec/podman/aardvark-dns ]] \
    || missing+=(aardvark-dns)
  if ((${#missing[@]})); then
    # With podman's recommended packages (catatonit for the pods' pause image, fuse-overlayfs,
    # slirp4netns, uidmap, buildah), as on the machines this was checked on; iptables and
    # catatonit named too: netavark's bridge networks and `podman kube play` need them.
    log "installing ${missing[*]} from Debian"
    timeout --foreground -k 10 900 bash -c 'source scripts/apt.sh && apt_install "$@"' apt \
      "${missing[@]}" netavark catatonit iptables \
      || die "could not install ${missing[*]} from Debian (apt-get failed or took over 900 s)"
  fi
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/local/containers.conf}
}

# The local base image: Debian bookworm minbase with Python 3.11, made by mmdebstrap (one apt
# run with parallel downloads: 38 s against 68 s for debootstrap, measured here) and
# imported, so that builds need no registry. Kept in podman's store; rebuilt only when
# absent or made by another recipe.
ensure_base() {
  local have
  have=$(podman image inspect --format '{{index .Labels "elastichash.base-recipe"}}' \
    "$BASE_IMAGE" 2>/dev/null || true)
  if [[ $have == "$BASE_RECIPE" ]]; then
    return 0
  fi
  log "building the local base image $BASE_IMAGE with mmdebstrap (a minute or two, once)"
  local dir t0=$SECONDS security=${DEBIAN_MIRROR%/debian}/debian-security
  dir=$(mktemp -d /var/tmp/eh-base.XXXXXX)
  # Hooks: trust what this host trusts (an HTTPS proxy's CA, say), and make pip use the
  # system bundle: the pip that venv bundles on bookworm would otherwise use only its own.
  # shellcheck disable=SC2016  # $1 is the hook's: the new root
  if ! timeout --foreground -k 10 900 $SUDO mmdebstrap --variant=minbase \
    --include="$BASE_PACKAGES" \
    --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do
        if [ -e "$c" ]; then cp "$c" "$1/usr/local/share/ca-certificates/"; fi; done
      chroot "$1" update-ca-certificates >/dev/null 2>&1' \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >"$1/etc/pip.conf"' \
    bookworm "$dir/base.tar" "deb $DEBIAN_MIRROR bookworm main" \
    "deb $DEBIAN_MIRROR bookworm-updates main" "deb $security bookworm-security main" \
    >"$dir/log" 2>&1; then
    tail -20 "$dir/log" >&2
    rm -rf "$dir"
    die "mmdebstrap failed (or took over 900 s): the base image was not made"
  fi
  timeout --foreground -k 10 600 podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL elastichash.base-recipe=$BASE_RECIPE" \
    "$dir/base.tar" "$BASE_IMAGE" >/dev/null \
    || { rm -rf "$dir"; die "podman import of the base image failed"; }
  rm -rf "$dir"
  log "base image $BASE_IMAGE ready in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------------------ images
EH_IMAGE=${EH_IMAGE:-elastichash}
EH_IMAGE_TAG=${EH_IMAGE_TAG:-latest}
LOCAL_RABBITMQ_IMAGE=localhost/elastichash-rabbitmq:local
LOCAL_ENGINE_IMAGE=localhost/elastichash-engine:local
CUDA_IMAGE=${CUDA_IMAGE:-nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04}

build() {  # build NAME ENGINE ARGS...: one image, quietly; its log is shown when it fails
  local name=$1 eng=$2 logf
  shift 2
  logf=$(mktemp "/tmp/eh-build-${name//[^a-z0-9]/_}.XXXXXX")
  if [[ $eng == podman ]]; then
    # docker format keeps HEALTHCHECK; host network: the sandbox has no bridge to the mirrors.
    set -- --format docker --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@"
  fi
  [[ -d ${!#} ]] || set -- "$@" .  # the context: the repository unless given last
  local t0=$SECONDS rc=0
  # Each line of the log with the seconds since the build began: where the time goes.
  timeout --foreground -k 30 "$BUILD_TIMEOUT_S" "$eng" build "$@" 2>&1 </dev/null \
    | while IFS= read -r line; do
      printf '%4ds %s\n' $((SECONDS - t0)) "$line"
    done >"$logf" || rc=$?
  if [[ -n ${EH_BUILD_LOG_DIR:-} ]]; then
    mkdir -p "$EH_BUILD_LOG_DIR"
    cp "$logf" "$EH_BUILD_LOG_DIR/$(basename "$logf").log"
  fi
  if ((rc == 0)); then
    rm -f "$logf"
    log "$name built in $((SECONDS - t0)) s"
    return 0
  fi
  echo "--- the end of $name's build log" >&2
  tail -30 "$logf" >&2
  rm -f "$logf"
  ((rc == 124 || rc == 137)) && log "the build ran over ${BUILD_TIMEOUT_S} s"
  return 1
}

# The engine's build context: the launcher scripts/engine.sh builds (resolved from Maven
# Central, cached in ~/.m2 and ~/.cache) with every jar of its classpath, and the entrypoint.
engine_context() {
  local cache ctx jar
  [[ -x scripts/engine.sh ]] || die "no scripts/engine.sh: the engine image is assembled by it"
  cache=$(timeout --foreground -k 10 1200 scripts/engine.sh build | tail -1)
  [[ -f $cache/classpath.txt ]] || die "scripts/engine.sh build gave no classpath ($cache)"
  ctx=$(mktemp -d /var/tmp/eh-engine.XXXXXX)
  mkdir "$ctx/lib"
  cp "$cache/engine.jar" "$ctx/lib/"
  local jars=()
  IFS=: read -ra jars <"$cache/classpath.txt"
  for jar in "${jars[@]}"; do
    cp "$jar" "$ctx/lib/"
  done
  cp deploy/local/engine-entrypoint.sh "$ctx/"
  echo "$ctx"
}

images() {
  local eng t0 pids=()
  eng=$(engine)
  t0=$SECONDS
  if [[ $eng == podman ]]; then
    setup_podman
    ensure_base
  fi
  if [[ $eng == podman || -n ${EH_LOCAL_IMAGES:-} ]]; then
    # The local RabbitMQ and engine build beside the project's image: they wait mostly on
    # the network and dpkg while it installs wheels and builds the models.
    log "building $LOCAL_RABBITMQ_IMAGE (Debian's rabbitmq-server) in the background"
    build rabbitmq "$eng" -f deploy/local/rabbitmq.Dockerfile -t "$LOCAL_RABBITMQ_IMAGE" &
    pids+=("$!")
    log "building $LOCAL_ENGINE_IMAGE (search engine, as scripts/engine.sh assembles it)" \
      "in the background"
    (
      ctx=$(engine_context)
      trap 'rm -rf "$ctx"' EXIT
      build engine "$eng" -f deploy/local/engine.Dockerfile -t "$LOCAL_ENGINE_IMAGE" "$ctx"
    ) &
    pids+=("$!")
  fi
  local failed=()
  log "building $EH_IMAGE:$EH_IMAGE_TAG (cpu) with $eng"
  build cpu "$eng" -f deploy/Dockerfile --target cpu -t "$EH_IMAGE:$EH_IMAGE_TAG" \
    || failed+=("the cpu image $EH_IMAGE:$EH_IMAGE_TAG")
  if [[ -n ${EH_SKIP_GPU:-} ]]; then
    :  # make test-containers: the tests need the cpu image only
  elif [[ $eng == podman ]] && ! podman image exists "$CUDA_IMAGE" \
    && ! timeout --foreground 60 podman pull -q "docker.io/$CUDA_IMAGE" >/dev/null 2>&1; then
    # The GPU image needs NVIDIA's CUDA base from a registry: tried, and reported when absent.
    log "gpu image NOT built: its base $CUDA_IMAGE cannot be pulled here (no registry)." \
      "On a machine with registry access: docker build -f deploy/Dockerfile --target gpu ."
  else
    log "building $EH_IMAGE-gpu:$EH_IMAGE_TAG (gpu)"
    build gpu "$eng" -f deploy/Dockerfile --target gpu --build-arg RUNTIME=gpu \
      -t "$EH_IMAGE-gpu:$EH_IMAGE_TAG" \
      || log "gpu image NOT built (see the build log above); the cpu image is unaffected"
  fi
  local pid
  for pid in "${pids[@]+"${pids[@]}"}"; do
    wait "$pid" || failed+=("a local image (RabbitMQ or engine; its log is above)")
  done
  ((${#failed[@]} == 0)) || die "not built: $(printf '%s; ' "${failed[@]}")"
  log "images ready in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------------------ stack
COMPOSE_FILES=(-f docker-compose.yml)
VENV=${VENV:-.venv}

compose() {  # bounded: COMPOSE_TIMEOUT_S (300) for one compose command
  local eng bound=(timeout --foreground -k 10 "${COMPOSE_TIMEOUT_S:-300}")
  eng=$(engine)
  if [[ $eng == docker ]]; then
    "${bound[@]}" docker compose -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"
  else
    "${bound[@]}" "$VENV/bin/podman-compose" -p "$PROJECT" "${COMPOSE_FILES[@]}" \
      -f deploy/local/compose.podman.yml --profile "${INDEX_ENGINE:-elasticsearch}" "$@"
  fi
}

ensure_podman_compose() {
  [[ -x $VENV/bin/podman-compose ]] && return 0
  [[ -x $VENV/bin/python ]] || die "no $VENV: run scripts/setup.sh first (make does)"
  log "installing podman-compose into $VENV"
  timeout --foreground -k 10 600 "$VENV/bin/python" -m pip install -q "podman-compose>=1.2" \
    || die "could not install podman-compose into $VENV"
}

local_images_env() {  # the stack on podman runs the images built from Debian's packages
  export RABBITMQ_IMAGE=${RABBITMQ_IMAGE:-$LOCAL_RABBITMQ_IMAGE}
  # The local engine is OpenSearch: compose's opensearch service, and only that engine.
  export OPENSEARCH_IMAGE=${OPENSEARCH_IMAGE:-$LOCAL_ENGINE_IMAGE}
  export INDEX_ENGINE=${INDEX_ENGINE:-opensearch} OPENSEARCH_HEAP=${OPENSEARCH_HEAP:-512m}
  export ES_IMAGE=${ES_IMAGE:-$LOCAL_ENGINE_IMAGE}  # not started, but compose resolves it
}

containers_of_project() {
  podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'
}

# podman here runs health checks from systemd timers, and this machine has no systemd: run
# each container's check ourselves until it passes. (Docker: compose --wait does it.)
wait_healthy() {  # wait_healthy DEADLINE NAME...
  local deadline=$1 name state pending
  shift
  pending=("$@")
  while ((${#pending[@]})); do
    local left=()
    for name in "${pending[@]}"; do
      state=$(podman inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
      if [[ $state == exited || $state == gone ]] \
        && [[ $(podman inspect --format '{{.HostConfig.RestartPolicy.Name}}' "$name" 2>/dev/null) != unless-stopped ]]; then
        podman logs --tail 30 "$name" >&2 || true
        die "$name is $state"
      fi
      if [[ $state == running ]] \
        && timeout --foreground -k 5 60 podman healthcheck run "$name" >/dev/null 2>&1; then
        log "$name healthy after $((SECONDS - T_UP)) s"
      else
        left+=("$name")
      fi
    done
    pending=("${left[@]+"${left[@]}"}")
    if ((${#pending[@]})); then
      if ((SECONDS > deadline)); then
        for name in "${pending[@]}"; do
          echo "--- $name (not healthy)" >&2
          podman logs --tail 30 "$name" >&2 || true
        done
        die "not healthy within ${HEALTH_TIMEOUT_S}s: ${pending[*]}"
      fi
      sleep 2
    fi
  done
}

# Services in the order their depends_on allows, one line per level:
# each level waits until everything it depends on is healthy, as compose's service_healthy.
start_levels() {
  "$VENV/bin/python" - "$@" <<'PY'
import sys
import yaml
services = {}
import os
engine = os.environ.get("INDEX_ENGINE", "elasticsearch")
for path in sys.argv[1:]:
    for name, svc in (yaml.safe_load(open(path)).get("services") or {}).items():
        services.setdefault(name, {}).update(svc or {})
# The services compose would start, less the engine the indexer and search do not use.
active = {n: s for n, s in services.items()
          if set(s.get("profiles") or [engine]) & {engine}
          and not (n in ("elasticsearch", "opensearch") and n != engine)}
level = {}
def depth(name):
    if name not in level:
        deps = [d for d in (active[name].get("depends_on") or {}) if d in active]
        level[name] = 1 + max((depth(d) for d in deps), default=-1)
    return level[name]
for name in active:
    depth(name)
for lv in range(max(level.values()) + 1):
    print(" ".join(sorted(n for n, v in level.items() if v == lv)))
PY
}

stack_up() {
  local eng url
  eng=$(engine)
  T_UP=$SECONDS
  T_LOG=$(mktemp /tmp/eh-compose.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -f '$T_LOG'" EXIT
  url="http://127.0.0.1:${EH_HTTP_PORT:-8080}"
  if [[ $eng == docker ]]; then
    [[ -n ${EH_LOCAL_IMAGES:-} ]] && local_images_env
    COMPOSE_TIMEOUT_S=$((HEALTH_TIMEOUT_S + 120)) compose up -d --no-build --wait \
      --wait-timeout "$HEALTH_TIMEOUT_S"
  else
    setup_podman
    ensure_podman_compose
    local_images_env
    for img in "$EH_IMAGE:$EH_IMAGE_TAG" "$RABBITMQ_IMAGE" "$ES_IMAGE"; do
      podman image exists "$img" || die "image $img is missing: run make images first"
    done
    local deadline=$((SECONDS + HEALTH_TIMEOUT_S)) services names levels=()
    mapfile -t levels < <(start_levels docker-compose.yml)
    ((${#levels[@]})) || die "no services found in docker-compose.yml"
    for services in "${levels[@]}"; do
      # shellcheck disable=SC2086
      compose up -d --no-build --no-deps $services </dev/null \
        >"$T_LOG" 2>&1 || { tail -30 "$T_LOG" >&2; die "could not start $services (log above)"; }
      names=()
      for svc in $services; do
        mapfile -t -O "${#names[@]}" names < <(podman ps -a \
          --filter "label=com.docker.compose.project=$PROJECT" \
          --filter "label=com.docker.compose.service=$svc" --format '{{.Names}}')
      done
      wait_healthy "$deadline" "${names[@]}"
    done
  fi
  log "stack healthy in $((SECONDS - T_UP)) s"
  echo "$url"
}

stack_down() {
  local eng
  eng=$(engine)
  if [[ $eng == docker ]]; then
    compose down -v --remove-orphans
    return
  fi
  setup_podman
  if [[ -x $VENV/bin/podman-compose ]]; then
    local_images_env
    compose down -v >/dev/null 2>&1 || true
  fi
  # Whatever compose left (an interrupted start): containers, then volumes and network.
  local name
  for name in $(containers_of_project); do
    timeout --foreground -k 5 60 podman rm -f -t 5 "$name" >/dev/null 2>&1 || true
  done
  for name in $(podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT"); do
    timeout --foreground -k 5 60 podman volume rm -f "$name" >/dev/null 2>&1 || true
  done
  timeout --foreground -k 5 60 podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  log "stack $PROJECT removed"
}

case ${1:-} in
  engine) engine ;;
  base)
    setup_podman
    ensure_base
    ;;
  images) images ;;
  up) stack_up ;;
  down) stack_down ;;
  *)
    die "usage: $0 images|up|down|engine|base"
    ;;
esac
