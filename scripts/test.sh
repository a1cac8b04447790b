#!/usr/bin/env bash
# The whole test suite — the README's second command and what CI runs (.ci/run):
# set-up (idempotent), format and lint gates, Rust unit + end-to-end tests, the official OpenAI
# Python SDK suite against the real binary, and the deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo build"
cargo build --locked --bins

step "cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit + end-to-end)"
cargo test --locked -- --test-threads=2

step "python: official openai SDK end-to-end"
JIMINI_BIN="$PWD/target/debug/jimini" .venv/bin/python -m pytest -q tests/python

step "node: official openai npm SDK end-to-end"
JIMINI_BIN="$PWD/target/debug/jimini" node --test tests/node/

step "deploy checks"
JIMINI_BIN="$PWD/target/debug/jimini" scripts/deploy-check.sh

printf '\nall tests passed\n'
