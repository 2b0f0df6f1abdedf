"""Parity cases of `deepseek_v32`: python deepseek_v32.py OUT_DIR. deepseek_v3's latent attention
(four heads of 16 + 8 features, a latent of 32, low-rank queries), a dense first layer, eight
experts of width 32 in four groups beside a shared expert, plus the sparse-attention indexer
(four heads of 16 features, 8 of them rotated). With `index_topk` 4 and a prompt of 12, every
context past 4 positions is sparse: the prompt through the top-k mask, each decode step through
the gathered latents (with 6, interleaved indexer RoPE and yarn, the same); `index_topk` 64
stays dense (the full forward covers 36 positions)."""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import fp8_blocks, run_cases, unstack_experts  # noqa: E402

COVERS = "DeepSeek sparse attention (the indexer: low-rank query heads, a LayerNorm'd shared key, its own RoPE plain or interleaved, ReLU scores weighted per head; the top-k keys as a mask over the prompt and as gathered latents when decoding; dense up to index_topk; the indexer keys cached without values), deepseek_v3's latent attention and sigmoid group-limited routing with a shared expert, yarn RoPE, dense first layers and moe_layer_freq, attention biases, Hugging Face layout (per-expert tensors, fused kv_b_proj, a quantized one, a multi-token-prediction layer), the FP8 release layout (E4M3 with 128 x 128 block scales, the indexer's projections too), 4-bit"

BASE = {
    "model_type": "deepseek_v32",
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
    "index_head_dim": 16,
    "index_n_heads": 4,
    "index_topk": 4,
    "indexer_rope_interleave": False,
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
    `embed_q` and `unembed_out` (quantized when the case is), and a
    multi-token-prediction layer after the last (both sides drop it). The indexer's tensors
    keep their names (`self_attn.indexer.wq_b`, ...)."""
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


def fp8_layout(weights, config):
    """The official release's FP8 layout on top of the Hugging Face names: the projections of
    attention, indexer (`wq_b`, `wk`, `weights_proj`) and experts, and here the head, as E4M3
    with 128 x 128 block scales; embeddings, norms and the router stay as they are."""
    fp8 = lambda name: "_proj" in name or name == "lm_head" or name.endswith((".wq_b", ".wk"))
    return fp8_blocks(hf_layout(weights, config), fp8)


WIDE = {**BASE, "qk_nope_head_dim": 32, "v_head_dim": 32}

CASES = [
    {"name": "sparse", "config": BASE},
    {"name": "sparse_interleaved_yarn", "config": {**BASE, "rope_scaling": YARN,
                                                   "indexer_rope_interleave": True,
                                                   "index_topk": 6, "moe_layer_freq": 2,
                                                   "attention_bias": True}},
    {"name": "dense", "config": {**BASE, "index_topk": 64}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "fp8_hf_layout", "config": BASE, "hf_layout": fp8_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
    {"name": "4bit_hf_layout", "config": WIDE, "quantize": {"bits": 4, "group_size": 32},
     "hf_layout": lambda w, c: hf_layout(w, c, quantized=True)},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
