"""Parity cases of `qwen3_5` and its alias `qwen3_5_moe`: python qwen3_5.py OUT_DIR. The text
model of a multimodal checkpoint (config under `text_config`): gated delta net layers and
gated full-attention layers, a dense MLP or, for qwen3_5_moe, eight experts of width 32, two
per token, with a sigmoid-gated shared expert of width 64."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

import mlx.core as mx  # noqa: E402

COVERS = "config under text_config or flat, RoPE from rope_parameters (and its default when absent), linear (gated delta) and gated full-attention layers, key heads shared by value heads, a prompt of 80 tokens, vision and MTP tensors dropped, Hugging Face layout ([C, 1, K] conv weights, zero-centred norms, model.language_model names), qwen3_5_moe: MoE with a sigmoid-gated shared expert, Hugging Face's fused gate_up_proj experts, 4-bit dense and MoE"

TEXT = {
    "model_type": "qwen3_5_text",
    "hidden_size": 64,
    # Layers 0 and 1 linear, layer 2 full attention.
    "num_hidden_layers": 3,
    "full_attention_interval": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "linear_num_value_heads": 4,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                        "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
}
MOE = {**TEXT, "model_type": "qwen3_5_moe_text", "num_experts": 8, "num_experts_per_tok": 2,
       "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64}
VISION = {"depth": 2, "hidden_size": 32}


def multimodal(model_type, text):
    return {"model_type": model_type, "text_config": text, "vision_config": VISION,
            "tie_word_embeddings": text["tie_word_embeddings"]}


PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(13 * i + 2) % 256 for i in range(80)]

NORMS = (".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
         ".q_norm.weight", ".k_norm.weight")
VISION_TENSORS = {
    "model.visual.patch_embed.proj.weight": (32, 3, 2, 4, 4),
    "model.visual.blocks.0.attn.qkv.weight": (96, 32),
    "model.visual.merger.mlp.0.weight": (64, 128),
}


def hf_layout(weights, config):
    """transformers' layout: `model.language_model.*` and `lm_head`, conv weights [C, 1, K],
    norms stored as weight - 1, qwen3_5_moe's experts fused (`gate_up_proj` [E, 2 * hidden,
    dim], `down_proj`), and the vision tower and MTP weights beside (dropped)."""
    out = {}
    for key, value in weights.items():
        if key.endswith("conv1d.weight"):
            value = value.swapaxes(1, 2)
        elif value.ndim == 1 and key.endswith(NORMS):
            value = value - 1.0
        key = key.replace("language_model.model.", "model.language_model.")
        key = key.replace("language_model.lm_head.", "lm_head.")
        out[key] = value
    for key in [k for k in out if ".mlp.switch_mlp.gate_proj.weight" in k]:
        prefix = key.split(".switch_mlp.")[0]
        gate = out.pop(key)
        up = out.pop(f"{prefix}.switch_mlp.up_proj.weight")
        out[f"{prefix}.experts.gate_up_proj"] = mx.concatenate([gate, up], axis=1)
        out[f"{prefix}.experts.down_proj"] = out.pop(f"{prefix}.switch_mlp.down_proj.weight")
    for key, shape in VISION_TENSORS.items():
        out[key] = mx.zeros(shape)
    out["mtp.fc.weight"] = mx.zeros((64, 128))
    return out


def with_vision_tower(weights, config):
    """A converted checkpoint that kept the vision tower (`vision_tower.*`, dropped)."""
    out = dict(weights)
    out["vision_tower.blocks.0.attn.qkv.weight"] = mx.zeros((96, 32))
    out["vision_tower.merger.mlp.0.weight"] = mx.zeros((64, 128))
    return out


# A flat config (no text_config), tied, without rope_parameters: the reference's default
# (theta 100000, a quarter of each head rotated) wins over the top-level rope_theta.
FLAT = {**{k: v for k, v in TEXT.items() if k not in ("rope_parameters", "head_dim")},
        "model_type": "qwen3_5", "tie_word_embeddings": True, "rope_theta": 5000.0,
        "num_attention_heads": 2, "num_key_value_heads": 1, "linear_num_key_heads": 4,
        "attention_bias": True}

CASES = [
    {"name": "text_config", "config": multimodal("qwen3_5", TEXT)},
    {"name": "flat_tied_default_rope", "config": FLAT, "seed": 1},
    {"name": "hf_layout_vision", "config": multimodal("qwen3_5", TEXT), "hf_layout": hf_layout},
    {"name": "vision_tower_dropped", "config": multimodal("qwen3_5", TEXT), "hf_layout": with_vision_tower},
    {"name": "long_prompt", "config": multimodal("qwen3_5", TEXT), "prompt": LONG_PROMPT, "steps": 8},
    {"name": "4bit", "config": multimodal("qwen3_5", TEXT), "quantize": {"bits": 4, "group_size": 32}},
    {"name": "moe", "config": multimodal("qwen3_5_moe", MOE)},
    {"name": "moe_hf_layout_fused_experts", "config": multimodal("qwen3_5_moe", MOE), "hf_layout": hf_layout},
    {"name": "moe_long_prompt", "config": multimodal("qwen3_5_moe", MOE), "prompt": LONG_PROMPT, "steps": 8},
    # The reference's quant_predicate keeps the router and the shared expert's gate at 8 bits.
    {"name": "moe_4bit", "config": multimodal("qwen3_5_moe", MOE), "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
