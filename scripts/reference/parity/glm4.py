"""Parity cases of `glm4`: python glm4.py OUT_DIR.

glm4 (GLM-4-0414): four RMS norms per layer, RoPE on `partial_rotary_factor` of each head
(interleaved by default), optional q/k/v biases, a fused `gate_up_proj`, an untied head. The
reference has no sanitize: Hugging Face checkpoints are in its layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "four norms per layer, partial rotary (interleaved or halves), fused gate_up_proj, q/k/v biases, 4-bit"

BASE = {
    "model_type": "glm4",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "attention_bias": True,
    "partial_rotary_factor": 0.5,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "partial_rotary", "config": BASE},
    {"name": "full_rotary_halves", "config": {**BASE, "attention_bias": False, "partial_rotary_factor": 1.0,
                                              "rope_traditional": False, "head_dim": 16, "num_hidden_layers": 3}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
