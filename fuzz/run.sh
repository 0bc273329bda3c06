#!/usr/bin/env bash
# Build every fuzz target once, then run each for SECONDS on its corpus.
#
#   fuzz/run.sh SECONDS [TARGET...]   fuzz (all targets by default); exit 1 if any crashed
#   fuzz/run.sh --regressions         run every saved crash input once (fuzz/regressions/)
#                                     and list which still fail; exit 1 if any does
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Targets are built with optimisations, AddressSanitizer and debug assertions (so
# arithmetic overflow panics). Seeds come from fuzz/corpus/<target>/ (committed, only
# read here), the dictionary from fuzz/dict/tensorwire.dict; what libFuzzer finds goes
# to fuzz/corpus-work/<target>/, crash inputs and logs to fuzz/artifacts/ (both
# gitignored). Environment: FUZZ_RSS_MB (2048), FUZZ_MALLOC_MB (512: the targets
# themselves allocate at most 64 MiB per tensor), FUZZ_TIMEOUT (10 s per input),
# FUZZ_ARGS (more libFuzzer flags).
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(parse codec_decode codec_roundtrip reassemble aggregate open_sealed)
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage

mode=fuzz
if [ "$1" = --regressions ]; then
  mode=regressions
  shift
elif [[ "$1" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
else
  usage
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

if ! rustc +nightly -V >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --locked (about 2 minutes)" >&2
  exit 2
fi
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')
BIN=fuzz/target/$TRIPLE/release
RSS=${FUZZ_RSS_MB:-2048}
MALLOC=${FUZZ_MALLOC_MB:-512}
TIMEOUT=${FUZZ_TIMEOUT:-10}
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"

start=$(date +%s)
if ! cargo +nightly fuzz build -O --debug-assertions; then
  echo "fuzz: build failed" >&2
  exit 1
fi
echo "fuzz: built in $(( $(date +%s) - start )) s"

failed=()
for t in "${targets[@]}"; do
  if [ ! -x "$BIN/$t" ]; then
    echo "fuzz: no target $t (known: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
  flags=(-rss_limit_mb="$RSS" -malloc_limit_mb="$MALLOC" -timeout="$TIMEOUT")
  if [ $mode = regressions ]; then
    shopt -s nullglob
    for f in fuzz/regressions/"$t"/*; do
      if "$BIN/$t" "${flags[@]}" "${EXTRA[@]}" "$f" >/tmp/fuzz-regression.log 2>&1; then
        echo "fixed:   $f"
      else
        echo "FAILS:   $f  ($(grep -m1 -E 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer' /tmp/fuzz-regression.log | cut -c1-160))"
        failed+=("$f")
      fi
    done
    shopt -u nullglob
    continue
  fi
  mkdir -p "fuzz/corpus-work/$t" "fuzz/artifacts/$t"
  t0=$(date +%s)
  echo "fuzz: $t for $seconds s"
  "$BIN/$t" "${flags[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -dict=fuzz/dict/tensorwire.dict \
    -artifact_prefix="fuzz/artifacts/$t/" "${EXTRA[@]}" \
    "fuzz/corpus-work/$t" "fuzz/corpus/$t" >"fuzz/artifacts/$t.log" 2>&1
  rc=$?
  grep -E '(DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "fuzz/artifacts/$t.log" | sed "s/^/  $t: /"
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $rc) after $(( $(date +%s) - t0 )) s; log: fuzz/artifacts/$t.log" >&2
    grep -m3 -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY' "fuzz/artifacts/$t.log" | sed 's/^/    /' >&2
    grep -m1 -E '^artifact_prefix|Test unit written to' "fuzz/artifacts/$t.log" | sed 's/^/    /' >&2
    failed+=("$t")
  fi
done

echo "fuzz: done in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failing: ${failed[*]}" >&2
  exit 1
fi
