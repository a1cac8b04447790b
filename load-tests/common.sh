# Shared by the load-test scripts (sourced): the release binary, a temp dir and the processes
# that are stopped on exit, free loopback ports, and the Jimini config they run.
# shellcheck shell=bash

# Sets OUT, BIN, TMP and PIDS; every pid added to PIDS is killed on exit, TMP removed.
start_harness() {
  OUT="load-tests/results"
  mkdir -p "$OUT"
  [ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin jimini >/dev/null
  BIN="$PWD/target/release/jimini"
  TMP="$(mktemp -d)"
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
}

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

wait_port() { # port [tries of 0.1 s]
  for _ in $(seq 1 "${2:-200}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; exit 1
}

# jimini_config dir listen admin inspect audit otlp threads metrics: writes dir/jimini.yaml for
# the mock upstream on $MOCK (OTLP exports to $SINK) and the shipped rules.
jimini_config() {
  local dir="$1" listen="$2" admin="$3" inspect="$4" audit="$5" otlp="$6" threads="$7" metrics="$8"
  mkdir -p "$dir"
  cat > "$dir/jimini.yaml" <<YAML
listen: 127.0.0.1:$listen
server: { threads: $threads, grace_period_secs: 0, shutdown_timeout_secs: 1 }
admin: { listen: 127.0.0.1:$admin }
upstreams:
  - name: mock
    base_url: http://127.0.0.1:$MOCK
body: { inspect: $inspect }
rules: { dir: $PWD/rules }
audit: { enabled: $audit, dir: $dir/audit }
telemetry:
  log_level: warn
  metrics: $metrics
  otlp: { enabled: $otlp, protocol: http_protobuf, endpoint: "http://127.0.0.1:$SINK", sample_ratio: 1.0 }
YAML
}
