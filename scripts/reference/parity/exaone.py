"""Parity cases of `exaone`: python exaone.py OUT_DIR.

exaone is llama under other names (`transformer.wte`, `transformer.h.N.attn.attention.*`,
`mlp.c_fc_0` / `c_fc_1` / `c_proj`, `ln_1`, `ln_2`, `transformer.ln_f`), which the reference
keeps as they are (it has no sanitize): every case's checkpoint is in that layout. Biases on
the four attention projections (`attention_bias`) and on the MLP (`mlp_bias`), any RoPE
scaling, a head tied by default.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "its own checkpoint names, q/k/v/o and MLP biases, llama3 RoPE, tied and untied head, 4-bit"

BASE = {
    "model_type": "exaone",
    "hidden_size": 64,
    "num_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "layer_norm_epsilon": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_biases", "config": {**BASE, "tie_word_embeddings": False, "attention_bias": True,
                                          "mlp_bias": True, "num_layers": 3}},
    {"name": "llama3_rope_one_kv_head", "config": {**BASE, "num_key_value_heads": 1, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}},
    {"name": "4bit_untied", "config": {**BASE, "tie_word_embeddings": False, "attention_bias": True},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
