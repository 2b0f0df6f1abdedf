"""Parity cases of `exaone4`: python exaone4.py OUT_DIR.

exaone4 has post-norm layers (norms after the attention and after the MLP) with per-head q/k
RMS norms. `sliding_window_pattern` ("LLG" here, repeated) makes its `L` layers attend to
the last `sliding_window` positions (5, with a 20-token prompt) through a rotating cache, with
RoPE, and its `G` layers attend to everything without RoPE; without a pattern every layer is
global with RoPE. The reference has no sanitize, hence no Hugging Face layout case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "post-norms, per-head q/k norms, sliding-window layers and global layers without RoPE from the pattern, no pattern, llama3 and yarn RoPE, explicit head_dim, tied and untied head, 4-bit"

BASE = {
    "model_type": "exaone4",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "rope_scaling": None,
    "sliding_window": 5,
    "sliding_window_pattern": "LLG",
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128, 11, 200, 77, 8, 19, 140, 66, 2]

CASES = [
    {"name": "untied_pattern", "config": BASE},
    {"name": "tied_no_pattern_llama3_rope", "config": {
        **BASE, "tie_word_embeddings": True, "sliding_window": None, "sliding_window_pattern": None,
        "num_key_value_heads": 1, "num_hidden_layers": 2, "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16}}},
    {"name": "yarn_head_dim_mha", "config": {
        **BASE, "head_dim": 24, "num_key_value_heads": 4, "sliding_window_pattern": "LG",
        "sliding_window": 6, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                              "original_max_position_embeddings": 8}}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
