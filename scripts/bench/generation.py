"""Benchmark of the generation features against the reference (mlx-lm 0.32.2) on the same
checkpoints and prompts: speculative decoding and batch generation. Not a test.

    .venv-ref/bin/python scripts/bench/generation.py [--tokens 128] [--prompt 128]
        [--batches 1,4,16] [--repeat 2]

It makes (once, cached in target/bench/) a float32 llama of about 300M parameters (24 layers of
1024, a tied vocabulary of 16000, random weights) and its draft: the same model cut to its first
two layers (about 40M). So that the draft agrees with the target often, as a trained draft
would, the target's layers after the first two write little into the residual stream (their
output projections are scaled down); they cost the same to run. Then, best of `--repeat` fresh processes per figure:

- speculative: `mlx-models generate --draft-model` (3 draft tokens) against the reference's
  `speculative_generate_step`, and both sides without a draft: generation tokens/s, the share of
  drafted tokens accepted, and whether the greedy tokens are the same everywhere;
- batch: `mlx-models generate --prompts-file` with 1, 4 and 16 prompts against the reference's
  `batch_generate`: generated tokens/s over the batch.

Ours is `target/release/mlx-models` (built first); the reference runs with OpenBLAS preloaded,
as in compare.py.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, openblas  # noqa: E402

TARGET = {
    "model_type": "llama",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-5,
    "vocab_size": 16000,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
}
DRAFT_LAYERS = 2
LATE_SCALE = 0.02

REFERENCE = r"""
import json, sys, time
from pathlib import Path
import mlx.core as mx
from mlx_lm.utils import load_model
from mlx_lm.generate import generate_step, speculative_generate_step, batch_generate

mode, target, draft, prompt_len, n, rows = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
model, config = load_model(target)
vocab = config["vocab_size"]
prompts = [[(i * 7919 + 13 + 101 * r) % vocab for i in range(prompt_len)] for r in range(rows)]
if mode == "batch":
    class Tok:  # batch_generate reads only these
        eos_token_ids = []
        def decode(self, ids):
            return ""
    out = batch_generate(model, Tok(), prompts, max_tokens=n, return_token_ids=True)
    print(json.dumps({"generation_tps": out.stats.generation_tps, "tokens": out.token_ids}))
    sys.exit()
prompt = mx.array(prompts[0], dtype=mx.uint32)
if mode == "speculative":
    d, _ = load_model(Path(draft))
    steps = speculative_generate_step(prompt, model, d, num_draft_tokens=3, max_tokens=n)
else:
    steps = ((t, l, False) for t, l in generate_step(prompt, model, max_tokens=n))
tic = time.perf_counter()
tokens, drafted = [], 0
for i, (t, _, from_draft) in enumerate(steps):
    if i == 0:
        tic = time.perf_counter()
    tokens.append(int(t))
    drafted += bool(from_draft)
