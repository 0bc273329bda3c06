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
        kafka-broker test-kafka torch wheel test-sdist bench-abi3 \
        fuzz fuzz-smoke fuzz-tools fuzz-corpus

$(PY):
	$(PYTHON) -m venv $(VENV)

## the dev requirements, then the peers whose declared dependencies would pull a second
## torch: `--no-deps` (requirements-no-deps.txt; `make torch` provides torch)
$(DEPS): requirements-dev.txt requirements-test.txt requirements-no-deps.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-no-deps.txt
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

## torch: PyTorch, pinned in requirements-torch.txt (PyPI's CUDA build, which runs on the
## CPU: ~3 GB with its nvidia-* libraries), installed once into ~/.cache/tensorwire/
## torch-<version>-<python> and seen by .venv through a .pth file, whose entry comes after
## site-packages, so the venv's own numpy, ml_dtypes and jax win. A fresh machine pays the
## download once (minutes); a reused one, or a clean clone with the cache, pays seconds.
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements-torch.txt)
TORCH_ROOT := $(HOME)/.cache/tensorwire/torch-$(TORCH_VERSION)-$(shell $(PYTHON) -c \
  'import sys; print(sys.implementation.cache_tag)')
## torch-pth: the .pth line that shows the cached torch to the venv of the Python $(1)
torch-pth = echo $(TORCH_ROOT) > $$($(1) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/tensorwire-torch.pth
torch: $(DEPS)
	@[ -f $(TORCH_ROOT)/.installed ] || { \
	  echo "installing torch $(TORCH_VERSION) into $(TORCH_ROOT) (once; ~3 GB, 2 min)"; \
	  tmp=$(TORCH_ROOT).partial.$$$$; \
	  $(PY) -m pip install -q --no-cache-dir --target $$tmp -r requirements-torch.txt && \
	  touch $$tmp/.installed && mv -T $$tmp $(TORCH_ROOT) 2>/dev/null; \
	  rm -rf $$tmp; [ -f $(TORCH_ROOT)/.installed ]; }
	@$(call torch-pth,$(PY))

## wheel: what users install, in dist/: one abi3 wheel for every CPython from 3.9 on,
## checked by maturin's auditwheel check against MANYLINUX, and the sdist.
## manylinux_2_34 is the lowest policy the extension passes when built here (its newest
## glibc symbol is GLIBC_2.34; manylinux_2_17 fails), under this machine's glibc 2.36.
MANYLINUX ?= manylinux_2_34
wheel: $(DEPS)
	rm -rf dist
	maturin build --release --quiet --compatibility $(MANYLINUX) --out dist
	maturin sdist --out dist

## test-python: the Python suite against the installed wheel, not the source tree: a
## fresh venv holds the wheel and the test requirements, and PATH has no Rust toolchain.
## A Python 3.9 (the oldest the wheel claims), when there is one, runs installed_smoke.py.
WHEEL_VENV := $(abspath .venv-wheel)
PY39 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3) $(shell command -v python3.9))
test-python: wheel nats-server kafka-broker torch
	rm -rf $(WHEEL_VENV)
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q dist/*.whl -r requirements-test.txt
	$(WHEEL_VENV)/bin/python -m pip install -q --no-deps -r requirements-no-deps.txt
	@$(call torch-pth,$(WHEEL_VENV)/bin/python)
	env -u VIRTUAL_ENV -u PYO3_PYTHON PATH=$(WHEEL_VENV)/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	  TENSORWIRE_INSTALLED=1 $(WHEEL_VENV)/bin/python -m pytest -q
	@if [ -n "$(PY39)" ]; then \
	  rm -rf $(WHEEL_VENV)-py39 && $(PY39) -m venv $(WHEEL_VENV)-py39 && \
	  $(WHEEL_VENV)-py39/bin/python -m pip install -q dist/*.whl && \
	  (cd /tmp && env -u VIRTUAL_ENV PATH=$(WHEEL_VENV)-py39/bin:/usr/bin:/bin \
	    $(WHEEL_VENV)-py39/bin/python $(abspath tests/installed_smoke.py)); \
	else echo "no Python 3.9 here: the wheel was tested on $$($(PYTHON) -V) only"; fi

## test-sdist: `pip install` builds the package from the sdist alone (with Rust), in a
## fresh venv, and the result passes installed_smoke.py
test-sdist: wheel
	rm -rf .venv-sdist && $(PYTHON) -m venv .venv-sdist
	CARGO_TARGET_DIR=$(abspath target) .venv-sdist/bin/python -m pip install -q dist/*.tar.gz
	cd /tmp && env -u VIRTUAL_ENV $(abspath .venv-sdist)/bin/python $(abspath tests/installed_smoke.py)

## test-kafka: only the tests that run against the Kafka-protocol broker
test-kafka: build kafka-broker
	$(PY) -m pytest -q -m kafka

## bench-smoke: every part of the benchmark at tiny sizes, every round trip checked
## (part of `make test`; the report goes to a temp dir). torch: ZipNN, a peer, imports it
bench-smoke: build torch kafka-broker
	$(PY) benches/bench.py --smoke
	$(PY) benches/abi3.py --smoke

## bench-abi3: the abi3 extension against the same code built for the full API (a second
## release build, about 3 min, in target/full-api); writes benches/results/abi3/
bench-abi3: build
	$(PY) benches/abi3.py

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
test: lint test-rust test-python test-sdist bench-smoke fuzz-smoke

## attacks: the hostile-client suite as a report (benches/results/attacks.md)
attacks: build
	$(PY) tests/hostile_clients.py --out benches/results/attacks.md

## bench: every part of the benchmark at full size (about 21 min on 2 cores); rewrites
## benches/results/ (report.md, results.json, plots). Parts: benches/README.md
bench: build torch kafka-broker
	$(PY) benches/bench.py

clean:
	rm -rf $(VENV) .venv-wheel .venv-wheel-py39 .venv-sdist target dist
