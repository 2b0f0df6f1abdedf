"""Parity cases of `cohere`: python cohere.py OUT_DIR.

cohere runs attention and the MLP in parallel from one input LayerNorm (without bias unless
`layer_norm_bias`), rotates in the traditional layout, always ties the head to the embeddings
and scales the logits by `logit_scale`; `use_qk_norm` adds per-head LayerNorms (weights of
shape [heads, head_dim], no bias) on queries and keys. The reference has no sanitize, so the
checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "parallel block, per-head q/k LayerNorm, logit scale, 4-bit"

BASE = {
    "model_type": "cohere",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "layer_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def trained_qk_norms(weights, config):
    """The per-head norm weights as a trained checkpoint has them, around one (transformers
    initialises them to ones); the harness only lifts 1-D norm weights to one, and near-zero
    query and key norms would make attention uniform, hiding the RoPE and the norm itself."""
    out = dict(weights)
    for k, v in weights.items():
        if k.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight")):
            out[k] = v + 1.0
    return out


CASES = [
    # `logit_scale` left at its default, 0.0625.
    {"name": "plain", "config": {**BASE}},
    {"name": "qk_norm", "config": {**BASE, "use_qk_norm": True, "logit_scale": 0.5}, "hf_layout": trained_qk_norms},
    {"name": "biases", "config": {**BASE, "attention_bias": True, "layer_norm_bias": True,
                                  "num_key_value_heads": 4, "logit_scale": 0.25}},
    # 4-bit, the quantized embeddings doubling as the head; the per-head norms stay float.
    {"name": "quantized_qk_norm", "config": {**BASE, "use_qk_norm": True, "logit_scale": 0.5},
     "quantize": {"bits": 4, "group_size": 32}, "hf_layout": trained_qk_norms},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
