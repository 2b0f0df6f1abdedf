"""Parity cases of `starcoder2`: python starcoder2.py OUT_DIR.

starcoder2: LayerNorms with bias, biases on every attention projection and on the `c_fc` /
`c_proj` gelu MLP (the reference always builds them, whatever `use_bias` says), plain RoPE,
tied or untied head. The reference has no sanitize, so the checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "LayerNorm with bias, gelu MLP, tied / untied"

BASE = {
    "model_type": "starcoder2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "norm_epsilon": 1e-5,
    "vocab_size": 256,
    "rope_theta": 100000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "tied_gqa", "config": {**BASE, "use_bias": True}},
    {"name": "untied", "config": {**BASE, "tie_word_embeddings": False, "num_key_value_heads": 4,
                                  "num_hidden_layers": 3, "norm_epsilon": 1e-6}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
