#!/usr/bin/env bash
# A second RabbitMQ node beside the system one, for the TLS tests and a secure local run:
#
#   node      scaleout-tls@localhost (distribution port 25682, loopback only)
#   AMQPS     127.0.0.1:5681  TLS only, verify_peer + fail_if_no_peer_cert, login EXTERNAL
#             (the client certificate's CN is the RabbitMQ user)
#   HTTP      127.0.0.1:15682 management API (admin user + password, loopback only)
#   metrics   127.0.0.1:15692 Prometheus
#   state     ${SCALEOUT_TLS_HOME:-/var/tmp/scaleout-tls}: certs/, admin.password,
#             definitions.json, rabbitmq.conf, mnesia/, log/
#
#   bash deploy/local/tls-node.sh start|stop|status
#
# `start` is idempotent and a no-op when the node is up. Users (EXTERNAL login, no usable
# password): scaleout-master, w1..w6; admin: scaleout-admin. `mallory` gets a valid
# certificate but no RabbitMQ user, for negative tests. Must run as root (the Debian
# rabbitmq-server wrapper drops to the rabbitmq user, which must own the state folder).
set -euo pipefail

# The names and ports below are the contract with tests/fixtures/broker.py; the
# SCALEOUT_TLS_* overrides exist to try a second, throw-away instance from nothing.
NODE="${SCALEOUT_TLS_NODE:-scaleout-tls@localhost}"
AMQPS_PORT="${SCALEOUT_TLS_AMQPS_PORT:-5681}"
HTTP_PORT="${SCALEOUT_TLS_HTTP_PORT:-15682}"
METRICS_PORT="${SCALEOUT_TLS_METRICS_PORT:-15692}"
DIST_PORT="${SCALEOUT_TLS_DIST_PORT:-25682}"
ADMIN=scaleout-admin
USERS=(scaleout-master w1 w2 w3 w4 w5 w6)
CERT_NAMES=("${USERS[@]}" mallory "$ADMIN")
home="${SCALEOUT_TLS_HOME:-/var/tmp/scaleout-tls}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export RABBITMQ_CONF_ENV_FILE="$home/rabbitmq-env.conf"

say() { echo "tls-node: $*"; }
die() {
  echo "tls-node: $*" >&2
  exit 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# 9>&-: the start lock (fd 9) must not leak into the node or a CLI call; a detached node
# that inherited it would hold the lock for its whole life and block every later start.
ctl() { rabbitmqctl -q -n "$NODE" "$@" 9>&-; }
node_up() { port_open "$AMQPS_PORT" && port_open "$HTTP_PORT" && ctl ping >/dev/null 2>&1; }

render() {
  sed -e "s|@HOME@|$home|g" -e "s|@NODE@|$NODE|g" -e "s|@AMQPS_PORT@|$AMQPS_PORT|g" \
    -e "s|@HTTP_PORT@|$HTTP_PORT|g" -e "s|@METRICS_PORT@|$METRICS_PORT|g" \
    -e "s|@DIST_PORT@|$DIST_PORT|g" "$1" >"$2"
}

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt(4) || sha256(salt(4) || password)).
password_hash() {
  local tmp
  tmp=$(mktemp -d)
  openssl rand 4 >"$tmp/salt"
  cat "$tmp/salt" "$1" | openssl dgst -sha256 -binary >"$tmp/digest"
  cat "$tmp/salt" "$tmp/digest" | base64 -w0
  rm -rf "$tmp"
}

write_definitions() {
  [[ -s "$home/admin.password" ]] || (umask 077 && openssl rand -hex 24 | tr -d '\n' >"$home/admin.password")
  local hash users="" user
  hash=$(password_hash "$home/admin.password")
  for user in "${USERS[@]}"; do
    users+=$(printf ',{"name":"%s","password_hash":"","hashing_algorithm":"rabbit_password_hashing_sha256","tags":[]}' "$user")
  done
  cat >"$home/definitions.json" <<JSON
{
  "users": [
    {"name": "$ADMIN", "password_hash": "$hash",
     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}$users
  ],
  "vhosts": [{"name": "/"}],
  "permissions": [
    {"user": "$ADMIN", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
JSON
}

prepare() {
  [[ $(id -u) -eq 0 ]] || die "run as root: the node runs as the rabbitmq user, which must own $home"
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
  mkdir -p "$home/certs" "$home/mnesia" "$home/log"
  bash "$repo/deploy/certs/make-certs.sh" "$home/certs" "${CERT_NAMES[@]}" >/dev/null
  # Only rewrite the definitions when missing: a new admin hash on every start is harmless
  # but pointless, and the file is re-imported at each boot anyway.
  [[ -s "$home/definitions.json" && -s "$home/admin.password" ]] || write_definitions
  render "$repo/deploy/rabbitmq/tls-node.conf.in" "$home/rabbitmq.conf"
  render "$repo/deploy/rabbitmq/tls-node.env.in" "$home/rabbitmq-env.conf"
  cp "$repo/deploy/rabbitmq/tls-node.enabled_plugins" "$home/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$home"
  chmod 0750 "$home" "$home/certs"
  runuser -u rabbitmq -- test -r "$home/certs/server.key" ||
    die "the rabbitmq user cannot read $home/certs (is a parent folder private?); set SCALEOUT_TLS_HOME"
}

wait_up() {
  local deadline=$((SECONDS + 90))
  while ((SECONDS < deadline)); do
    if port_open "$AMQPS_PORT" && port_open "$HTTP_PORT"; then
      ctl await_startup --timeout 10 >/dev/null 2>&1 && return 0
    fi
    sleep 1
  done
  return 1
}

start() {
  # Wait out a restart by a test session (tests/fixtures/broker.py holds this lock).
  mkdir -p "$home"
  exec 9>>"$home/restart.lock"
  flock 9
  if node_up; then
    [[ -s "$home/admin.password" && -s "$home/certs/ca.pem" ]] ||
      die "$NODE is up but $home has no certificates: it was started with another SCALEOUT_TLS_HOME (stop it first)"
    say "$NODE is already up (amqps://127.0.0.1:$AMQPS_PORT, certs in $home/certs)"
    return 0
  fi
  prepare
  if ctl ping >/dev/null 2>&1; then
    # The Erlang node runs but its app is stopped (e.g. a test's restart was cut short).
    say "$NODE is running with its app stopped; starting the app"
    ctl start_app >"$home/log/start.out" 2>&1 || true
  else
    say "starting $NODE (state in $home)"
    rabbitmq-server -detached >"$home/log/start.out" 2>&1 9>&- || true
  fi
  if ! wait_up; then
    echo "tls-node: $NODE did not start within 90 s; last log lines:" >&2
    tail -n 40 "$home/log/start.out" "$home"/log/*.log >&2 2>/dev/null || true
    exit 1
  fi
  say "$NODE up: amqps://127.0.0.1:$AMQPS_PORT, management http://127.0.0.1:$HTTP_PORT"
  say "certs: $home/certs (ca.pem, client-<user>.pem/.key); admin $ADMIN, password in $home/admin.password"
}

stop() {
  if ctl ping >/dev/null 2>&1; then
    ctl stop >/dev/null
    say "$NODE stopped"
  else
    say "$NODE is not running"
  fi
}

status() {
  if node_up; then
    say "$NODE is up (amqps://127.0.0.1:$AMQPS_PORT, http://127.0.0.1:$HTTP_PORT, state $home)"
  else
    say "$NODE is down"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: tls-node.sh start|stop|status" ;;
esac
