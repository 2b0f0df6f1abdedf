#!/usr/bin/env bash
# Fuzzes the parsers a user controls (config.json, safetensors headers, GGUF headers and
# metadata, tokenizer files, chat templates) with `tests/examples/fuzz.rs`, a mutation loop on
# stable Rust, and prints one summary line per target:
#   fuzz <target>: N inputs, K crashes, H hangs, peak allocation X MB, T s
# Exit status 1 when any input panicked, ran longer than the hang limit or allocated more than
# 1 GiB; the inputs are saved under target/fuzz-crashes/ (replay one with
# `<fuzz binary> <target> --replay FILE`).
#
#   scripts/fuzz.sh [-n N] [--seed S] [--targets "config gguf ..."] [--max-seconds S]
#   scripts/fuzz.sh --short [--no-build]
#
# The full run builds in release (which keeps overflow checks, so that an arithmetic overflow
# on input is a crash rather than a silent wrap) and runs N inputs per target (default
# 1000000). `--max-seconds S` stops each target after S seconds (for the slow
# ones). `--short` is the pass for CI: 2000 inputs per target on the debug build (the one that
# `cargo test --workspace --no-run` makes; `--no-build` uses it as it is), with a hang limit of
# 10 s since that build's crates of this workspace are not optimized.
set -euo pipefail
cd "$(dirname "$0")/.."

n=1000000
seed=1
short=0
build=1
targets="config safetensors gguf tokenizer chat-template"
max_seconds=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --targets) targets="$2"; shift 2 ;;
    --max-seconds) max_seconds="$2"; shift 2 ;;
    --short) short=1; shift ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "error: unknown argument \`$1\`" >&2; exit 2 ;;
  esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$short" = 1 ]; then
  [ "$n" = 1000000 ] && n=2000
  hang_ms=10000
  bin="$target_dir/debug/examples/fuzz"
  if [ "$build" = 1 ]; then
    cargo build -q -p mlx-models-tests --example fuzz
  fi
else
  hang_ms=1000
  bin="$target_dir/release/examples/fuzz"
  if [ "$build" = 1 ]; then
    cargo build -q --release -p mlx-models-tests --example fuzz
  fi
fi
if [ ! -x "$bin" ]; then
  echo "error: $bin is not built (run without --no-build)" >&2
  exit 2
fi

status=0
start=$SECONDS
for t in $targets; do
  "$bin" "$t" --iterations "$n" --seed "$seed" --hang-ms "$hang_ms" --max-seconds "$max_seconds" \
    || status=1
done
echo "fuzz: $(echo "$targets" | wc -w) targets in $((SECONDS - start)) s, $([ $status = 0 ] && echo "no failures" || echo "FAILURES (inputs in target/fuzz-crashes/)")"
exit $status
