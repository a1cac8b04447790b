#!/usr/bin/env bash
# Offline checks of everything under deployment: Dockerfile, docker-compose.yml, k8s/, deploy/.
#
#   scripts/deploy-check.sh [--require-binary]
#
# Needs .venv (scripts/setup.sh: pyyaml, kubernetes-validate), promtool and docker-compose
# (Debian packages prometheus and docker-compose). Runs every section, then prints a summary and
# exits non-zero if any section failed.
#
# Sections that need the jimini binary (live /healthz, /readyz, /metrics of a running Jimini and
# `jimini check` of the k8s copies) use $JIMINI_BIN, else target/release/jimini, else
# target/debug/jimini. Without a binary they are reported as SKIPPED (binary not built) — unless
# --require-binary is given or JIMINI_BIN is set, then a missing binary is a failure (use that in CI).
# JIMINI_METRICS_FILE=path: check the metric names against this scraped /metrics text instead of
# starting Jimini (the test runner scrapes a running instance and passes the file).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

REQUIRE_BINARY=0
for arg in "$@"; do
  case "$arg" in
    --require-binary) REQUIRE_BINARY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "deploy-check: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ -n "${JIMINI_BIN:-}" ]; then REQUIRE_BINARY=1; fi

PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
  echo "deploy-check: $PY missing — run scripts/setup.sh (make setup) first" >&2
  exit 2
fi

