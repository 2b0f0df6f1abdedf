#!/usr/bin/env bash
# Runs a process that stops generating at an end-of-sequence token back to back, N times, as
# a piped child with a time limit, and reports how many exited and how many hung. The model is
# a float32 llama made here (about 250 MB, large enough that OpenBLAS uses its threads), not
# downloaded. Exit status 1 when any run hung or failed.
#
#   scripts/stress-exit.sh [-n RUNS] [-t SECONDS] [--mode MODE] [--cli PATH] [--no-build]
#
# MODE: `cli` (default): `mlx-models generate` on the model, stopping at its end token;
#       `stream`: the library API (model_stream) in a program of its own;
#       `stream-no-drain`: the same with mlx-sys's exit drain off (only the token stream's own
#       guarantee keeps the exit clean);
#       `async`: mlx-rs alone, products queued with async_eval, exit without waiting (the exit
#       drain's case); `async-no-drain`: the same with the drain off (expected to hang).
# --cli PATH runs another build of the command (for instance one from before a fix).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=500
limit=30
mode=cli
cli=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -t) limit="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --cli) cli="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "error: unknown argument \`$1\`" >&2; exit 2 ;;
  esac
done
case "$mode" in
  cli | stream | stream-no-drain | async | async-no-drain) ;;
  *) echo "error: unknown --mode \`$mode\`" >&2; exit 2 ;;
esac

target="${CARGO_TARGET_DIR:-target}"
if [ "$build" = 1 ]; then
  cargo build -q -p mlx-models-cli
  cargo build -q -p mlx-models-tests --example exit_check
fi
cli="${cli:-$target/debug/mlx-models}"
helper="$target/debug/examples/exit_check"

model="$target/stress-exit-model"
if [ ! -f "$model/config.json" ] || ! grep -q eos_token_id "$model/config.json"; then
  "$helper" make "$model" > "$target/stress-exit-model.json"
fi
echo "model: $model, $(cat "$target/stress-exit-model.json" 2>/dev/null || echo '(made earlier)')"

case "$mode" in
  cli) cmd=("$cli" generate --model "$model" --prompt-tokens 1,2,3,4 --max-tokens 64 --format json) ;;
  stream) cmd=("$helper" stream "$model") ;;
  stream-no-drain) cmd=("$helper" stream "$model" --no-exit-drain) ;;
  async) cmd=("$helper" async) ;;
  async-no-drain) cmd=("$helper" async --no-exit-drain) ;;
esac

exited=0
hung=0
failed=0
SECONDS=0
for i in $(seq 1 "$runs"); do
  # Standard output and error piped, as a caller reading the output would; the subshell
  # keeps bash's own "Killed" notices out of the report.
  set +e
  (timeout -s KILL "$limit" "${cmd[@]}" 2>&1 | cat > /dev/null; exit "${PIPESTATUS[0]}") 2> /dev/null
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    exited=$((exited + 1))
  elif [ "$rc" -eq 137 ] || [ "$rc" -eq 124 ]; then
    hung=$((hung + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "stress-exit ($mode): $runs runs in ${SECONDS}s: $exited exited, $hung hung (killed after ${limit}s), $failed failed"
[ "$hung" -eq 0 ] && [ "$failed" -eq 0 ]
