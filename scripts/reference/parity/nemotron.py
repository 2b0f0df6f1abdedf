"""Parity cases of `nemotron`: python nemotron.py OUT_DIR.

nemotron: `1 + weight` LayerNorms with biases, RoPE on `partial_rotary_factor` of each head
(linear scaling at most), an ungated relu² MLP, optional attention and MLP biases. The
reference has no sanitize, so the checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "relu² MLP, (1 + w) LayerNorms with bias, partial rotary, linear RoPE scaling, attention and MLP biases, tied and untied head, 4-bit"

BASE = {
    "model_type": "nemotron",
    "hidden_size": 64,
    "hidden_act": "relu2",
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "norm_eps": 1e-5,
    "vocab_size": 256,
    "partial_rotary_factor": 0.5,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_biases_linear_rope", "config": {**BASE, "tie_word_embeddings": True, "attention_bias": True,
                                                   "mlp_bias": True, "head_dim": 24, "num_hidden_layers": 3,
                                                   "partial_rotary_factor": 0.75,
                                                   "rope_scaling": {"type": "linear", "factor": 2.0}}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
