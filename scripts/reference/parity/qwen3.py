"""Parity cases of `qwen3`: python qwen3.py OUT_DIR. Every case has an explicit head_dim (32)
that differs from hidden_size / num_attention_heads (16)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "per-head q/k norms, explicit head_dim, yarn RoPE with one kv head, Hugging Face layout"

BASE = {
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """What transformers saves for a tied model: a redundant `lm_head` (the reference's
    sanitize drops it)."""
    out = dict(weights)
    out.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    return out


CASES = [
    {"name": "untied", "config": {**BASE, "tie_word_embeddings": False}},
    {"name": "tied", "config": {**BASE, "tie_word_embeddings": True}},
    {"name": "hf_layout_tied", "config": {**BASE, "tie_word_embeddings": True}, "hf_layout": hf_layout},
    {"name": "yarn_rope_one_kv_head", "config": {**BASE, "tie_word_embeddings": False, "num_key_value_heads": 1,
                                                  "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                                   "original_max_position_embeddings": 16}}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
