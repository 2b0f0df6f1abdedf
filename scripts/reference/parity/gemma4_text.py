"""Parity cases of `gemma4_text`: python gemma4_text.py OUT_DIR.

Sliding-window and full-attention layers (by `sliding_window_pattern` or `layer_types`) with
windows shorter than the 36-token sequence, full layers with their own head width and their
own RoPE from `rope_parameters` (the reference's default: proportional, a quarter of each head
rotated), KV-shared layers that attend with the keys and values of the last earlier layer of
their type (and have a double-wide MLP), keys doubling as values on full layers
(`attention_k_eq_v`), per-layer inputs, a mixture of experts beside each MLP, and the Hugging
Face layout: fused `experts.gate_up_proj` / `experts.down_proj`, rotary buffers and
`input_max`-style calibration scalars, and key / value weights of the KV-shared layers, all
of which the reference's sanitize drops or renames.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

import mlx.core as mx  # noqa: E402

COVERS = "sliding / full layers by pattern or layer_types, per-type RoPE from rope_parameters (proportional partial rotary by default), global_head_dim, KV-shared layers with double-wide MLPs, attention_k_eq_v with global kv heads, per-layer inputs, MoE beside the MLP (4-bit with 8-bit routers), Hugging Face layout (fused experts, rotary and calibration buffers, shared layers' k/v weights dropped), 4-bit"

BASE = {
    "model_type": "gemma4_text",
    "hidden_size": 64,
    "num_hidden_layers": 5,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "vocab_size_per_layer_input": 256,
    "hidden_size_per_layer_input": 16,
    "num_kv_shared_layers": 2,
    "sliding_window": 8,
    "sliding_window_pattern": 2,
    "max_position_embeddings": 512,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

MOE = {**BASE, "enable_moe_block": True, "num_experts": 4, "top_k_experts": 2,
       "moe_intermediate_size": 32}


def scalars_about_one(weights, config):
    """Not a naming change: the reference's layout with each layer's `layer_scalar` drawn
    about one (as trained checkpoints have them) rather than about zero like the other
    non-norm weights, which would shrink the residual stream layer by layer until float32
    rounding dominates the logits."""
    out = dict(weights)
    for key, value in weights.items():
        if key.endswith(".layer_scalar"):
            out[key] = 1.0 + value
    return out


def hf_layout(weights, config):
    """transformers' names: each layer's experts fused (`experts.gate_up_proj`
    [E, 2 * width, hidden], `experts.down_proj`), plus what the reference drops: rotary
    buffers, calibration scalars, and key / value weights of the KV-shared layers."""
    out = {}
    for key, value in weights.items():
        if key.endswith(".experts.switch_glu.gate_proj.weight"):
            base = key[: -len(".switch_glu.gate_proj.weight")]
            up = weights[f"{base}.switch_glu.up_proj.weight"]
            out[f"{base}.gate_up_proj"] = mx.concatenate([value, up], axis=-2)
        elif key.endswith(".experts.switch_glu.up_proj.weight"):
            continue
        elif key.endswith(".experts.switch_glu.down_proj.weight"):
            out[key[: -len(".switch_glu.down_proj.weight")] + ".down_proj"] = value
        else:
            out[key] = value
    n, shared = config["num_hidden_layers"], config["num_kv_shared_layers"]
    for i in range(n - shared, n):
        p = f"model.layers.{i}.self_attn"
        out[f"{p}.k_proj.weight"] = mx.zeros((32, 64))
        out[f"{p}.v_proj.weight"] = mx.zeros((32, 64))
        out[f"{p}.k_norm.weight"] = mx.ones((16,))
    out["model.layers.0.self_attn.rotary_emb.inv_freq"] = mx.zeros((8,))
    out["model.layers.1.mlp.gate_proj.input_max"] = mx.array(1.0)
    out["model.layers.1.mlp.gate_proj.output_min"] = mx.array(-1.0)
    return scalars_about_one(out, config)


CASES = [
    {"name": "tied_shared_kv_per_layer_inputs", "config": BASE},
    {"name": "untied_rope_parameters_layer_types", "config": {
        **BASE, "tie_word_embeddings": False, "hidden_size_per_layer_input": 0,
        "num_kv_shared_layers": 0, "global_head_dim": 0, "num_hidden_layers": 4,
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 50000.0},
            "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0},
        }}},
    {"name": "k_eq_v_global_kv_heads", "seed": 3, "config": {
        **BASE, "attention_k_eq_v": True, "num_global_key_value_heads": 1,
        "use_double_wide_mlp": False, "final_logit_softcapping": 5.0, "num_kv_shared_layers": 1,
        "sliding_window_pattern": 3, "sliding_window": 6,
        "rope_parameters": {"full_attention": {"rope_type": "proportional",
                                               "partial_rotary_factor": 0.5, "rope_theta": 20000.0}}}},
    {"name": "moe", "config": MOE},
    {"name": "moe_hf_layout", "config": MOE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
    # The reference's quant_predicate keeps each router's projection at 8 bits (group 64).
    {"name": "moe_4bit", "config": MOE, "quantize": {"bits": 4, "group_size": 32}},
]
# Every case draws its layer scalars about one (the Hugging Face layout case among its renames).
for case in CASES:
    case.setdefault("hf_layout", scalars_about_one)

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
