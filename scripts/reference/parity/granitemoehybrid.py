"""Parity cases of `granitemoehybrid`: python granitemoehybrid.py OUT_DIR. Granite's multipliers
(embeddings x1.5, attention scale 1/16, residual branches x0.8, logits / 4) around Mamba2
mixers (8 heads of 16) and attention layers by `layer_types`, each followed by four experts of
width 48 (two per token) and a shared SwiGLU MLP, or by a dense MLP."""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "Mamba2 and attention layers by layer_types, attention with RoPE and without (nope), top-k then softmax routing with a shared MLP, dense MLP form, granite's multipliers, a prompt over 64 tokens, Hugging Face fused input_linear, shared_mlp and conv layouts, 4-bit with the reference's 8-bit router"

BASE = {
    "model_type": "granitemoehybrid",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 48,
    "num_hidden_layers": 4,
    "max_position_embeddings": 4096,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "attention_bias": False,
    "embedding_multiplier": 1.5,
    "attention_multiplier": 0.0625,
    "logits_scaling": 4.0,
    "residual_multiplier": 0.8,
    "layer_types": ["mamba", "attention", "mamba", "mamba"],
    "rms_norm_eps": 1e-6,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "shared_intermediate_size": 32,
    "mamba_n_heads": 8,
    "mamba_d_head": 16,
    "mamba_proj_bias": False,
    "mamba_d_state": 16,
    "mamba_d_conv": 4,
    "mamba_n_groups": 1,
    "mamba_conv_bias": True,
    "position_embedding_type": "rope",
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
}
DENSE = {k: v for k, v in BASE.items() if k not in ("num_local_experts", "num_experts_per_tok", "shared_intermediate_size")}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(90)]


def conv_layout(key, value):
    return value.moveaxis(2, 1) if key.endswith("conv1d.weight") else value


def hf_layout(weights, config):
    """transformers' layout: each layer's expert gate and up projections fused in
    `input_linear` (halves), the down projections as `output_linear`, conv filters as
    [C, 1, K], and the redundant head some tied checkpoints ship."""
    out = {}
    for key, value in weights.items():
        if ".switch_mlp.gate_proj." in key:
            up = weights[key.replace(".gate_proj.", ".up_proj.")]
            out[key.replace("switch_mlp.gate_proj", "input_linear")] = mx.concatenate([value, up], axis=1)
        elif ".switch_mlp.up_proj." in key:
            continue
        elif ".switch_mlp.down_proj." in key:
            out[key.replace("switch_mlp.down_proj", "output_linear")] = value
        else:
            out[key] = conv_layout(key, value)
    out["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return out


def hf_dense_layout(weights, config):
    """transformers' dense layout: the MLP as `shared_mlp` with gate and up fused."""
    out = {}
    for key, value in weights.items():
        if ".mlp.gate_proj." in key:
            up = weights[key.replace(".gate_proj.", ".up_proj.")]
            out[key.replace("mlp.gate_proj", "shared_mlp.input_linear")] = mx.concatenate([value, up], axis=0)
        elif ".mlp.up_proj." in key:
            continue
        elif ".mlp.down_proj." in key:
            out[key.replace("mlp.down_proj", "shared_mlp.output_linear")] = value
        else:
            out[key] = conv_layout(key, value)
    return out


CASES = [
    {"name": "moe_rope", "config": BASE},
    {"name": "nope_untied_biases", "config": {**BASE, "position_embedding_type": "nope", "tie_word_embeddings": False,
                                              "attention_bias": True, "mamba_proj_bias": True, "mamba_conv_bias": False,
                                              "mamba_n_groups": 2, "time_step_limit": [0.0, float("inf")],
                                              "layer_types": ["attention", "mamba", "attention", "mamba"]}},
    {"name": "dense", "config": {**DENSE, "mlp_bias": True, "position_embedding_type": "nope"}},
    {"name": "long_prompt", "config": BASE, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "hf_layout_dense", "config": {**DENSE, "tie_word_embeddings": False}, "hf_layout": hf_dense_layout},
    # The reference's quant_predicate keeps the router at 8 bits, group 64.
    {"name": "quantized_4bit", "config": {**BASE, "tie_word_embeddings": False}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
