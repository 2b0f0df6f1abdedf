"""Parity cases of `gpt_neox`: python gpt_neox.py OUT_DIR.

gpt_neox (Pythia, GPT-NeoX-20B): a fused `query_key_value` laid out head by head (each head's
query, key and value features in turn), RoPE on `rotary_pct` of each head, a `4 * hidden`
tanh-gelu MLP, LayerNorms, attention and MLP side by side (`use_parallel_residual`, the
default) or one after the other, an untied head `embed_out`. The reference's sanitize reads the
Hugging Face layout (`gpt_neox.*`, with the attention's buffers), so one case is saved in it.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "head-interleaved fused qkv, partial rotary, parallel / sequential residual, Hugging Face layout with attention buffers, 4-bit"

BASE = {
    "model_type": "gpt_neox",
    "max_position_embeddings": 64,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "layer_norm_eps": 1e-5,
    "vocab_size": 256,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' GPTNeoXForCausalLM layout: `gpt_neox.embed_in`, `gpt_neox.layers.{i}`,
    `gpt_neox.final_layer_norm`, `embed_out` at the top, and each attention's causal-mask,
    masked-bias and rotary-frequency buffers."""
    out = {}
    for key, value in weights.items():
        key = key.removeprefix("model.")
        if key.startswith("h."):
            key = "gpt_neox.layers." + key[2:]
        elif not key.startswith("embed_out."):
            key = "gpt_neox." + key
        out[key] = value
    n = config["max_position_embeddings"]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    dims = int(head_dim * config["rotary_pct"])
    inv_freq = 1.0 / (config["rotary_emb_base"] ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))
    for i in range(config["num_hidden_layers"]):
        prefix = f"gpt_neox.layers.{i}.attention"
        out[f"{prefix}.bias"] = mx.tril(mx.ones((n, n), dtype=mx.bool_)).reshape(1, 1, n, n)
        out[f"{prefix}.masked_bias"] = mx.array(-1e9)
        out[f"{prefix}.rotary_emb.inv_freq"] = inv_freq
    return out


CASES = [
    {"name": "parallel_partial_rotary", "config": BASE},
    {"name": "sequential_full_rotary", "config": {**BASE, "use_parallel_residual": False, "rotary_pct": 1.0,
                                                  "num_hidden_layers": 3, "rotary_emb_base": 500}},
    {"name": "hf_layout", "config": {**BASE, "rotary_pct": 0.5, "layer_norm_eps": 1e-6}, "hf_layout": hf_layout},
    {"name": "quantized", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
