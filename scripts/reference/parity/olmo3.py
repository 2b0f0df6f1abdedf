"""Parity cases of `olmo3`: python olmo3.py OUT_DIR.

olmo3 is olmo2's layer (q/k norms over the whole projections, post-norms) with sliding-window
layers: by default every fourth layer attends to everything, the others to the last
`sliding_window` positions through a rotating cache, with plain RoPE; the full layers take the
RoPE scaling. The prompt (20 tokens) is longer than the windows (6 and 5). The reference has
no sanitize, hence no Hugging Face layout case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "q/k norms over the whole projection, post-norms, sliding-window layers (default and listed), yarn RoPE on the full layers only, biases, explicit head_dim, tied and untied head, 4-bit"

BASE = {
    "model_type": "olmo3",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "sliding_window": 6,
    "rope_theta": 500000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128, 11, 200, 77, 8, 19, 140, 66, 2]

CASES = [
    {"name": "untied_default_layer_types", "config": BASE},
    {"name": "tied_listed_yarn_bias_head_dim", "config": {
        **BASE, "tie_word_embeddings": True, "attention_bias": True, "head_dim": 24, "sliding_window": 5,
        "num_hidden_layers": 3, "layer_types": ["full_attention", "sliding_attention", "full_attention"],
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}}},
    {"name": "4bit", "config": {**BASE, "num_key_value_heads": None}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
