# Two entry points for a newcomer (see README): `make demo` and `make test`.
# Both create .venv and build the release extension from nothing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test build lint test-rust test-python bench bench-smoke clean

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

test-python: build
	$(PY) -m pytest -q

bench-smoke: build
	$(PY) benches/bench.py --smoke

## test: everything CI runs
test: lint test-rust test-python bench-smoke

## bench: the full benchmark; writes benches/results/
bench: build
	$(PY) benches/bench.py

clean:
	rm -rf $(VENV) target
