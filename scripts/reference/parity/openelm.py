"""Parity cases of `openelm`: python openelm.py OUT_DIR.

openelm (OpenELM) scales its layers one by one: each has its own query and key/value head
counts (`num_query_heads`, `num_kv_heads`) and its own MLP width (`ffn_multipliers[i] *
model_dim` rounded by `make_divisible` to a multiple of `ffn_dim_divisor`; the multipliers here
exercise exact widths, rounding down and the rule that adds a multiple back past a 10% loss). Queries, keys and values come from one fused
`qkv_proj`, with per-head RMS norms on queries and keys unless `normalize_qk_projections` is off;
the SwiGLU MLP's gate and input are the halves of `proj_1`; the head is the embeddings unless
`share_input_output_layers` is off. The reference has no sanitize: every checkpoint is in its
own names (`transformer.token_embeddings`, `transformer.layers.N.attn.qkv_proj`, ...).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "per-layer query and kv heads and MLP widths (make_divisible), fused qkv split by heads, per-head q/k norms on and off, fused gate/up, tied and untied head, 4-bit"

BASE = {
    "model_type": "openelm",
    "head_dim": 16,
    "num_transformer_layers": 3,
    "model_dim": 64,
    "vocab_size": 256,
    "ffn_dim_divisor": 16,
    "num_query_heads": [4, 4, 8],
    "num_kv_heads": [1, 2, 4],
    "ffn_multipliers": [0.5, 1.3, 2.0],
    "rms_norm_eps": 1e-6,
    "rope_freq_constant": 10000,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "tied_qk_norm", "config": BASE},
    {"name": "untied_no_qk_norm", "config": {
        **BASE, "share_input_output_layers": False, "normalize_qk_projections": False,
        "num_transformer_layers": 2, "num_query_heads": [2, 6], "num_kv_heads": [2, 3],
        "ffn_multipliers": [0.748, 3.1], "ffn_dim_divisor": 32, "rope_freq_constant": 50000}},
    {"name": "4bit", "config": {**BASE, "share_input_output_layers": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
