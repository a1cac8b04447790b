#!/usr/bin/env bash
# The README's first command: install the build prerequisites (idempotent), build, and run the
# proxy on the shipped config. Its default upstream is the built-in mock, so this works offline.
# Extra arguments go to `jimini serve` (e.g. `scripts/run.sh -c my.yaml`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build-only
if [ "$#" -eq 0 ]; then set -- -c conf/jimini.yaml; fi
exec cargo run --release --locked --bin jimini -- serve "$@"
