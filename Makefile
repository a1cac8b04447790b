# Thin entry points; the real work lives in scripts/ (and cargo). `make help` lists targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
IMAGE ?= jimini
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
PYTHON ?= .venv/bin/python
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: help setup build test run bench load instructions image deploy-check sync-k8s fmt lint clean compose-up compose-down

help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install system packages and the Python venv (idempotent)
	scripts/setup.sh

build: ## release build of the jimini binary
	$(CARGO) build --release --locked

test: ## the full test suite (same as the README's test command)
	scripts/test.sh

run: ## run Jimini locally with the shipped config (built-in mock upstream)
	scripts/run.sh

bench: ## criterion benchmarks
	$(CARGO) bench

load: ## load tests (wrk) against a local Jimini
	load-tests/run.sh

instructions: ## instructions per request under callgrind, side by side (deterministic)
	load-tests/instructions.sh

image: ## build the container image $(IMAGE):$(TAG)
	docker build -t $(IMAGE):$(TAG) .

deploy-check: ## validate Dockerfile, compose, k8s manifests, alerts and dashboard
	scripts/deploy-check.sh

sync-k8s: ## copy conf/ and rules/ into k8s/base/config and regenerate the PrometheusRule
	$(PYTHON) scripts/deploy_check.py sync

compose-up: ## start the local observability stack (docker compose)
	$(COMPOSE) up --build -d

compose-down: ## stop it
	$(COMPOSE) down

fmt: ## format the Rust code
	$(CARGO) fmt --all

lint: ## clippy with warnings as errors
	$(CARGO) clippy --all-targets -- -D warnings

clean: ## remove build output
	$(CARGO) clean
