#!/usr/bin/env bash
# make test-containers: build the images, run the container tests, and always take down what
# they started, from nothing (installs podman, runc and mmdebstrap from Debian when missing).
#
# Every step is bounded: the image builds by EH_IMAGES_TIMEOUT_S (1800), the tests by
# EH_CONTAINER_TESTS_TIMEOUT_S (2400). On any exit (success, failure, timeout, Ctrl-C) the
# test stacks are removed: the compose project `ehtest` and the kube-play pods. Their host
# ports (33080, 33092, 33672, 33180) are apart from the suite's RabbitMQ (5672) and engine
# (9200) and from a user's stack (8080).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-.venv}
IMAGES_TIMEOUT_S=${EH_IMAGES_TIMEOUT_S:-1800}
TESTS_TIMEOUT_S=${EH_CONTAINER_TESTS_TIMEOUT_S:-2400}
export EH_STACK_PROJECT=ehtest
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/local/containers.conf}

log() { echo "test-containers: $*" >&2; }
T0=$SECONDS
STAGE=start

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $(scripts/containers.sh engine 2>/dev/null) == podman ]] && ! command -v podman >/dev/null; then
    exit "$rc"  # podman never got installed: nothing can have been started
  fi
  timeout -k 10 300 scripts/containers.sh down >/dev/null 2>&1 \
    || log "warning: could not remove the compose project $EH_STACK_PROJECT"
  if command -v podman >/dev/null; then
    timeout -k 10 300 "$VENV/bin/python" deploy/local/kube_play.py down >/dev/null 2>&1 \
      || log "warning: could not remove the kube-play pods"
  fi
  if ((rc == 0)); then
    log "passed in $((SECONDS - T0)) s"
  elif ((rc == 124 || rc == 137)); then
    log "FAILED: the $STAGE step ran out of time (rc $rc) after $((SECONDS - T0)) s"
  else
    log "FAILED in the $STAGE step (rc $rc) after $((SECONDS - T0)) s"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -x $VENV/bin/python ]] || { log "no $VENV: run scripts/setup.sh cpu,dev (make does)"; exit 1; }

STAGE=images
t=$SECONDS
# Only what the tests run: the gpu image is `make images`' business.
EH_SKIP_GPU=1 timeout -k 30 "$IMAGES_TIMEOUT_S" scripts/containers.sh images
log "images ready in $((SECONDS - t)) s"

STAGE=tests
t=$SECONDS
EH_TEST_CONTAINERS=1 timeout -k 60 "$TESTS_TIMEOUT_S" "$VENV/bin/python" -m pytest -q -s \
  -p no:cacheprovider tests/integration/test_containers.py \
  tests/integration/test_containers_kube.py
log "tests done in $((SECONDS - t)) s"
