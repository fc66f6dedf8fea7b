# RabbitMQ from Debian's rabbitmq-server package, for the local stack on machines that cannot
# pull the official rabbitmq image (scripts/containers.sh images). Users with a registry keep
# the official image: docker-compose.yml takes this one only through RABBITMQ_IMAGE.
ARG BASE_IMAGE=localhost/elastichash-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management >/dev/null \
 && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
COPY deploy/local/rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint
ENV HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-
USER rabbitmq
WORKDIR /var/lib/rabbitmq
VOLUME /var/lib/rabbitmq
EXPOSE 5672 15672
HEALTHCHECK --interval=10s --timeout=10s --start-period=20s --retries=12 \
  CMD ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]
ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint"]
