"""Parity cases of `ministral3`: python ministral3.py OUT_DIR.

ministral3 is llama's layer with sliding-window layers from `layer_types` and Llama 4's query
scaling by position (`1 + beta * ln(1 + floor(p / original))` after RoPE), everything about
RoPE read from `rope_parameters`. `original_max_position_embeddings` is small (4 and 8) so that
the scaling changes along the prompt (20 tokens) and the continuation; the windows (6) are
shorter than the prompt. The Hugging Face layout carries rotary buffers and Ministral 3's
per-tensor FP8 scales (`weight_scale_inv`, `activation_scale`), here on float weights, which
the reference's sanitize multiplies back.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "Llama 4 query scaling by position, sliding-window layers, RoPE from rope_parameters (default and yarn), explicit head_dim, tied and untied head, Hugging Face layout with rotary buffers and per-tensor FP8 scales, 4-bit"

BASE = {
    "model_type": "ministral3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "llama_4_scaling_beta": 0.1,
        "original_max_position_embeddings": 4,
    },
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128, 11, 200, 77, 8, 19, 140, 66, 2]

SLIDING = {
    **BASE,
    "num_hidden_layers": 3,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    "sliding_window": 6,
    "tie_word_embeddings": False,
    "head_dim": 32,
    "rope_parameters": {
        "rope_type": "yarn",
        "type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": 0.5,
        "original_max_position_embeddings": 8,
    },
}


def hf_layout(weights, config):
    """Rotary buffers beside each attention, and every projection as a weight over its
    per-tensor scale with the scale as `weight_scale_inv` (and an `activation_scale`), as
    Ministral 3's FP8 releases name them."""
    out = {}
    for key, value in weights.items():
        if key.endswith("_proj.weight"):
            scale = mx.max(mx.abs(value)) / 448.0
            prefix = key[: -len(".weight")]
            out[key] = value / scale
            out[f"{prefix}.weight_scale_inv"] = scale
            out[f"{prefix}.activation_scale"] = mx.array(1.0)
        else:
            out[key] = value
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = mx.arange(0, head_dim, 2, dtype=mx.float32)
    return out


CASES = [
    {"name": "tied_full_layers", "config": BASE},
    {"name": "sliding_yarn_untied_head_dim", "config": SLIDING},
    {"name": "hf_layout", "config": {**BASE, "tie_word_embeddings": False}, "hf_layout": hf_layout},
    {"name": "4bit", "config": SLIDING, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
