"""Parity cases of `granite`: python granite.py OUT_DIR. Every case has non-trivial
multipliers (embeddings x12, attention scale 1/128, residual branches x0.22, logits / 8)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "embedding, attention, residual and logits multipliers"

BASE = {
    "model_type": "granite",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "embedding_multiplier": 12.0,
    "attention_multiplier": 0.0078125,
    "residual_multiplier": 0.22,
    "logits_scaling": 8.0,
    "attention_bias": False,
    "mlp_bias": False,
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
    {"name": "tied_biases", "config": {**BASE, "tie_word_embeddings": True, "attention_bias": True,
                                        "mlp_bias": True}},
    {"name": "hf_layout_tied", "config": {**BASE, "tie_word_embeddings": True}, "hf_layout": hf_layout},
    {"name": "linear_rope", "config": {**BASE, "tie_word_embeddings": False,
                                        "rope_scaling": {"type": "linear", "factor": 2.0}}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
