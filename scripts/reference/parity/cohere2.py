"""Parity cases of `cohere2`: python cohere2.py OUT_DIR.

cohere2 runs cohere's parallel block; every `sliding_window_pattern`-th layer is global (no
RoPE), the others attend to a window of `sliding_window` positions with traditional RoPE.
Windows here are shorter than the prompt, so the rotating caches wrap. The reference has no
sanitize, so the checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "parallel block, sliding-window layers with RoPE and global layers without, wrapping rotating caches, attention and LayerNorm biases, float32 queries in float16, logit scale, 4-bit"

BASE = {
    "model_type": "cohere2",
    "hidden_size": 64,
    "head_dim": 16,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "layer_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
    "sliding_window": 8,
    "sliding_window_pattern": 2,
    "logit_scale": 0.5,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "window8_pattern2", "config": BASE},
    {"name": "window4_pattern3_biases", "config": {**BASE, "sliding_window": 4, "sliding_window_pattern": 3,
                                                   "num_hidden_layers": 4, "attention_bias": True,
                                                   "layer_norm_bias": True, "num_key_value_heads": 4}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
