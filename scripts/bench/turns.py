"""Benchmark: turn 2 of a conversation on a model with recurrent state, against the reference.

    .venv-ref/bin/python scripts/bench/turns.py [--suite mamba2|qwen3_next] [--turn1 1024]
        [--turn2 32] [--tokens 16] [--repeat 2]

Turn 1 (`--turn1` prompt tokens) has been processed; turn 2 adds `--turn2` tokens. Ours
continues from turn 1's state saved by `cache-prompt` (`generate --prompt-cache-file`: only the
new tokens are fed). The reference's server and speculative paths cannot go back into an
arrays cache, so where a prefix must be reused from a longer cached conversation it recomputes
the whole prompt: that is its figure here (`generate` over turn 1 + turn 2). Its own
prompt-cache file, which continues exactly at the file's end as ours does, is shown too.
Prints the time to the first token of turn 2 (prompt time, best of `--repeat` fresh processes)
and the greedy tokens' agreement. Not a test: timings depend on the machine. The checkpoints
are compare.py's suites (made once under target/bench/).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

REFERENCE = r"""
import json, sys, time
from pathlib import Path
import mlx.core as mx
sys.path.insert(0, sys.argv[7])
import compat  # quantized experts on the pinned MLX
from mlx_lm.utils import load_model
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache, load_prompt_cache, save_prompt_cache

path, turn1, turn2, n, mode, file = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
model, config = load_model(path)
mx.eval(model.parameters())
if mode == "save":
    cache = make_prompt_cache(model)
    for i in range(0, len(turn1), 512):
        model(mx.array([turn1[i:i + 512]]), cache=cache)
        mx.eval([c.state for c in cache])
    save_prompt_cache(file, cache)
    sys.exit(0)
if mode == "file":
    cache, prompt = load_prompt_cache(file), turn2
else:
    cache, prompt = make_prompt_cache(model), turn1 + turn2
tic = time.perf_counter()
tokens = []
for i, (token, _) in enumerate(generate_step(mx.array(prompt), model, max_tokens=n, prompt_cache=cache)):
    if i == 0:
        ttft = time.perf_counter() - tic
    tokens.append(int(token))
print(json.dumps({"ttft": ttft, "tokens": tokens}))
"""


def reference(model, turn1, turn2, n, mode, file):
    env = dict(os.environ, LD_PRELOAD=compare.openblas())
    out = subprocess.run([sys.executable, "-c", REFERENCE, str(model), json.dumps(turn1), json.dumps(turn2),
                          str(n), mode, file, str(compare.ROOT / "scripts/reference")],
                         check=True, capture_output=True, text=True, env=env)
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def ours(binary, model, turn2, n, file):
    ids = ",".join(map(str, turn2))
    out = subprocess.run([str(binary), "generate", "--model", str(model), "--prompt-cache-file", file,
                          "--prompt-tokens", ids, "--max-tokens", str(n), "--format", "json"],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    stats = result["stats"]
    return {"ttft": stats["prompt_tokens"] / stats["prompt_tps"], "tokens": result["tokens"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["mamba2", "qwen3_next"], default="qwen3_next")
    parser.add_argument("--turn1", type=int, default=1024)
    parser.add_argument("--turn2", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--float32-only", action="store_true", help="skip the 4-bit checkpoint")
    parser.add_argument("--binary", type=Path, default=compare.ROOT / "target/release/mlx-models")
    args = parser.parse_args()
    if args.binary == compare.ROOT / "target/release/mlx-models":
        subprocess.run(["cargo", "build", "--release", "-p", "mlx-models-cli", "--bin", "mlx-models"],
                       check=True, cwd=compare.ROOT)
    models = compare.make_checkpoints(compare.ROOT / "target/bench", args.suite)
    for model in models[:1] if args.float32_only else models:
        vocab = json.loads((model / "config.json").read_text())["vocab_size"]
        turn1 = [(i * 7919 + 13) % vocab for i in range(args.turn1)]
        turn2 = [(i * 104729 + 7) % vocab for i in range(args.turn2)]
        with tempfile.TemporaryDirectory() as tmp:
            ours_file, ref_file = os.path.join(tmp, "ours.safetensors"), os.path.join(tmp, "ref.safetensors")
            subprocess.run([str(args.binary), "cache-prompt", "--model", str(model), "--prompt-tokens",
                            ",".join(map(str, turn1)), "--out", ours_file], check=True, capture_output=True)
            reference(model, turn1, turn2, args.tokens, "save", ref_file)
            runs = {"ours": [], "recompute": [], "file": []}
            for _ in range(args.repeat):
                runs["ours"].append(ours(args.binary, model, turn2, args.tokens, ours_file))
                runs["recompute"].append(reference(model, turn1, turn2, args.tokens, "recompute", ""))
                runs["file"].append(reference(model, turn1, turn2, args.tokens, "file", ref_file))
        best = {k: min(r["ttft"] for r in v) for k, v in runs.items()}
        same = runs["ours"][0]["tokens"] == runs["recompute"][0]["tokens"] == runs["file"][0]["tokens"]
        print(f"\n{model.name}: turn 1 of {args.turn1} tokens cached, turn 2 of {args.turn2} tokens, "
              f"best of {args.repeat} (greedy tokens identical: {same})")
        print(f"  time to the first token of turn 2: ours {best['ours']:.3f} s; mlx-lm recomputing "
              f"{best['recompute']:.3f} s ({best['recompute'] / best['ours']:.1f}x ours); mlx-lm from its "
              f"prompt-cache file {best['file']:.3f} s ({best['file'] / best['ours']:.2f}x ours)")


if __name__ == "__main__":
    main()
