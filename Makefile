# Two entry points for a newcomer (see README): `make demo` and `make test`.
# Both create .venv and build the release extension from nothing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test build lint test-rust test-python bench bench-smoke clean nats-server attacks \
        kafka-broker test-kafka \
        fuzz fuzz-smoke fuzz-tools fuzz-corpus

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements-dev.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

## build: the release extension, installed into .venv
build: $(DEPS)
	maturin develop --release --quiet

## demo: the main job: encode a model, chunk, reassemble, decode, verify, print a table
demo: build
	$(PY) examples/demo.py

lint: build
	cargo fmt --check
	cargo fmt --check --manifest-path fuzz/Cargo.toml
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	ruff check python tests benches examples fuzz
	ruff format --check python tests benches examples fuzz
	python -m mypy.stubtest tensorwire._core

test-rust:
	cargo test --quiet

## nats-server: the broker the transport tests run against (Debian's package; CI runs
## as root on a fresh machine, so it is installed there when missing)
nats-server:
	@command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; }

## kafka-broker: tansu, a Kafka-protocol broker (crates.io), built once into
## ~/.cache/tensorwire/tansu: 15-35 min on 2 cores, so only a fresh machine pays it; the
## build directory (1.4 GB) is removed after. TANSU=/path/to/tansu uses another binary.
TANSU_ROOT := $(HOME)/.cache/tensorwire/tansu
kafka-broker:
	@[ -n "$$TANSU" ] || [ -x $(TANSU_ROOT)/bin/tansu ] || command -v tansu >/dev/null 2>&1 || { \
	  echo "building tansu 0.6.0 into $(TANSU_ROOT) (once; 15-35 min on 2 cores)"; \
	  tmp=$$(mktemp -d); \
	  CARGO_TARGET_DIR=$$tmp cargo install tansu --version 0.6.0 --locked --quiet \
	    --no-default-features --features dynostore --root $(TANSU_ROOT); \
	  rc=$$?; rm -rf $$tmp; exit $$rc; }

test-python: build nats-server kafka-broker
	$(PY) -m pytest -q

## test-kafka: only the tests that run against the Kafka-protocol broker
test-kafka: build kafka-broker
	$(PY) -m pytest -q -m kafka

## bench-smoke: every part of the benchmark at tiny sizes, every round trip checked
## (part of `make test`; the report goes to a temp dir)
bench-smoke: build kafka-broker
	$(PY) benches/bench.py --smoke

## fuzz-tools: cargo-fuzz, installed once into ~/.cargo/bin (about 2 minutes); the
## targets build with the nightly toolchain
fuzz-tools:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet

FUZZ_SECONDS ?= 600
## fuzz: every fuzzer for FUZZ_SECONDS each (cargo-fuzz on the core, atheris on the
## Python readers); a crash's input is kept (fuzz/artifacts/, fuzz/python/crashes/)
fuzz: build fuzz-tools
	fuzz/run.sh $(FUZZ_SECONDS)
	$(PY) fuzz/python/run.py --seconds $(FUZZ_SECONDS) --jobs 2

## fuzz-smoke: the same, 30 s per cargo-fuzz target and 15 s per atheris target, and
## every saved crash replayed (part of `make test`)
fuzz-smoke: build fuzz-tools
	fuzz/run.sh --regressions
	fuzz/run.sh 30
	$(PY) fuzz/python/run.py --seconds 15 --jobs 2

## fuzz-corpus: rewrite the committed cargo-fuzz seeds (deterministic)
fuzz-corpus:
	cargo run --quiet --manifest-path fuzz/Cargo.toml --example make_corpus

## test: everything CI runs
test: lint test-rust test-python bench-smoke fuzz-smoke

## attacks: the hostile-client suite as a report (benches/results/attacks.md)
attacks: build
	$(PY) tests/hostile_clients.py --out benches/results/attacks.md

## bench: every part of the benchmark at full size (about 21 min on 2 cores); rewrites
## benches/results/ (report.md, results.json, plots). Parts: benches/README.md
bench: build kafka-broker
	$(PY) benches/bench.py

clean:
	rm -rf $(VENV) target
