#!/usr/bin/env bash
# Idempotent set-up of everything the build and the test suite need on a Debian machine:
# system packages (cmake for pingora's zlib-ng, wrk for load tests, redis for shared limits,
# promtool and docker-compose for deploy checks) and a Python venv with the official SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

want=(cmake pkg-config libssl-dev wrk redis-server prometheus docker-compose curl)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The prometheus package starts a daemon on :9090 when installed; we only want promtool.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
pkill -x prometheus >/dev/null 2>&1 || true

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import openai, pytest, yaml, kubernetes_validate" >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -r tests/python/requirements.txt
fi
echo "setup: ok"
