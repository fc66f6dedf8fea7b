#!/bin/sh
# Writes the broker's configuration from the same variables as the official image
# (RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS), then runs the broker in the foreground.
set -eu
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
# Reached from other containers: the default user may log in from anywhere.
loopback_users = none
listeners.tcp.default = 5672
management.tcp.port = 15672
CONF
exec rabbitmq-server "$@"
