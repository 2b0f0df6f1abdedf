"""Parity cases of `nemotron-nas`: python nemotron-nas.py OUT_DIR.

nemotron-nas is a llama whose layers differ as `block_configs` says: per layer, an attention
with its own key/value head count (`n_heads_in_group`), a linear stand-in, or nothing; and an
MLP of its own width (`ffn_mult`), a linear stand-in, or nothing. The cases mix all of them,
with the first layer an attention, a linear stand-in, or nothing (the reference takes its mask
from the first layer that has either). The reference's sanitize only drops a tied `lm_head`,
hence no Hugging Face layout case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "per-layer attention (own kv heads, linear stand-in, none) and MLP (own width, linear stand-in, none), silu / gelu / relu / gelu_new gates, attention and MLP biases, llama3 RoPE scaling, tied and untied head, 4-bit"


def attn(group=None, linear=False, no_op=False):
    return {"no_op": no_op, "replace_with_linear": linear, "n_heads_in_group": group}


def ffn(mult=None, linear=False, no_op=False):
    return {"no_op": no_op, "replace_with_linear": linear, "ffn_mult": mult}


BASE = {
    "model_type": "nemotron-nas",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "block_configs": [
        {"attention": attn(group=2), "ffn": ffn(mult=1.5)},
        {"attention": attn(no_op=True), "ffn": ffn(mult=7.0)},
        {"attention": attn(linear=True), "ffn": ffn(linear=True)},
        {"attention": attn(group=4), "ffn": ffn(no_op=True)},
    ],
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "mixed_blocks", "config": BASE},
    {"name": "linear_first_biases_gelu_llama3_tied", "config": {
        **BASE, "attention_bias": True, "mlp_bias": True, "hidden_act": "gelu",
        "tie_word_embeddings": True, "num_hidden_layers": 3,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        "block_configs": [
            {"attention": attn(linear=True), "ffn": ffn(mult=2.0)},
            {"attention": attn(group=1), "ffn": ffn(no_op=True)},
            {"attention": attn(group=2), "ffn": ffn(mult=1.0)},
        ]}},
    {"name": "none_first_relu", "config": {
        **BASE, "hidden_act": "relu", "num_hidden_layers": 3,
        "block_configs": [
            {"attention": attn(no_op=True), "ffn": ffn(mult=1.5)},
            {"attention": attn(group=4), "ffn": ffn(linear=True)},
            {"attention": attn(group=2), "ffn": ffn(mult=3.0)},
        ]}},
    {"name": "gelu_new", "config": {**BASE, "hidden_act": "gelu_new"}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
