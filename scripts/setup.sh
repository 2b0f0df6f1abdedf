#!/usr/bin/env bash
# Installs everything mlx-models needs on a fresh Debian 12 machine (run as root), then creates
# the reference environment (mlx-lm 0.32.2 on MLX 0.32.2, pinned) that the tests compare with.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ libclang-dev libopenblas0-pthread python3 python3-pip python3-venv pkg-config ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

# The reference: the Python packages the tests' fixtures are made with, every one pinned by hash.
# The stamp is named after the requirements file's hash, so changing a pin rebuilds the venv.
venv=.venv-ref
requirements=scripts/reference-requirements.txt
stamp="$venv/.pinned-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating the reference environment in $venv (mlx-lm 0.32.2)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # --no-deps: the file lists every package, so nothing unhashed comes in; wheels only, since
  # building an sdist would fetch build dependencies that no hash covers.
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps \
    --only-binary=:all: -r "$requirements"
  # A package missing from the file would otherwise only show up as an ImportError in a test.
  if ! broken=$("$venv/bin/pip" check --disable-pip-version-check); then
    echo "setup: $requirements is incomplete: $broken" >&2
    exit 1
  fi
  touch "$stamp"
fi