declare -a RESULTS=()
FAILED=0
record() { # name status
  RESULTS+=("$(printf '%-8s %s' "$2" "$1")")
  if [ "$2" = "FAIL" ]; then FAILED=1; fi
}
section() { # name command...
  local name=$1; shift
  echo
  if "$@"; then record "$name" PASS; else record "$name" FAIL; fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------ static checks
section "kustomize renderer self-test" "$PY" scripts/deploy_check.py selftest
section "k8s copies of conf/, rules/, alerts in sync" "$PY" scripts/deploy_check.py check-sync
section "every YAML file parses" "$PY" scripts/deploy_check.py yaml
section "k8s: render base + overlays, schema + references" "$PY" scripts/deploy_check.py k8s
section "Dockerfile / manifests / compose agree" "$PY" scripts/deploy_check.py consistency
section "Grafana dashboard + provisioning" "$PY" scripts/deploy_check.py dashboard

promtool_checks() {
  echo "== promtool"
  promtool check rules deploy/alerts/jimini-alerts.yml &&
    promtool test rules deploy/alerts/jimini-alerts.test.yml &&
    promtool check config --syntax-only deploy/prometheus.yml
}
if have promtool; then
  section "promtool check/test rules, check config" promtool_checks
else
  echo; echo "== promtool not installed (Debian package prometheus; scripts/setup.sh installs it)"
  record "promtool check/test rules, check config" FAIL
fi

compose_checks() {
  echo "== docker-compose config"
  local ok=0
  if have docker-compose; then
    docker-compose -f docker-compose.yml config -q && echo "  ok   docker-compose (v1) config" || ok=1
  fi
  if docker compose version >/dev/null 2>&1; then
    docker compose -f docker-compose.yml config -q && echo "  ok   docker compose (v2) config" || ok=1
  else
    echo "  note docker compose v2 not installed: only v1 checked"
  fi
  have docker-compose || docker compose version >/dev/null 2>&1 || { echo "  FAIL no docker-compose"; ok=1; }
  return $ok
}
section "docker-compose.yml valid" compose_checks

# ------------------------------------------------------------------ binary checks
BIN=""
if [ -n "${JIMINI_BIN:-}" ]; then
  BIN=$JIMINI_BIN
elif [ -x target/release/jimini ]; then
  BIN=target/release/jimini
elif [ -x target/debug/jimini ]; then
  BIN=target/debug/jimini
fi

TMP=$(mktemp -d)
JPID=""
cleanup() {
  if [ -n "$JPID" ] && kill -0 "$JPID" 2>/dev/null; then
    kill -TERM "$JPID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$JPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$JPID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

binary_check_config() {
  echo "== $BIN check -c k8s/base/config/jimini.yaml (rules from k8s/base/config/rules)"
  JIMINI_RULES_DIR="$ROOT/k8s/base/config/rules" JIMINI_AUDIT_DIR="$TMP/audit-check" \
    "$BIN" check -c k8s/base/config/jimini.yaml
}

binary_live() {
  # The admin port and probe paths the manifests use, e.g. "admin 9901 /healthz /readyz".
  local probe; probe=$("$PY" scripts/deploy_check.py probe-paths) || return 1
  local port_name; port_name=$(echo "$probe" | cut -d' ' -f1)
  local paths; paths=$(echo "$probe" | cut -d' ' -f3-)
  local p_http p_admin cfg
  p_http=$(free_port); p_admin=$(free_port)
  # Serve the ConfigMap's config itself. Only if its in-process mock upstream's port is taken
  # (another Jimini, a test run) use a copy with the mock moved to a free port.
  cfg=$("$PY" - "$ROOT/k8s/base/config/jimini.yaml" "$TMP/jimini.yaml" <<'EOF'
import socket, sys, yaml
src, dst = sys.argv[1], sys.argv[2]
cfg = yaml.safe_load(open(src, encoding="utf-8"))
mock = cfg.get("mock") if isinstance(cfg.get("mock"), dict) else {}
if not mock.get("enabled") or "listen" not in mock:
    print(src); sys.exit(0)
host, port = str(mock["listen"]).rsplit(":", 1)
s = socket.socket()
try:
    s.bind((host, int(port)))
    s.close()
    print(src)
except OSError:
    s.close()
    f = socket.socket(); f.bind(("127.0.0.1", 0)); free = f.getsockname()[1]; f.close()
    mock["listen"] = f"127.0.0.1:{free}"
    for u in cfg.get("upstreams") or []:
        if str(u.get("base_url", "")).rstrip("/").endswith(f":{port}"):
            u["base_url"] = f"http://127.0.0.1:{free}"
    yaml.safe_dump(cfg, open(dst, "w", encoding="utf-8"), sort_keys=False)
    print(dst)
EOF
) || return 1
  echo "== live: $BIN serve -c ${cfg#"$ROOT/"} (proxy :$p_http, admin ('$port_name' in the manifests) :$p_admin)"
  env -u OTEL_EXPORTER_OTLP_ENDPOINT -u JIMINI_REDIS_URL -u JIMINI_UPSTREAM_URL \
    JIMINI_LISTEN="127.0.0.1:$p_http" JIMINI_ADMIN_LISTEN="127.0.0.1:$p_admin" \
    JIMINI_RULES_DIR="$ROOT/k8s/base/config/rules" JIMINI_AUDIT_DIR="$TMP/audit" \
    "$BIN" serve -c "$cfg" >"$TMP/jimini.log" 2>&1 &
  JPID=$!
  local up=0
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$p_admin/healthz" 2>/dev/null; then up=1; break; fi
    kill -0 "$JPID" 2>/dev/null || break
    sleep 0.2
  done
  if [ "$up" != 1 ]; then
    echo "  FAIL jimini did not answer /healthz on the admin port; log:"; tail -n 30 "$TMP/jimini.log" | sed 's/^/    /'
    return 1
  fi
  local rc=0
  for path in $paths; do
    local code=""
    for _ in $(seq 1 50); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p_admin$path" || true)
      [ "$code" = 200 ] && break
      sleep 0.2
    done
    if [ "$code" = 200 ]; then echo "  ok   admin $path -> 200"; else echo "  FAIL admin $path -> $code"; rc=1; fi
  done
  # One request through the proxy so request/finding counters have samples, then scrape.
  curl -s -o /dev/null -m 10 "http://127.0.0.1:$p_http/v1/chat/completions" \
    -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail jane.doe@example.com"}]}' || true
  if curl -fsS "http://127.0.0.1:$p_admin/metrics" -o "$TMP/metrics.txt"; then
    echo "  ok   scraped /metrics ($(grep -c '^# TYPE' "$TMP/metrics.txt" || true) families)"
    "$PY" scripts/deploy_check.py metrics "$TMP/metrics.txt" || rc=1
  else
    echo "  FAIL could not scrape /metrics on the admin port"; rc=1
  fi
  # SIGTERM = graceful shutdown (server.grace_period_secs + shutdown_timeout_secs, 15 s in the
  # shipped config); it must finish well inside terminationGracePeriodSeconds minus preStop.
  local t0=$SECONDS
  kill -TERM "$JPID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$JPID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$JPID" 2>/dev/null; then
    echo "  FAIL jimini did not exit within 30 s of SIGTERM"; rc=1
    kill -KILL "$JPID" 2>/dev/null || true
  else
    echo "  ok   exited $((SECONDS - t0)) s after SIGTERM"
  fi
  wait "$JPID" 2>/dev/null || true
  JPID=""
  return $rc
}

if [ -n "${JIMINI_METRICS_FILE:-}" ]; then
  section "metrics used by dashboard/alerts exported (JIMINI_METRICS_FILE)" \
    "$PY" scripts/deploy_check.py metrics "$JIMINI_METRICS_FILE"
fi

if [ -n "$BIN" ] && [ -x "$BIN" ]; then
  section "jimini check of the k8s config and rules" binary_check_config
  if [ -z "${JIMINI_METRICS_FILE:-}" ]; then
    section "live: healthz/readyz on admin port, /metrics vs dashboard/alerts" binary_live
  fi
else
  echo
  if [ -n "$BIN" ]; then
    echo "== binary checks: $BIN is not executable"
  else
    echo "== binary checks SKIPPED: binary not built (no target/release/jimini or target/debug/jimini)."
    echo "   Build it (cargo build --release) or pass JIMINI_BIN=...; CI must use --require-binary."
  fi
  if [ "$REQUIRE_BINARY" = 1 ]; then
    record "jimini binary checks (required)" FAIL
  else
    record "jimini binary checks — binary not built" SKIPPED
    if [ -z "${JIMINI_METRICS_FILE:-}" ]; then
      record "metrics used by dashboard/alerts exported — binary not built" SKIPPED
    fi
  fi
fi

echo
echo "deploy-check summary:"
for r in "${RESULTS[@]}"; do echo "  $r"; done
if [ "$FAILED" = 1 ]; then
  echo "deploy-check: FAILED"
  exit 1
fi
echo "deploy-check: OK"
