#!/usr/bin/env bash
# The `enroll` job of deploy/docker-compose.yml: registers the worker pool w1..wN in the
# catalog, enabled, as Scale Out Manager does when a worker is added. A worker that is
# already registered is left as it is, so an operator's `scaleout workers disable` sticks
# across `docker-compose up`.
set -euo pipefail

pool=${SCALEOUT_WORKER_POOL:-8}
for i in $(seq 1 "$pool"); do
  if ! scaleout workers show "w$i" >/dev/null 2>&1; then
    scaleout workers add "w$i" --enable --description "compose worker pool"
  fi
done
scaleout workers list
