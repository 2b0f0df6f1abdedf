#!/usr/bin/env bash
# Runs every test of mlx-models on a fresh Debian 12 machine (run as root): installs what is
# needed, builds, checks that every binary linking MLX links OpenBLAS, and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLX_MODELS_REF_PYTHON="$PWD/.venv-ref/bin/python"

# Build everything (tests, examples, the CLI) and list the executables cargo produced.
mkdir -p target
cargo build --workspace --all-targets --message-format=json-render-diagnostics > target/build-messages.json
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
bash scripts/check-openblas.sh "${executables[@]}"

set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary, the doc tests last).
python3 -c '
import re, sys
passed = failed = ignored = 0
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        passed += int(m.group(1)); failed += int(m.group(2)); ignored += int(m.group(3))
print(f"summary: {passed} passed, {failed} failed, {ignored} skipped")
' target/test-output.log
exit "$status"
