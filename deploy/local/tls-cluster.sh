#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, TLS as the single TLS node has
# (deploy/local/tls-node.sh runs each node; this script gives them one PKI and joins them):
#
#   node   name                    AMQPS            management       Prometheus      dist
#   1      scaleout-c1@localhost   127.0.0.1:5691   127.0.0.1:15691  127.0.0.1:15791 25691
#   2      scaleout-c2@localhost   127.0.0.1:5692   127.0.0.1:15692* 127.0.0.1:15792 25692
#   3      scaleout-c3@localhost   127.0.0.1:5693   127.0.0.1:15693  127.0.0.1:15793 25693
#   state  ${SCALEOUT_CLUSTER_HOME:-/var/tmp/scaleout-cluster}/n<i> (n1/certs is the shared PKI)
#   (* 15692 is also the single TLS node's metrics port: node 2's management port is 15694)
#
#   bash deploy/local/tls-cluster.sh start|stop|status
#   bash deploy/local/tls-cluster.sh kill|restart|pause|resume N     one node, for fault tests
#
# `start` is idempotent: nodes that are up stay up, a node not yet in the cluster joins it
# (stop_app, reset, join_cluster, start_app: only the first time). Users and certificates
# are the single node's (scaleout-master, w1..w6, EXTERNAL login; admin scaleout-admin).
# Must run as root, as tls-node.sh.
set -euo pipefail

base="${SCALEOUT_CLUSTER_HOME:-/var/tmp/scaleout-cluster}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NODES=(1 2 3)

say() { echo "tls-cluster: $*"; }
die() {
  echo "tls-cluster: $*" >&2
  exit 1
}

node_name() { echo "scaleout-c$1@localhost"; }
http_port() { if [[ $1 == 2 ]]; then echo 15694; else echo $((15690 + $1)); fi; }

# Runs tls-node.sh (or rabbitmqctl) with node $1's names, ports and state folder.
with_node() {
  local i=$1
  shift
  SCALEOUT_TLS_NODE="$(node_name "$i")" SCALEOUT_TLS_AMQPS_PORT=$((5690 + i)) \
    SCALEOUT_TLS_HTTP_PORT="$(http_port "$i")" SCALEOUT_TLS_METRICS_PORT=$((15790 + i)) \
    SCALEOUT_TLS_DIST_PORT=$((25690 + i)) SCALEOUT_TLS_HOME="$base/n$i" \
    RABBITMQ_CONF_ENV_FILE="$base/n$i/rabbitmq-env.conf" "$@"
}
ctl() {
  local i=$1
  shift
  with_node "$i" rabbitmqctl -q -n "$(node_name "$i")" "$@"
}

share_pki() {
  # Node 1 makes the PKI and the admin's password; the others take copies, so one CA
  # and one admin serve the whole cluster.
  mkdir -p "$base/n1"
  local i
  for i in 2 3; do
    mkdir -p "$base/n$i/certs"
    [[ -s "$base/n1/certs/ca.pem" ]] || return 0
    cp -p "$base/n1/certs/"* "$base/n$i/certs/"
    cp -p "$base/n1/admin.password" "$base/n1/definitions.json" "$base/n$i/"
  done
}

joined() {
  ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "$(node_name "$1")"
}

start() {
  [[ $(id -u) -eq 0 ]] || die "run as root (as deploy/local/tls-node.sh)"
  with_node 1 bash "$repo/deploy/local/tls-node.sh" start | sed 's/^/  /'
  share_pki
  local i
  for i in 2 3; do
    with_node "$i" bash "$repo/deploy/local/tls-node.sh" start | sed 's/^/  /'
    if ! joined "$i"; then
      say "joining $(node_name "$i") to $(node_name 1) (log: $base/n$i/log/join.out)"
      {
        ctl "$i" stop_app && ctl "$i" reset && ctl "$i" join_cluster "$(node_name 1)" &&
          ctl "$i" start_app && ctl "$i" await_startup --timeout 60
      } >"$base/n$i/log/join.out" 2>&1 || {
        tail -n 20 "$base/n$i/log/join.out" >&2
        die "$(node_name "$i") could not join $(node_name 1)"
      }
    fi
  done
  say "up: amqps://127.0.0.1:5691, :5692, :5693 (certs in $base/n1/certs)"
}

stop() {
  local i
  for i in 3 2 1; do
    with_node "$i" bash "$repo/deploy/local/tls-node.sh" stop | sed 's/^/  /' || true
  done
}

status() {
  local i down=0
  for i in "${NODES[@]}"; do
    if ctl "$i" ping >/dev/null 2>&1; then say "$(node_name "$i") up"; else say "$(node_name "$i") down" && down=1; fi
  done
  return $((down * 3))
}

beam_pid() { cat "$base/n$1/scaleout-tls.pid"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill) kill -KILL "$(beam_pid "${2:?node}")" && say "node ${2} killed" ;;
  pause) kill -STOP "$(beam_pid "${2:?node}")" && say "node ${2} paused" ;;
  resume) kill -CONT "$(beam_pid "${2:?node}")" && say "node ${2} resumed" ;;
  restart) with_node "${2:?node}" bash "$repo/deploy/local/tls-node.sh" start ;;
  *) die "usage: tls-cluster.sh start|stop|status|kill N|pause N|resume N|restart N" ;;
esac
