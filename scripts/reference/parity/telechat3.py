"""Parity cases of `telechat3`: python telechat3.py OUT_DIR.

telechat3 is llama with one `attention_bias` for all four attention projections (o_proj
included), MLP biases (`mlp_bias`) apart, an optional explicit `head_dim`, and any RoPE scaling,
its own `telechat3-yarn` being yarn. The reference has no sanitize, hence no Hugging Face layout
case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "biases on q/k/v and o_proj, MLP biases, explicit head_dim, telechat3-yarn RoPE with an mscale ratio, tied and untied head, 4-bit"

BASE = {
    "model_type": "telechat3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_biases_head_dim", "config": {
        **BASE, "tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True, "head_dim": 24,
        "num_hidden_layers": 3}},
    {"name": "telechat3_yarn_one_kv_head", "config": {
        **BASE, "num_key_value_heads": 1, "attention_bias": True,
        "rope_scaling": {"rope_type": "telechat3-yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.5}}},
    {"name": "4bit", "config": {**BASE, "mlp_bias": True}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
