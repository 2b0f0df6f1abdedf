"""Parity cases of `mellum`: python mellum.py OUT_DIR.

mellum is qwen3_moe's layer (per-head q/k norms, explicit head_dim, softmax top-k experts in
every layer) with sliding-window layers listed in `layer_types`, their caches rotating over
`sliding_window` positions, and a RoPE per layer type in `rope_parameters`. The prompt (20
tokens) is longer than the window (6). Eight experts of width 32, two per token.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "softmax top-k experts with and without norm_topk_prob, sliding-window layers, RoPE per layer type (default, linear read as plain, yarn), tied and untied head, Hugging Face per-expert layout, 4-bit with the 8-bit router"

BASE = {
    "model_type": "mellum",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "sliding_window": 6,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128, 11, 200, 77, 8, 19, 140, 66, 2]


def hf_layout(weights, config):
    """transformers' names: one tensor per expert."""
    return unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")


CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_no_renorm_scaled_rope", "config": {
        **BASE, "tie_word_embeddings": True, "norm_topk_prob": False,
        "layer_types": ["full_attention", "sliding_attention"], "num_hidden_layers": 2,
        "rope_parameters": {
            "full_attention": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 4.0,
                               "original_max_position_embeddings": 8},
            "sliding_attention": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 8.0},
        }}},
    {"name": "full_only", "config": {**BASE, "num_hidden_layers": 2,
                                     "layer_types": ["full_attention", "full_attention"],
                                     "rope_parameters": {"full_attention": {"rope_theta": 10000.0}}}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    # The reference's quant_predicate keeps the router at 8 bits, group 64.
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
