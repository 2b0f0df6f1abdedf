"""Benchmark: `mlx-models generate` against the reference (mlx-lm 0.32.2) on the same checkpoints,
same prompt tokens, same number of generated tokens, OpenBLAS serving float32 matmuls in both.

    .venv-ref/bin/python scripts/bench/compare.py [--tokens 128] [--prompt 512] [--repeat 3]
        [--suite dense|moe] [--model DIR ...]

Without --model it makes (once, cached in target/bench/) the checkpoints of a suite, with random
weights: `dense` (the default), a float32 Llama of about 200M parameters and its 4-bit version;
`moe`, a qwen3_moe of about 300M parameters (16 experts, 2 per token) in float32 and 4-bit;
`gpt_oss`, a gpt_oss of about 300M (16 experts, 2 per token, sliding and full layers) in
float32 and with mxfp4 experts (its router at 8 bits, as the reference quantizes it);
`deepseek`, a deepseek_v3 of about 300M (latent attention, 16 experts in 4 groups, 2 per
token, a shared expert) in float32 and 4-bit; `mamba2`, a mamba2 of about 300M (40 Mamba2
layers, state 128, no attention) and `qwen3_next`, a qwen3_next of about 300M (9 gated delta
net layers and 3 of attention, 8 experts, 2 per token, a shared expert), each in float32 and
4-bit. For each checkpoint and each side it runs
`--repeat` fresh processes and keeps each figure's best run, then prints a table and the ratios
ours / reference: prompt tokens/s, generation tokens/s (higher is better), load time, peak
memory and the bytes the cache holds after the last token (lower is better). Not a test: timings depend on the machine.

Ours is `target/release/mlx-models` (built first with `cargo build --release`). The reference runs
in a child Python with `LD_PRELOAD` set to OpenBLAS, so that MLX's float32 matmuls go through it as
they do in our binary; its figures are computed the way `mlx_lm.generate.stream_generate` does.
"""

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LLAMA_200M = {
    "model_type": "llama",
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32000,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
}

QWEN3_MOE_300M = {
    "model_type": "qwen3_moe",
    "hidden_size": 1024,
    "num_hidden_layers": 6,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "num_experts": 16,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "moe_intermediate_size": 768,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "vocab_size": 32000,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
}

GPT_OSS_300M = {
    "model_type": "gpt_oss",
    "hidden_size": 1024,
    "num_hidden_layers": 6,
    "intermediate_size": 768,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "num_local_experts": 16,
    "num_experts_per_tok": 2,
    "sliding_window": 128,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32000,
    "rope_theta": 150000.0,
}

DEEPSEEK_V3_300M = {
    "model_type": "deepseek_v3",
    "hidden_size": 1024,
    "num_hidden_layers": 6,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "q_lora_rank": 384,
    "kv_lora_rank": 256,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "moe_intermediate_size": 768,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "rms_norm_eps": 1e-6,
    "vocab_size": 32000,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}

MAMBA2_300M = {
    "model_type": "mamba2",
    "num_heads": 32,
    "head_dim": 64,
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 2048,
    "state_size": 128,
    "num_hidden_layers": 40,
    "layer_norm_epsilon": 1e-5,
    "conv_kernel": 4,
    "n_groups": 1,
    "use_bias": False,
    "use_conv_bias": True,
    "tie_word_embeddings": True,
    "time_step_limit": [0.0, float("inf")],
    "time_step_rank": "auto",
}

QWEN3_NEXT_300M = {
    "model_type": "qwen3_next",
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "intermediate_size": 2816,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "linear_num_value_heads": 16,
    "linear_num_key_heads": 8,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "shared_expert_intermediate_size": 512,
    "mlp_only_layers": [],
    "moe_intermediate_size": 512,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "vocab_size": 32000,
    "rope_theta": 1000000.0,
    "partial_rotary_factor": 0.25,
    "max_position_embeddings": 8192,
    "full_attention_interval": 4,
    "tie_word_embeddings": False,
}

# name, config, and the quantized variant's (mode, group size, bits).
SUITES = {
    "dense": ("llama-200m", LLAMA_200M, ("affine", 64, 4)),
    "moe": ("qwen3-moe-300m", QWEN3_MOE_300M, ("affine", 64, 4)),
    "gpt_oss": ("gpt-oss-300m", GPT_OSS_300M, ("mxfp4", 32, 4)),
    "deepseek": ("deepseek-v3-300m", DEEPSEEK_V3_300M, ("affine", 64, 4)),
    "mamba2": ("mamba2-300m", MAMBA2_300M, ("affine", 64, 4)),
    "qwen3_next": ("qwen3-next-300m", QWEN3_NEXT_300M, ("affine", 64, 4)),
}