tps = (len(tokens) - 1) / (time.perf_counter() - tic)
print(json.dumps({"generation_tps": tps, "tokens": tokens, "accepted": drafted}))
"""


def make_checkpoints(out: Path) -> tuple:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import _get_classes, load_model, save_config, save_model

    target, draft = out / "llama-300m-draftable", out / "llama-300m-draftable-draft"
    if not (target / "config.json").exists():
        model_class, args_class = _get_classes(TARGET)
        model = model_class(args_class.from_dict(TARGET))
        mx.random.seed(0)
        def scale(k):
            late = k.startswith("model.layers.") and int(k.split(".")[2]) >= DRAFT_LAYERS
            return 0.02 * (LATE_SCALE if late and k.endswith(("o_proj.weight", "down_proj.weight")) else 1.0)
        params = [(k, mx.random.normal(v.shape) * scale(k) if v.ndim > 1 else v)
                  for k, v in tree_flatten(model.parameters())]
        model.update(tree_unflatten(params))
        mx.eval(model.parameters())
        save_model(target, model)
        save_config(dict(TARGET), target / "config.json")
    if not (draft / "config.json").exists():
        model, _ = load_model(target)
        weights = {k: v for k, v in tree_flatten(model.parameters())
                   if not k.startswith("model.layers.") or int(k.split(".")[2]) < DRAFT_LAYERS}
        config = {**TARGET, "num_hidden_layers": DRAFT_LAYERS}
        model_class, args_class = _get_classes(config)
        small = model_class(args_class.from_dict(config))
        small.load_weights(list(weights.items()))
        save_model(draft, small)
        save_config(config, draft / "config.json")
    return target, draft


def prompt_ids(vocab: int, n: int, row: int) -> list:
    return [(i * 7919 + 13 + 101 * row) % vocab for i in range(n)]


def ours(binary: Path, args: list) -> dict:
    out = subprocess.run([str(binary), "generate", "--quiet", *args], check=True,
                         capture_output=True, text=True)
    return out


def run_reference(mode: str, target: Path, draft: Path, prompt: int, n: int, rows: int) -> dict:
    env = {"LD_PRELOAD": openblas(), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", REFERENCE, mode, str(target), str(draft), str(prompt), str(n),
                          str(rows)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/mlx-models")
    args = parser.parse_args()
    if args.binary == ROOT / "target/release/mlx-models":
        subprocess.run(["cargo", "build", "--release", "-p", "mlx-models-cli", "--bin", "mlx-models"],
                       check=True, cwd=ROOT)
    target, draft = make_checkpoints(ROOT / "target/bench")
    vocab = TARGET["vocab_size"]
    prompt = ",".join(map(str, prompt_ids(vocab, args.prompt, 0)))

    print(f"speculative: {args.prompt} prompt tokens, {args.tokens} generated, best of {args.repeat}")
    rows = {}
    for label, extra, mode in [("plain", [], "plain"),
                               ("draft", ["--draft-model", str(draft), "--num-draft-tokens", "3"], "speculative")]:
        o, r = [], []
        for _ in range(args.repeat):
            out = ours(args.binary, ["--model", str(target), "--prompt-tokens", prompt, "--max-tokens",
                                     str(args.tokens), "--format", "json", *extra])
            o.append(json.loads(out.stdout))
            r.append(run_reference(mode, target, draft, args.prompt, args.tokens, 1))
        best_o = max(o, key=lambda x: x["stats"]["generation_tps"])
        best_r = max(r, key=lambda x: x["generation_tps"])
        rows[label] = (best_o, best_r)
        rate = best_o.get("speculative", {}).get("acceptance_rate")
        print(f"  {label:6} ours {best_o['stats']['generation_tps']:8.3f} tok/s   reference "
              f"{best_r['generation_tps']:8.3f} tok/s   ratio {best_o['stats']['generation_tps'] / best_r['generation_tps']:5.2f}x"
              + (f"   accepted {100 * rate:.0f}% (reference {100 * best_r['accepted'] / max(1, len(best_r['tokens']) - 1):.0f}% of tokens)" if rate is not None else ""))
    same = len({json.dumps(x["tokens"]) for pair in rows.values() for x in pair}) == 1
    print(f"  greedy tokens identical on all four runs: {same}")
    print(f"  speedup from the draft: ours {rows['draft'][0]['stats']['generation_tps'] / rows['plain'][0]['stats']['generation_tps']:.2f}x, "
          f"reference {rows['draft'][1]['generation_tps'] / rows['plain'][1]['generation_tps']:.2f}x")

    print(f"\nbatch: {args.prompt} prompt tokens and {args.tokens} generated per prompt, best of {args.repeat}")
    for n in [int(x) for x in args.batches.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "prompts.jsonl"
            file.write_text("".join(json.dumps({"prompt_tokens": prompt_ids(vocab, args.prompt, r)}) + "\n"
                                    for r in range(n)))
            o, r = [], []
            for _ in range(args.repeat):
                out = ours(args.binary, ["--model", str(target), "--prompts-file", str(file), "--max-tokens",
                                         str(args.tokens), "--format", "json", "--batch-size", str(n)])
                line = [ln for ln in out.stderr.splitlines() if ln.startswith("Generation:")][0]
                o.append((float(line.split(",")[1].split()[0]),
                          [json.loads(ln)["tokens"] for ln in out.stdout.splitlines()]))
                r.append(run_reference("batch", target, draft, args.prompt, args.tokens, n))
            best_o = max(o, key=lambda x: x[0])
            best_r = max(r, key=lambda x: x["generation_tps"])
            same = best_o[1] == best_r["tokens"]
            print(f"  {n:3} prompts: ours {best_o[0]:8.3f} tok/s   reference {best_r['generation_tps']:8.3f} tok/s"
                  f"   ratio {best_o[0] / best_r['generation_tps']:5.2f}x   same tokens: {same}")


if __name__ == "__main__":
    main()
