"""Parity cases of `qwen3_next`: python qwen3_next.py OUT_DIR. Hybrid stacks of gated delta net
(linear attention) layers and gated full-attention layers; eight experts of width 32, two per
token, with a sigmoid-gated shared expert of width 64."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

import mlx.core as mx  # noqa: E402

COVERS = "linear (gated delta) and gated full-attention layers by full_attention_interval, key heads shared by value heads, MoE with a sigmoid-gated shared expert, dense layers by mlp_only_layers and decoder_sparse_step, a dense tied model, a prompt of 80 tokens, Hugging Face layout (per-expert tensors, [C, 1, K] conv weights, zero-centred norms, MTP weights), 4-bit with the 8-bit routers"

BASE = {
    "model_type": "qwen3_next",
    "hidden_size": 64,
    # Layers 0 and 1 linear, layer 2 full attention.
    "num_hidden_layers": 3,
    "full_attention_interval": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "partial_rotary_factor": 0.25,
    "linear_num_value_heads": 4,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "shared_expert_intermediate_size": 64,
    "mlp_only_layers": [],
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(11 * i + 5) % 256 for i in range(80)]

NORMS = (".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
         ".q_norm.weight", ".k_norm.weight")


def hf_layout(weights, config):
    """transformers' layout: one tensor per expert, conv weights [C, 1, K], norms stored as
    weight - 1 (the reference adds 1 back), and multi-token-prediction weights (dropped)."""
    out = {}
    for key, value in unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.").items():
        if key.endswith("conv1d.weight"):
            value = value.swapaxes(1, 2)
        elif value.ndim == 1 and key.endswith(NORMS):
            value = value - 1.0
        out[key] = value
    out["mtp.fc.weight"] = mx.zeros((64, 128))
    out["mtp.layers.0.input_layernorm.weight"] = mx.zeros((64,))
    return out


CASES = [
    {"name": "moe", "config": BASE},
    {"name": "dense_tied_same_heads", "config": {**BASE, "num_experts": 0, "tie_word_embeddings": True,
                                                 "linear_num_key_heads": 4, "attention_bias": True}},
    # Layers 0 and 2 linear, 1 and 3 attention; layer 0 dense by mlp_only_layers, layer 2 by
    # the step, layers 1 and 3 sparse.
    {"name": "dense_layers", "config": {**BASE, "num_hidden_layers": 4, "full_attention_interval": 2,
                                        "mlp_only_layers": [0], "decoder_sparse_step": 2,
                                        "linear_num_value_heads": 6, "linear_num_key_heads": 3}},
    {"name": "long_prompt", "config": BASE, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    # The reference's quant_predicate keeps the router and the shared expert's gate at 8 bits.
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
