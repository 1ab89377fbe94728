#!/usr/bin/env bash
# Starts the local services scaleout's demo and tests use, when they are not
# already running: PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672).
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "services: $name did not open 127.0.0.1:$port within 60 s" >&2
  return 1
}

if ! port_open 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  wait_port 5432 PostgreSQL
fi

if ! port_open 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ
  rabbitmqctl await_startup >/dev/null
fi
echo "services: PostgreSQL and RabbitMQ are up"
