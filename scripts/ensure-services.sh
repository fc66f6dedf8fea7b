#!/usr/bin/env bash
# Make sure what the tests talk to is there: a RabbitMQ answering on 127.0.0.1:5672, a search
# engine for the backend tests, and Debian's Chromium for the browser tests. Installs and
# starts them when missing.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"

if ! port_open 5672; then
  if ! command -v rabbitmq-server >/dev/null; then
    echo "installing rabbitmq-server" >&2
    apt_install rabbitmq-server
  fi
  echo "starting rabbitmq-server" >&2
  $SUDO rabbitmq-server -detached || true
  for _ in $(seq 1 120); do
    port_open 5672 && break
    sleep 1
  done
  port_open 5672 || { echo "error: RabbitMQ did not come up on 5672" >&2; exit 1; }
  # The port opens before the node accepts logins; wait for the app to be running.
  ${SUDO} rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing chromium" >&2
  apt_install chromium
fi

# The search engine: ES_URL or OPENSEARCH_URL when set (the tests read them); otherwise an
# OpenSearch node on 127.0.0.1:9200 (scripts/engine.sh, left running like RabbitMQ; stop it
# with `scripts/engine.sh stop`), whose URL goes to .services/engine.url for tests/engines.py.
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/.services"
if [[ -n ${ES_URL:-} || -n ${OPENSEARCH_URL:-} ]]; then
  rm -f "$root/.services/engine.url"
else
  url=$("$root/scripts/engine.sh" start --http-port 9200 | tail -1)
  echo "opensearch $url" >"$root/.services/engine.url"
fi
