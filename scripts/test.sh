#!/usr/bin/env bash
# Runs every test of mlx-models on a fresh Debian 12 machine (run as root): installs what is
# needed, builds, checks that every binary linking MLX links OpenBLAS, and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLX_MODELS_REF_PYTHON="$PWD/.venv-ref/bin/python"

# One build, no incremental caches (they are only worth their gigabytes when rebuilding), and
# the workspace's debug-info setting (file:line tables) also for the crates trybuild compiles
# in its own project, which has no profile of ours: with full debug info the UI tests alone
# wrote 2.6 GB. A CI machine's disk is small.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
disk() { echo "disk: target $(du -sh target 2>/dev/null | cut -f1), $(df -h --output=avail . | tail -1 | tr -d ' ') free ($1)"; }

# Build what `cargo test` runs (test executables, examples) and the CLI the tests call, and
# list the executables cargo produced; the test run below builds nothing more.
mkdir -p target
disk "before the build"
cargo test --workspace --no-run --message-format=json-render-diagnostics > target/build-messages.json
cargo build --workspace --bins --message-format=json-render-diagnostics >> target/build-messages.json
mapfile -t executables < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])
' target/build-messages.json)
disk "after the build"
bash scripts/check-openblas.sh "${executables[@]}"

set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e

# Two checks besides the tests, each one line in the log and one count in the summary.
extra_passed=0
extra_failed=0
check() { # NAME STATUS SECONDS
  if [ "$2" -eq 0 ]; then
    extra_passed=$((extra_passed + 1))
    echo "check $1 ... ok (${3}s)" | tee -a target/test-output.log
  else
    extra_failed=$((extra_failed + 1))
    status=1
    echo "check $1 ... FAILED (exit $2, ${3}s)" | tee -a target/test-output.log
  fi
}

# The API docs: every public item documented (the crates warn on missing docs), no broken
# links; warnings are errors. Libraries only: the `mlx-models` binary would collide with the
# `mlx_models` library's page.
SECONDS=0
set +e
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --lib 2>&1 | tee -a target/test-output.log
doc_status=${PIPESTATUS[0]}
set -e
check "docs (cargo doc, warnings denied)" "$doc_status" "$SECONDS"

# examples/downstream: a crate outside the workspace, as a user's would be, built with the
# workspace's Cargo.lock in the same target folder so that the crates.io dependencies built
# above are reused (the repository's own crates and mlx-rs are compiled once more: cargo keys a
# path dependency by its place relative to the workspace root). Run outside cargo, it finds
# libmlx through its rpath and checks its results itself.
SECONDS=0
set +e
(
  set -e
  cp Cargo.lock examples/downstream/Cargo.lock
  export CARGO_TARGET_DIR="$PWD/target"
  cargo build --manifest-path examples/downstream/Cargo.toml
  bash scripts/check-openblas.sh target/debug/mlx-models-downstream
  # Five runs, each with a time limit: its last step stops at an end-of-sequence token on a
  # float32 model and exits right after, which used to hang now and then.
  for run in 1 2 3 4 5; do
    timeout -s KILL 300 target/debug/mlx-models-downstream
  done
) 2>&1 | tee -a target/test-output.log
example_status=${PIPESTATUS[0]}
set -e
check "examples/downstream (build and run 5 times)" "$example_status" "$SECONDS"

# A short pass of the exit stress script (500 runs and more are for by hand): the command
# stopping at an end-of-sequence token, and mlx-rs alone exiting with work in flight.
SECONDS=0
set +e
(
  set -e
  bash scripts/stress-exit.sh --no-build -n 30 -t 60
  bash scripts/stress-exit.sh --no-build -n 30 -t 60 --mode async
) 2>&1 | tee -a target/test-output.log
stress_status=${PIPESTATUS[0]}
set -e
check "exit stress, short pass (scripts/stress-exit.sh)" "$stress_status" "$SECONDS"

disk "at the end"

# One closing line over every test binary (cargo prints one per binary, the doc tests last)
# and the checks above.
python3 -c '
import re, sys
passed, failed, ignored = int(sys.argv[2]), int(sys.argv[3]), 0
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        passed += int(m.group(1)); failed += int(m.group(2)); ignored += int(m.group(3))
line = f"summary: {passed} passed, {failed} failed, {ignored} skipped"
if int(sys.argv[4]) != 0 and failed == 0:
    # A target that did not build (a doc test, say) prints no result line of its own.
    line += f"; but the run failed (exit {sys.argv[4]}): see the errors above"
print(line)
' target/test-output.log "$extra_passed" "$extra_failed" "$status"
exit "$status"
