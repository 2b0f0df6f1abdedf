"""Parity cases of `gemma`: python gemma.py OUT_DIR.

The reference's gemma has no sanitize and always ties its head, so every case is in the
reference's own layout; the cases vary what changes the math: the head_dim (explicit, unlike
hidden / heads), grouped-query or multi-query heads, a hidden size whose square root (the
embedding scale) is not exact, and the traditional RoPE layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "(1 + w) norms, GeGLU, embedding scale"

BASE = {
    "model_type": "gemma",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "gqa_wide_head_dim", "config": BASE},
    {"name": "multi_query_odd_hidden", "seed": 5, "config": {
        **BASE, "hidden_size": 48, "num_key_value_heads": 1, "head_dim": 16, "num_hidden_layers": 3}},
    {"name": "traditional_rope", "config": {
        **BASE, "num_key_value_heads": 4, "head_dim": 16, "rope_traditional": True, "rope_theta": 500.0}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
