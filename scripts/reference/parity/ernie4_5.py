"""Parity cases of `ernie4_5`: python ernie4_5.py OUT_DIR.

ERNIE 4.5 (dense) is llama with traditional RoPE, an optional `head_dim`, and `use_bias` on
every projection. The reference has no sanitize, so the checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "traditional RoPE, explicit head_dim, biases everywhere, tied and untied head, 4-bit"

BASE = {
    "model_type": "ernie4_5",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": None,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 500000.0,
    "use_bias": False,
    "tie_word_embeddings": True,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_biases_head_dim", "config": {**BASE, "use_bias": True, "tie_word_embeddings": False,
                                                  "head_dim": 24, "num_hidden_layers": 3}},
    {"name": "4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
