"""Parity cases of `seed_oss`: python seed_oss.py OUT_DIR.

seed_oss is llama with an explicit `head_dim`, q/k/v biases and an o_proj bias set apart,
optional MLP biases, any RoPE scaling and a head tied by default. The reference's sanitize
drops a tied checkpoint's `lm_head`. Its tied head multiplies by the raw embedding matrix,
which a quantized model cannot, so the 4-bit case is untied.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "explicit head_dim, q/k/v and o_proj biases apart, MLP biases, yarn RoPE, tied and untied head, Hugging Face layout (a tied lm_head), 4-bit"

BASE = {
    "model_type": "seed_oss",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 24,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "attention_bias": True,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def tied_head_copy(weights, config):
    """A tied checkpoint that still carries the head's copy (the reference drops it)."""
    return {**weights, "lm_head.weight": weights["model.embed_tokens.weight"]}


CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_out_mlp_bias_yarn", "config": {**BASE, "tie_word_embeddings": False, "attention_out_bias": True,
                                                    "mlp_bias": True, "num_hidden_layers": 3,
                                                    "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                                     "original_max_position_embeddings": 1024}}},
    {"name": "hf_layout_tied", "config": BASE, "hf_layout": tied_head_copy},
    {"name": "4bit", "config": {**BASE, "tie_word_embeddings": False}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
