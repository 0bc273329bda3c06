# Two entry points for a newcomer (see README): `make demo` and `make test`.
# Both create .venv and build the release extension from nothing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test build lint test-rust test-python bench bench-smoke clean nats-server attacks

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
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	ruff check python tests benches examples
	ruff format --check python tests benches examples
	python -m mypy.stubtest tensorwire._core

test-rust:
	cargo test --quiet

## nats-server: the broker the transport tests run against (Debian's package; CI runs
## as root on a fresh machine, so it is installed there when missing)
nats-server:
	@command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; }

test-python: build nats-server
	$(PY) -m pytest -q

bench-smoke: build
	$(PY) benches/bench.py --smoke

## test: everything CI runs
test: lint test-rust test-python bench-smoke

## attacks: the hostile-client suite as a report (benches/results/attacks.md)
attacks: build
	$(PY) tests/hostile_clients.py --out benches/results/attacks.md

## bench: the full benchmark; writes benches/results/
bench: build
	$(PY) benches/bench.py

clean:
	rm -rf $(VENV) target
