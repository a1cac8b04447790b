#!/usr/bin/env bash
# Idempotent set-up of everything the build and the test suite need on a Debian machine:
# system packages (cmake for pingora's zlib-ng, wrk and valgrind for load tests, redis for shared limits,
# promtool and docker-compose for deploy checks), a Python venv with the official openai SDK, and
# the Node openai SDK under tests/node. `--build-only`: just what building and running Jimini
# needs (cmake, pkg-config, libssl-dev, and gcc + make for the bundled jemalloc), for scripts/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_ONLY=""
[ "${1:-}" = "--build-only" ] && BUILD_ONLY=1

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

want=(cmake pkg-config libssl-dev gcc make)
[ -n "$BUILD_ONLY" ] || want+=(wrk redis-server prometheus docker-compose curl valgrind)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -n "$BUILD_ONLY" ]; then
  exit 0
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

# --- Node: the official openai npm SDK for tests/node (npm ci only when the lockfile changes) ---
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: node and npm (Node >= 20) are required for tests/node; install them first" >&2
  exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "setup: tests/node needs Node >= 20, found $(node --version)" >&2
  exit 1
fi
NODE_STAMP=tests/node/node_modules/.setup-stamp   # npm ci wipes node_modules, stamp included
NODE_SUM="$(cat tests/node/package.json tests/node/package-lock.json | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$NODE_STAMP" 2>/dev/null)" != "$NODE_SUM" ]; then
  echo "setup: npm ci (tests/node)"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  echo "$NODE_SUM" >"$NODE_STAMP"
fi

echo "setup: ok"
