# Entry points: `make run` (dev vault) and `make test` (everything CI runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Builds go to a target dir outside the clone, so fresh clones (CI) reuse compiled
# dependencies. A machine that never built it just starts cold.
CARGO_TARGET_DIR ?= $(HOME)/.cache/vault/target
export CARGO_TARGET_DIR
# moto's KMS emulator for the AWS-mode tests, in a venv outside the clone.
VENV ?= $(HOME)/.cache/vault/venv
export VAULT_MOTO_SERVER := $(VENV)/bin/moto_server
export VAULT_PYTHON := $(VENV)/bin/python
NEXTEST := $(shell cargo nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: help deps venv clients console console-screenshots build run test test-wireguard test-faults bench lint fmt clean-dev cluster-up cluster-down

help:
	@echo "make run    build and start a single-node dev vault (local KMS, data in .dev/)"
	@echo "make test   install what tests need, then fmt, clippy and every test"
	@echo "make build  build every binary and test"
	@echo "make clients  install the Python and Node clients for their tests (venv, npm ci)"
	@echo "make console  install Chromium (apt) and Playwright (venv) for the console's browser tests"
	@echo "make console-screenshots   start a seeded dev node with the console, save docs/console/*.png"
	@echo "make cluster-up / cluster-down   three local nodes on loopback (Raft over mTLS)"
	@echo "make test-wireguard   three nodes on a WireGuard overlay in network namespaces (root)"
	@echo "make test-faults   partitions, crashes, pauses, transfers on 3 and 5 nodes; histories checked (root; FAULTS_MINUTES=30 soaks)"
	@echo "make bench  3-node cluster vs 3-member etcd on loopback; writes BENCHMARKS table and bench-results.json"
	@echo "make fmt    format the code"

deps:
	@scripts/install-deps.sh

venv:
	@scripts/install-moto.sh $(VENV)

# The Python client (into the venv, gRPC code generated from proto/) and the Node client
# (`npm ci` in clients/node, which generates its code), for tests/tests/clients_polyglot.rs.
clients: venv
	@scripts/install-clients.sh $(VENV)

# Debian's chromium and Playwright for Python (into the venv; it downloads no browser), for
# tests/tests/console.rs, which drives the console in headless Chromium.
console: venv
	@scripts/install-console.sh $(VENV)

# Screenshots of every console page into docs/console/ (shown in docs/console.md): a throwaway
# node with the console on, a few secrets, tokens and rotation policies, then the browser.
console-screenshots: deps console
	cargo build -p vault-node -p vaultctl --bins --no-default-features
	@scripts/console-screenshots.sh $(VENV) docs/console

build: deps
	cargo build --workspace --all-targets

# Only the server and the CLI (its own crate), without AWS KMS support (the dev vault uses the local KMS).
run: deps
	cargo build -p vault-node -p vaultctl --bins --no-default-features
	@scripts/dev-run.sh

lint: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings -D clippy::todo -D clippy::unimplemented

fmt:
	cargo fmt --all

# Real WireGuard in network namespaces; needs root and says SKIP without it.
test-wireguard: build
	@wireguard/netns-test.sh

# Fault injection in network namespaces, histories checked for linearizability; needs root
# and says SKIP without it. FAULTS_MINUTES=N adds an N-minute soak of random nemeses.
test-faults: build
	@scripts/test-faults.sh

test: lint build venv clients console test-wireguard test-faults
ifeq ($(NEXTEST),yes)
	cargo nextest run --workspace --no-fail-fast
else
	cargo test --workspace --no-fail-fast
endif

cluster-up: deps
	cargo build -p vault-node -p vaultctl --bins --no-default-features
	@cluster/cluster.sh up

cluster-down:
	@cluster/cluster.sh down

# Release build, then the benchmark (etcd from Debian's etcd-server, moto for re-wrap).
# BENCH_FEATURES: vault-node features for the bench build, e.g. `counting-alloc` (with
# BENCH_ARGS=--alloc: allocations per operation on each node). Off by default.
BENCH_ARGS ?=
BENCH_FEATURES ?=
bench: deps venv
	@command -v etcd >/dev/null || { sudo=""; [ "$$(id -u)" -ne 0 ] && sudo=sudo; $$sudo apt-get install -y -qq --no-install-recommends etcd-server; }
	cargo build --release -p vault-node -p vaultctl -p vault-tests --bins $(if $(strip $(BENCH_FEATURES)),--features "$(addprefix vault-node/,$(BENCH_FEATURES))")
	$(CARGO_TARGET_DIR)/release/vault-bench --out bench-results.json $(BENCH_ARGS)

clean-dev:
	rm -rf .dev
