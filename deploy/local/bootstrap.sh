#!/usr/bin/env bash
# Installs what scaleout needs on a Debian machine: system packages (unixODBC for
# pyodbc, openssl for the test certificates), then a virtual environment with the
# project and its dev tools. Idempotent: what is present is left alone.
set -euo pipefail
venv="${1:-.venv}"

need_apt=()
# jq: the README session pipes into it; chromium + chromium-driver: the console's browser tests
for pkg in unixodbc openssl jq chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  sudo_cmd=""
  [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: scaleout needs Python 3.11 or newer; $python is $("$python" --version)" >&2
  exit 1
fi
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q -U "pip>=25.1"
"$venv/bin/python" -m pip install -q -e . --group dev
echo "bootstrap: $venv ready ($("$venv/bin/python" --version))"
