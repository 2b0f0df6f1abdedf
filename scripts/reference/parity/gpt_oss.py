"""Parity cases of `gpt_oss`: python gpt_oss.py OUT_DIR.

Four layers, sliding-window and full attention mixed by `layer_types`, a window of 8 under a
20-token prompt (and the 24-step decode after it), so the sliding layers' rotating caches
really rotate; learned per-head attention sinks; eight biased experts of width 32, two per
token, routed by the top-2 logits of a biased router then a softmax over them, with the
clamped SwiGLU. The Hugging Face layout fuses each layer's gate and up projections into
`gate_up_proj` (rows interleaved: even rows the gate, odd rows the up projection) with a fused
`gate_up_proj_bias`, and writes the down projection's bias as `down_proj_bias`; the original
mxfp4 checkpoints store the experts as `*_blocks` (uint8, sixteen bytes per group of 32
values) and `*_scales`, which the mxfp4 Hugging Face case writes (only the experts quantized,
as there). The yarn case leaves `layer_types` out, so the reference's default (sliding and full
alternating) applies.

Every case runs in the reference on the CPU. Not covered: transformers' unquantized layout
(`gate_up_proj` `[experts, hidden, 2 * intermediate]`, no `.weight` leaf), which the
reference's sanitize does not convert either (its names come out without a leaf and fail its
strict load).
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "sliding / full layers by `layer_types` (given, and the default alternation) with rotating caches, attention sinks, biased router and experts, top-k then softmax routing, clamped SwiGLU, yarn RoPE, Hugging Face fused interleaved gate_up_proj layout, mxfp4 with the reference's 8-bit router, mxfp4 experts as the original `_blocks` / `_scales`"

BASE = {
    "model_type": "gpt_oss",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 150000,
    "sliding_window": 8,
    "layer_types": ["sliding_attention", "full_attention", "full_attention", "sliding_attention"],
}
PROMPT = [(11 * i + 5) % 256 for i in range(20)]
YARN = {
    "rope_type": "yarn",
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "original_max_position_embeddings": 4096,
}


def fuse(gate, up, axis):
    """gate and up interleaved along `axis`: gate's entries at the even indices, up's at the odd."""
    stacked = mx.stack([gate, up], axis=axis + 1 if axis >= 0 else axis)
    shape = list(gate.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


def hf_layout(weights, config):
    """The Hugging Face names the reference's sanitize undoes: gate and up fused into
    `gate_up_proj` (interleaved rows), the biases as `gate_up_proj_bias` / `down_proj_bias`,
    and mxfp4 weights as `*_blocks` (the packed words as bytes, `[..., groups, 16]`) and
    `*_scales`."""
    out = {}
    for key, value in weights.items():
        if ".experts.up_proj." in key:
            continue
        if ".experts.gate_proj." in key:
            leaf = key.rsplit(".", 1)[1]
            up = weights[key.replace(".gate_proj.", ".up_proj.")]
            axis = -1 if leaf == "bias" else -2
            fused = fuse(value, up, axis)
            key = key.replace("gate_proj", "gate_up_proj")
        elif ".experts.down_proj." in key:
            fused = value
        else:
            out[key] = value
            continue
        head, leaf = key.rsplit(".", 1)
        if leaf == "bias":
            out[head + "_bias"] = fused
        elif leaf == "weight" and fused.dtype == mx.uint32:
            out[head + "_blocks"] = fused.view(mx.uint8).reshape(*fused.shape[:-1], -1, 16)
        elif leaf == "scales":
            out[head + "_scales"] = fused
        else:
            out[key] = fused
    return out


# In the original mxfp4 checkpoints only the experts are quantized.
EXPERTS_ONLY = {
    path: False
    for n in range(BASE["num_hidden_layers"])
    for path in [f"model.layers.{n}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    + [f"model.layers.{n}.mlp.router"]
}
EXPERTS_ONLY.update({"model.embed_tokens": False, "lm_head": False})

DEFAULT_LAYERS = {k: v for k, v in BASE.items() if k != "layer_types"}

CASES = [
    {"name": "converted", "config": BASE},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    # No layer_types: the reference's default, sliding and full alternating.
    {"name": "yarn_default_layers", "config": {**DEFAULT_LAYERS, "rope_scaling": YARN}},
    # The reference's quant_predicate keeps the router at 8 bits, affine, group 64.
    {"name": "mxfp4", "config": BASE, "quantize": {"mode": "mxfp4"}},
    {"name": "mxfp4_hf_layout", "config": BASE, "hf_layout": hf_layout,
     "quantize": {"mode": "mxfp4", "layers": EXPERTS_ONLY}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
