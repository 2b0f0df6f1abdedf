"""Parity cases of `lfm2`: python lfm2.py OUT_DIR. Gated short convolutions (arrays cache of
one slot) and attention layers (KV cache) by `full_attn_idxs` or `layer_types`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "gated short convolutions with cached state and attention layers (per-head q/k norms, RoPE) by full_attn_idxs or layer_types, grouped-query heads, conv biases, auto-adjusted feed-forward width, rope_parameters, prefill in chunks of 1, 7 and 64, Hugging Face conv layout, 4-bit"

BASE = {
    "model_type": "lfm2",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "norm_eps": 1e-5,
    "conv_bias": False,
    "conv_L_cache": 3,
    "block_dim": 64,
    "block_ff_dim": 192,
    "block_multiple_of": 32,
    "block_ffn_dim_multiplier": 1.0,
    "block_auto_adjust_ff_dim": True,
    "full_attn_idxs": [1, 3],
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(80)]


def hf_layout(weights, config):
    """transformers' layout: depthwise conv filters as [C, 1, K]."""
    return {k: (v.moveaxis(2, 1) if k.endswith("conv.conv.weight") else v) for k, v in weights.items()}


CASES = [
    {"name": "attn_idxs", "config": BASE},
    {"name": "layer_types_biases", "config": {**{k: v for k, v in BASE.items() if k != "full_attn_idxs"},
                                              "layer_types": ["conv", "conv", "full_attention", "conv"],
                                              "conv_bias": True, "num_key_value_heads": 4,
                                              "block_auto_adjust_ff_dim": False, "block_ff_dim": None,
                                              "intermediate_size": 96,
                                              "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}},
    {"name": "hf_layout_long_prompt", "config": {**BASE, "conv_L_cache": 4, "block_ffn_dim_multiplier": 1.5},
     "hf_layout": hf_layout, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "quantized_4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
