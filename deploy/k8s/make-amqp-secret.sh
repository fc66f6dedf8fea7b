#!/usr/bin/env bash
# Create (or update) the Secret elastichash-amqp that the services and KEDA read, from the
# Secret the RabbitMQ Cluster Operator writes for the RabbitmqCluster elastichash-rabbitmq:
#   url             amqp://USER:PASS@elastichash-rabbitmq.NS.svc:5672/   (services)
#   management-url  http://USER:PASS@elastichash-rabbitmq.NS.svc:15672/  (KEDA, protocol: http)
# The host is fully qualified because KEDA's operator runs in its own namespace.
#
#   deploy/k8s/make-amqp-secret.sh [NAMESPACE] [RABBITMQCLUSTER_NAME]
set -euo pipefail

NS="${1:-elastichash}"
CLUSTER="${2:-elastichash-rabbitmq}"
SOURCE="${CLUSTER}-default-user"

# The operator creates the Secret shortly after the RabbitmqCluster; wait up to 5 minutes.
deadline=$((SECONDS + 300))
until kubectl -n "$NS" get secret "$SOURCE" >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "Secret $NS/$SOURCE did not appear: is the RabbitmqCluster $CLUSTER applied?" >&2
    exit 1
  fi
  sleep 5
done

field() { kubectl -n "$NS" get secret "$SOURCE" -o "jsonpath={.data.$1}" | base64 -d; }
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

user="$(urlencode "$(field username)")"
pass="$(urlencode "$(field password)")"
host="${CLUSTER}.${NS}.svc"

kubectl -n "$NS" create secret generic elastichash-amqp \
  --from-literal=url="amqp://${user}:${pass}@${host}:5672/" \
  --from-literal=management-url="http://${user}:${pass}@${host}:15672/" \
  --dry-run=client -o yaml | kubectl -n "$NS" apply -f -
echo "Secret $NS/elastichash-amqp is up to date."
