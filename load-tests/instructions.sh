#!/usr/bin/env bash
# Instructions per request, side by side in one run: each configuration of Jimini runs on ONE
# worker thread under callgrind while wrk drives the same 2 KB chat request through it (loopback
# mock upstream; OTLP exports go to a second mock). Counts do not depend on how busy the host
# is, which makes a few-percent cost such as metrics+tracing readable on a shared 2-core machine
# where a throughput pair swings by ±15 %. Two counts per configuration:
#   worker   the Pingora worker thread: what bounds throughput when the audit writer and the
#            span exporter have a core of their own (ratio = expected throughput ratio);
#   process  every Jimini thread: the CPU bill. Under callgrind requests run ~50x slower, so
#            the background threads' timed work (polls, group-commit windows) is spread over
#            ~50x fewer requests than at full speed: an upper bound.
# Ratios are baseline / variant, Jimini's own CPU only: a throughput ratio on a shared box is
# higher, since the client's and the upstream's work is the same on both sides.
#   passthrough   inspection off, no audit, no tracing (a plain reverse proxy)
#   default       the shipped packs + audit + metrics
#   no-audit      default without the audit writer
#   tracing       default + OTLP tracing at sampling 1.0
#   no-telemetry  default with metrics and tracing off
# SECS (measured seconds per configuration, default 10) is tunable; needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-10}"
command -v wrk >/dev/null && command -v valgrind >/dev/null || scripts/setup.sh
# shellcheck source=load-tests/common.sh
. load-tests/common.sh
start_harness

MOCK=$(port); SINK=$(port)
"$BIN" mock-upstream --listen "127.0.0.1:$MOCK" >/dev/null 2>&1 & PIDS+=($!)
"$BIN" mock-upstream --listen "127.0.0.1:$SINK" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$MOCK"; wait_port "$SINK"

measure() { # name inspect audit otlp metrics -> "name worker-instr/request process-instr/request requests"
  local name="$1" inspect="$2" audit="$3" otlp="$4" metrics="$5" p a vp n f t worker=0 total=0
  p=$(port); a=$(port)
  jimini_config "$TMP/$name" "$p" "$a" "$inspect" "$audit" "$otlp" 1 "$metrics"
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$TMP/$name/cg" \
    "$BIN" serve -c "$TMP/$name/jimini.yaml" >"$TMP/$name/log" 2>&1 &
  vp=$!; PIDS+=("$vp")
  wait_port "$p" 600 # valgrind starts slowly
  wrk -t1 -c4 -d3s -s load-tests/chat-2k.lua "http://127.0.0.1:$p" >/dev/null # warm-up
  callgrind_control -z "$vp" >/dev/null 2>&1
  n=$(wrk -t1 -c4 -d"${SECS}s" -s load-tests/chat-2k.lua "http://127.0.0.1:$p" | awk '/requests in/ {print $1}')
  callgrind_control -d "$vp" >/dev/null 2>&1
  kill "$vp"; wait "$vp" 2>/dev/null || true
  for f in "$TMP/$name"/cg.1-*; do # one file per thread; the worker does the most
    t=$(awk '/^(summary|totals):/ {print $2; exit}' "$f")
    total=$((total + ${t:-0})); (( ${t:-0} > worker )) && worker=$t
  done
  echo "$name $((worker / n)) $((total / n)) $n"
}

: > "$OUT/instructions.txt"
for cfg in "passthrough false false false true" "default true true false true" \
           "no-audit true false false true" "tracing true true true true" \
           "no-telemetry true true false false"; do
  # shellcheck disable=SC2086
  measure $cfg | tee -a "$OUT/instructions.txt"
done

python3 - "$OUT/instructions.txt" <<'PY' | tee "$OUT/instructions-summary.txt"
import sys
rows = {}
for line in open(sys.argv[1]):
    if line.strip():
        name, worker, process, n = line.split()
        rows[name] = (int(worker), int(process), int(n))
print(f"{'config':14} {'worker instr/req':>17} {'process instr/req':>18} {'requests':>9}")
for k, (w, p, n) in rows.items():
    print(f"{k:14} {w:>17,} {p:>18,} {n:>9,}")
print()
def ratio(label, base, variant):
    out = []
    for i, what in ((0, "worker"), (1, "process")):
        b, v = rows[base][i], rows[variant][i]
        out.append(f"{what} {100 * b / v:5.1f} % (+{v - b:,})")
    print(f"{label:26}: {'   '.join(out)}")
ratio("default / passthrough", "passthrough", "default")
ratio("audit on / off", "no-audit", "default")
ratio("metrics+tracing on / off", "no-telemetry", "tracing")
PY
