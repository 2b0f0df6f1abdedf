"""Parity cases of `deepseek_v3`: python deepseek_v3.py OUT_DIR. Multi-head latent attention
(four heads of 16 + 8 features, a latent of 32, low-rank queries or one query projection), a
dense first layer, then eight experts of width 32 in four groups (two groups kept per token, two
experts per token) beside one shared expert."""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import fp8_blocks, run_cases, unstack_experts  # noqa: E402

COVERS = "multi-head latent attention (low-rank or plain queries, latent cache, absorbed decode), yarn RoPE with mscale_all_dim in the scale, sigmoid group-limited routing with a correction bias, a shared expert, dense first layers and moe_layer_freq, Hugging Face layout (per-expert tensors, fused kv_b_proj, a quantized one), the FP8 release layout (E4M3 with 128 x 128 block scales), compressed-tensors packed int4, 4-bit"

BASE = {
    "model_type": "deepseek_v3",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "q_lora_rank": 32,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "n_group": 4,
    "topk_group": 2,
    "n_shared_experts": 1,
    "n_routed_experts": 8,
    "routed_scaling_factor": 2.5,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "attention_bias": False,
}
YARN = {
    "type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 1024,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def _dense(weights, name):
    if f"{name}.scales" in weights:
        w = weights.pop(f"{name}.weight")
        return mx.dequantize(w, weights.pop(f"{name}.scales"), weights.pop(f"{name}.biases"),
                             group_size=32, bits=4)
    return weights.pop(f"{name}.weight")


def hf_layout(weights, config, quantized=False):
    """transformers' names: one tensor per expert, each layer's `kv_b_proj` fused back from
    `embed_q` and `unembed_out` (quantized when the case is), rotary buffers."""
    out = unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")
    heads, rank = config["num_attention_heads"], config["kv_lora_rank"]
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}.self_attn"
        wk = _dense(out, f"{p}.embed_q").swapaxes(-1, -2)
        wv = _dense(out, f"{p}.unembed_out")
        fused = mx.concatenate([wk, wv], axis=1).reshape(-1, rank)
        if quantized:
            w, s, b = mx.quantize(fused, group_size=32, bits=4)
            out[f"{p}.kv_b_proj.weight"], out[f"{p}.kv_b_proj.scales"] = w, s
            out[f"{p}.kv_b_proj.biases"] = b
        else:
            out[f"{p}.kv_b_proj.weight"] = fused
        d = config["qk_rope_head_dim"]
        out[f"{p}.rotary_emb.inv_freq"] = 1.0 / (10000.0 ** (mx.arange(0, d, 2, dtype=mx.float32) / d))
    assert heads * (config["qk_nope_head_dim"] + config["v_head_dim"]) == out[f"{p}.kv_b_proj.weight"].shape[0]
    return out


def fp8_layout(weights, config):
    """The official releases' FP8 layout on top of the Hugging Face names: the projections of
    attention and experts (and here the head, whose 256 rows make two blocks) as E4M3 with
    128 x 128 block scales; embeddings, norms and the router stay as they are."""
    return fp8_blocks(hf_layout(weights, config), lambda name: "_proj" in name or name == "lm_head")


def int4_layout(weights, config):
    """Kimi K2 Thinking's compressed-tensors layout on top of the Hugging Face names: every
    4-bit layer's packed words as int32 `weight_packed`, its scales as `weight_scale`, its
    shape as `weight_shape` (the biases are implied: -8 x scale); the config says
    `compressed-tensors` / `pack-quantized` instead of MLX's `quantization`."""
    weights = hf_layout(weights, config, quantized=True)
    out = {}
    for key, value in weights.items():
        if key.endswith(".scales"):
            prefix = key[: -len(".scales")]
            w = weights[f"{prefix}.weight"]
            out[f"{prefix}.weight_packed"] = w.view(mx.int32)
            out[f"{prefix}.weight_scale"] = value
            out[f"{prefix}.weight_shape"] = mx.array([w.shape[-2], w.shape[-1] * 8], dtype=mx.int32)
        elif key.endswith(".biases") or f"{key[: -len('.weight')]}.scales" in weights:
            continue
        else:
            out[key] = value
    for k in ("quantization", "quantization_config"):
        config.pop(k, None)
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 32, "type": "int",
                                                  "symmetric": True}, "targets": ["Linear"]}},
    }
    return out


WIDE = {**BASE, "qk_nope_head_dim": 32, "v_head_dim": 32}

CASES = [
    {"name": "q_lora", "config": BASE},
    {"name": "q_proj_freq", "config": {**BASE, "q_lora_rank": None, "n_group": 1, "topk_group": 1,
                                       "n_shared_experts": None, "norm_topk_prob": False,
                                       "first_k_dense_replace": 0, "moe_layer_freq": 2,
                                       "attention_bias": True}},
    {"name": "yarn", "config": {**BASE, "rope_scaling": YARN}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "fp8_hf_layout", "config": BASE, "hf_layout": fp8_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
    {"name": "4bit_hf_layout", "config": WIDE, "quantize": {"bits": 4, "group_size": 32},
     "hf_layout": lambda w, c: hf_layout(w, c, quantized=True)},
    {"name": "int4_compressed_tensors", "config": WIDE, "quantize": {"bits": 4, "group_size": 32},
     "hf_layout": int4_layout},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
