#!/bin/sh
# One engine node on all interfaces, data in the volume. OPENSEARCH_JAVA_OPTS (or ES_JAVA_OPTS)
# as in the official images (the heap); discovery.type and the security switches compose sets
# need nothing here (one node, no security plugin).
set -eu
# shellcheck disable=SC2086
exec java ${OPENSEARCH_JAVA_OPTS:-${ES_JAVA_OPTS:--Xms512m -Xmx512m}} -XX:+UseSerialGC \
  -Dopensearch.set.netty.runtime.available.processors=false -Dlog4j2.disable.jmx=true \
  -cp '/opt/engine/lib/*' elastichash.engine.EngineMain \
  --home /usr/share/opensearch/data --host 0.0.0.0 --http-port 9200 --transport-port 9300 \
  "$@"
