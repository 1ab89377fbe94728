#!/usr/bin/env bash
# Installs the ops tools the deploy/ tests use, when missing: Debian's `prometheus`
# (the server and promtool) and `docker-compose` (to validate deploy/docker-compose.yml;
# no Docker engine is needed for `docker-compose config`). Idempotent and quiet: what is
# present is left alone, and the package's own service is not started.
#
#   bash deploy/local/tools.sh
set -euo pipefail

need_apt=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
((${#need_apt[@]})) || exit 0

echo "tools: installing Debian packages: ${need_apt[*]}"
sudo_cmd=""
[[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
# Tests run their own Prometheus in a temporary folder; keep the package's daemon from
# starting (no systemd here, and it would hold port 9090).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
  $sudo_cmd chmod 0755 "$policy"
  made_policy=1
fi
trap '[[ $made_policy -eq 0 ]] || $sudo_cmd rm -f "$policy"' EXIT
log=$(mktemp)
if ! { $sudo_cmd apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}"; } >"$log" 2>&1; then
  echo "tools: apt-get failed:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
rm -f "$log"
echo "tools: $(promtool --version 2>&1 | head -n1); $(docker-compose version --short 2>&1)"
