#!/usr/bin/env bash
# Runs every test of mlx-models on a fresh Debian 12 machine (run as root): installs what is
# needed, builds, and runs the whole test suite and the documentation build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLX_MODELS_REF_PYTHON="$PWD/.venv-ref/bin/python"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
