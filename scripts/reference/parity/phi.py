"""Parity cases of `phi`: python phi.py OUT_DIR.

phi (Phi-1, Phi-1.5, Phi-2): attention and MLP side by side from one LayerNorm, RoPE on
`partial_rotary_factor` of each head, biases on every projection, a tanh-gelu `fc1` / `fc2`
MLP, the attention's queries in float32, a head with a bias. The reference has no sanitize, so
the checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "parallel block, partial rotary, float32 queries, grouped-query heads, head with a bias, 4-bit"

BASE = {
    "model_type": "phi",
    "max_position_embeddings": 64,
    "vocab_size": 256,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "partial_rotary_factor": 0.5,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "partial_rotary", "config": BASE},
    {"name": "gqa_phi2_rotary", "config": {**BASE, "num_key_value_heads": 2, "partial_rotary_factor": 0.4,
                                           "hidden_size": 80, "num_attention_heads": 4, "num_hidden_layers": 3,
                                           "layer_norm_eps": 1e-6}},
    {"name": "quantized", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
