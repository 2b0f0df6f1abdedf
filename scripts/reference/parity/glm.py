"""Parity cases of `glm`: python glm.py OUT_DIR.

glm (GLM-4 of 2024) is llama with traditional RoPE, optional q/k/v biases (none on o_proj)
and a fused `gate_up_proj`. The reference's sanitize drops rotary buffers and, when the
embeddings are tied, a checkpoint's `lm_head`.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "traditional RoPE, fused gate_up_proj, q/k/v biases, explicit head_dim, tied and untied head, Hugging Face layout (rotary buffers, a tied lm_head), 4-bit"

BASE = {
    "model_type": "glm",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """What transformers saves: rotary buffers in each layer and the tied head's copy."""
    out = dict(weights)
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = mx.ones((8,))
    out["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return out


CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_bias_head_dim", "config": {**BASE, "attention_bias": True, "tie_word_embeddings": False,
                                                "head_dim": 24, "num_hidden_layers": 3, "rope_theta": 500000.0}},
    {"name": "hf_layout", "config": {**BASE, "attention_bias": True}, "hf_layout": hf_layout},
    {"name": "4bit", "config": {**BASE, "attention_bias": True, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
