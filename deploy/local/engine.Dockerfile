# The search engine for the local stack on machines that cannot pull Elasticsearch's image:
# the OpenSearch launcher of scripts/engine.sh (artifacts from Maven Central) on Debian's JRE.
# Build context: the folder scripts/containers.sh stages (lib/ holds the launcher and every
# jar of its classpath). Users with a registry keep the official image (OPENSEARCH_IMAGE).
ARG BASE_IMAGE=localhost/elastichash-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10002 engine \
 && useradd --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin engine \
 && mkdir -p /usr/share/opensearch/data \
 && chown 10002:10002 /usr/share/opensearch/data
COPY lib /opt/engine/lib
COPY engine-entrypoint.sh /usr/local/bin/engine-entrypoint
USER 10002:10002
WORKDIR /usr/share/opensearch
VOLUME /usr/share/opensearch/data
EXPOSE 9200
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=18 \
  CMD ["curl", "-fsS", "http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=5s"]
ENTRYPOINT ["/usr/local/bin/engine-entrypoint"]
