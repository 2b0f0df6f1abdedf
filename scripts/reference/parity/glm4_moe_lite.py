"""Parity cases of `glm4_moe_lite`: python glm4_moe_lite.py OUT_DIR. Multi-head latent attention
(four heads of 16 + 8 features, a latent of 32, low-rank queries or one query projection, its
norms at rms_norm_eps), a dense first layer, then eight experts of width 32 in four groups (two
groups kept per token, two experts per token) beside one shared expert."""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "multi-head latent attention (low-rank or plain queries, latent cache, absorbed decode, norms at rms_norm_eps), sigmoid group-limited routing with a correction bias (renormalised over the sum plus 1e-20), a shared expert, dense first layers, Hugging Face layout (per-expert tensors, fused kv_b_proj, a quantized one, a multi-token-prediction layer), 4-bit"

BASE = {
    "model_type": "glm4_moe_lite",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
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
    "routed_scaling_factor": 1.8,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "attention_bias": False,
    "partial_rotary_factor": 1.0,
    "tie_word_embeddings": False,
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
    `embed_q` and `unembed_out` (quantized when the case is), and a multi-token-prediction
    layer after the last (both sides drop it)."""
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
    assert heads * (config["qk_nope_head_dim"] + config["v_head_dim"]) == out[f"{p}.kv_b_proj.weight"].shape[0]
    last, mtp = config["num_hidden_layers"] - 1, config["num_hidden_layers"]
    for key in [k for k in out if k.startswith(f"model.layers.{last}.")]:
        out[key.replace(f"layers.{last}.", f"layers.{mtp}.", 1)] = out[key]
    out[f"model.layers.{mtp}.eh_proj.weight"] = mx.zeros((64, 128))
    return out


WIDE = {**BASE, "qk_nope_head_dim": 32, "v_head_dim": 32}

CASES = [
    {"name": "q_lora", "config": BASE},
    {"name": "q_proj_one_group", "config": {**BASE, "q_lora_rank": None, "n_group": 1, "topk_group": 1,
                                            "n_shared_experts": None, "norm_topk_prob": False,
                                            "first_k_dense_replace": 0, "moe_layer_freq": 2,
                                            "attention_bias": True}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
    {"name": "4bit_hf_layout", "config": WIDE, "quantize": {"bits": 4, "group_size": 32},
     "hf_layout": lambda w, c: hf_layout(w, c, quantized=True)},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
