#!/usr/bin/env bash
# Entry point of the compose `worker` service: gives this replica one identity of the pool
# w1..wN (SCALEOUT_WORKER_POOL) that the provision job made certificates and RabbitMQ users
# for, then runs its command (`scaleout worker`) with SCALEOUT_WORKER_ID and the matching
# client certificate.
#
# A claim is a folder in the shared identities volume; mkdir makes taking one atomic. The
# folder's `owner` file names the container (its hostname) and is touched every 30 s. A
# container that restarts finds its own claim again; a claim untouched for 2 minutes (a
# container that was killed and removed) is taken over; a clean exit releases the claim.
# SCALEOUT_REPLICA_NAME replaces the hostname as the owner's name (for tests).
set -euo pipefail

pool=${SCALEOUT_WORKER_POOL:-8}
claims=${SCALEOUT_IDENTITY_DIR:-/var/lib/scaleout/identities}
certs=${SCALEOUT_WORKER_CERTS:-/pki/workers}
stale_after_s=120
me=${SCALEOUT_REPLICA_NAME:-$(hostname)}

mine() { [[ "$(cat "$claims/$1/owner" 2>/dev/null)" == "$me" ]]; }
stale() {
  local touched
  touched=$(stat -c %Y "$claims/$1/owner" 2>/dev/null) || return 0
  (($(date +%s) - touched > stale_after_s))
}
take() { mkdir "$claims/$1" 2>/dev/null && echo "$me" >"$claims/$1/owner"; }

claim() {
  local i id
  for i in $(seq 1 "$pool"); do
    mine "w$i" && { echo "w$i"; return 0; }
  done
  for i in $(seq 1 "$pool"); do
    id="w$i"
    take "$id" && { echo "$id"; return 0; }
    # Only one contender can rename a stale claim away; the winner then races on mkdir.
    if stale "$id" && mv "$claims/$id" "$claims/.stale-$id-$me-$$" 2>/dev/null; then
      rm -rf "$claims/.stale-$id-$me-$$"
      take "$id" && { echo "$id"; return 0; }
    fi
  done
  return 1
}

id=$(claim) || {
  echo "worker-identity: all $pool identities are held; raise SCALEOUT_WORKER_POOL in deploy/.env" >&2
  exit 1
}
echo "worker-identity: this replica ($me) is worker $id"
export SCALEOUT_WORKER_ID=$id
export SCALEOUT_BROKER__CERT_FILE="$certs/client-$id.pem"
export SCALEOUT_BROKER__KEY_FILE="$certs/client-$id.key"

(while sleep 30; do touch "$claims/$id/owner"; done) </dev/null >/dev/null 2>&1 &
keeper=$!
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
while true; do
  status=0
  wait "$child" || status=$?
  kill -0 "$child" 2>/dev/null || break # wait returned for a signal; the worker still runs
done
kill "$keeper" 2>/dev/null || true
! mine "$id" || rm -rf "${claims:?}/$id"
exit "$status"