REFERENCE = r"""
import json, sys, time
from pathlib import Path
import mlx.core as mx
sys.path.insert(0, sys.argv[4])
import compat  # quantized experts on the pinned MLX
from mlx_lm.utils import load_model
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache

path, prompt_len, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tic = time.perf_counter()
model, config = load_model(path)
mx.eval(model.parameters())
load_seconds = time.perf_counter() - tic
vocab = config["vocab_size"]
prompt = mx.array([(i * 7919 + 13) % vocab for i in range(prompt_len)])
# As stream_generate: prompt time until the first token, then tokens over the time since.
tic = time.perf_counter()
tokens = []
cache = make_prompt_cache(model)
for i, (token, _) in enumerate(generate_step(prompt, model, max_tokens=n, prompt_cache=cache)):
    if i == 0:
        prompt_tps = prompt.size / (time.perf_counter() - tic)
        tic = time.perf_counter()
    tokens.append(int(token))
generation_tps = len(tokens) / (time.perf_counter() - tic)
print(json.dumps({"load_seconds": load_seconds, "prompt_tps": prompt_tps, "generation_tps": generation_tps,
                  "peak_memory_gb": mx.get_peak_memory() / 1e9, "tokens": tokens,
                  "cache_mb": sum(c.nbytes for c in cache) / 1e6}))
"""


def make_checkpoints(out: Path, suite: str) -> list:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model

    name, config, (mode, group_size, bits) = SUITES[suite]
    variant = f"q{bits}" if mode == "affine" else mode
    dense, q4 = out / f"{name}-f32", out / f"{name}-{variant}"
    if not (dense / "config.json").exists() or not (q4 / "config.json").exists():
        model_class, args_class = _get_classes(config)
        model = model_class(args_class.from_dict(config))
        mx.random.seed(0)
        params = [(k, mx.random.normal(v.shape) * 0.02 if v.ndim > 1 else v) for k, v in tree_flatten(model.parameters())]
        model.update(tree_unflatten(params))
        mx.eval(model.parameters())
        save_model(dense, model)
        save_config(dict(config), dense / "config.json")
        model, qconfig = quantize_model(model, dict(config), group_size, bits, mode=mode)
        save_model(q4, model)
        save_config(qconfig, q4 / "config.json")
    return [dense, q4]


def openblas() -> str:
    for name in ("openblas", "openblas64"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    sys.exit("OpenBLAS not found: install libopenblas0-pthread (scripts/setup.sh does)")


def run_ours(binary: Path, model: Path, prompt_len: int, n: int) -> dict:
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    prompt = ",".join(str((i * 7919 + 13) % vocab) for i in range(prompt_len))
    out = subprocess.run(
        [str(binary), "generate", "--model", str(model), "--prompt-tokens", prompt,
         "--max-tokens", str(n), "--format", "json"],
        check=True, capture_output=True, text=True,
    )
    result = json.loads(out.stdout)
    stats = result["stats"]
    return {"load_seconds": result["load_seconds"], "prompt_tps": stats["prompt_tps"],
            "generation_tps": stats["generation_tps"], "peak_memory_gb": stats["peak_memory_bytes"] / 1e9,
            "cache_mb": result["cache_bytes"] / 1e6, "tokens": result["tokens"]}


def run_reference(model: Path, prompt_len: int, n: int) -> dict:
    env = dict(os.environ, LD_PRELOAD=openblas())
    helpers = str(ROOT / "scripts/reference")
    out = subprocess.run([sys.executable, "-c", REFERENCE, str(model), str(prompt_len), str(n), helpers],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(runs: list) -> dict:
    return {
        "load_seconds": min(r["load_seconds"] for r in runs),
        "prompt_tps": max(r["prompt_tps"] for r in runs),
        "generation_tps": max(r["generation_tps"] for r in runs),
        "peak_memory_gb": min(r["peak_memory_gb"] for r in runs),
        "cache_mb": min(r["cache_mb"] for r in runs),
        "median_generation_tps": statistics.median(r["generation_tps"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", type=Path, help="checkpoint folder (repeatable)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per side")
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/mlx-models")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--suite", choices=sorted(SUITES), default="dense",
                        help="checkpoints to make when no --model is given")
    args = parser.parse_args()

    if args.binary == ROOT / "target/release/mlx-models":
        subprocess.run(["cargo", "build", "--release", "-p", "mlx-models-cli", "--bin", "mlx-models"],
                       check=True, cwd=ROOT)
    models = args.model or make_checkpoints(ROOT / "target/bench", args.suite)
    results = []
    for model in models:
        ours, ref = [], []
        for _ in range(args.repeat):  # alternate, so drift in the machine hits both sides
            ours.append(run_ours(args.binary, model, args.prompt, args.tokens))
            ref.append(run_reference(model, args.prompt, args.tokens))
        same = ours[0]["tokens"] == ref[0]["tokens"]
        o, r = best(ours), best(ref)
        results.append({"model": str(model), "ours": o, "reference": r, "same_tokens": same})
        print(f"\n{model.name}: prompt {args.prompt} tokens, {args.tokens} generated, best of {args.repeat}"
              f" (greedy tokens identical: {same})")
        print(f"  {'':22}{'mlx-models':>12}{'mlx-lm':>12}{'ratio':>8}")
        for key, label in [("prompt_tps", "prompt tokens/s"), ("generation_tps", "generation tokens/s"),
                           ("load_seconds", "load s"), ("peak_memory_gb", "peak memory GB"),
                           ("cache_mb", "cache at the end MB")]:
            print(f"  {label:22}{o[key]:12.3f}{r[key]:12.3f}{o[key] / r[key]:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
