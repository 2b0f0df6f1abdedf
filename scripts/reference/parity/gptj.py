"""Parity cases of `gptj`: python gptj.py OUT_DIR.

gptj (GPT-J): attention and MLP side by side from one LayerNorm, traditional (interleaved) RoPE
of base 10000 on the first `rotary_dim` features of each head (0: all of them), bias-free
attention projections, a `4 * n_embd` tanh-gelu MLP with biases, a head with a bias. The
reference's sanitize reads the Hugging Face layout (`transformer.*`, with the attention's
`bias` and `masked_bias` buffers), so one case is saved in it.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "parallel block, partial / whole-head traditional RoPE, head with a bias, Hugging Face layout with attention buffers, 4-bit"

BASE = {
    "model_type": "gptj",
    "n_embd": 64,
    "vocab_size": 256,
    "layer_norm_epsilon": 1e-5,
    "n_positions": 64,
    "n_head": 4,
    "rotary_dim": 8,
    "n_layer": 2,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' GPTJForCausalLM layout: `transformer.*`, and each attention's causal-mask
    and masked-bias buffers."""
    out = {k.replace("model.", "transformer.", 1): v for k, v in weights.items()}
    n = config["n_positions"]
    for i in range(config["n_layer"]):
        out[f"transformer.h.{i}.attn.bias"] = mx.tril(mx.ones((n, n), dtype=mx.bool_)).reshape(1, 1, n, n)
        out[f"transformer.h.{i}.attn.masked_bias"] = mx.array(-1e9)
    return out


CASES = [
    {"name": "partial_rotary", "config": BASE},
    {"name": "whole_head_rotary", "config": {**BASE, "rotary_dim": 0, "n_layer": 3, "layer_norm_epsilon": 1e-6}},
    {"name": "hf_layout", "config": {**BASE, "rotary_dim": 4, "n_head": 8}, "hf_layout": hf_layout},
    {"name": "quantized", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
