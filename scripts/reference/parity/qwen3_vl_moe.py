"""Parity cases of `qwen3_vl_moe`: python qwen3_vl_moe.py OUT_DIR.

qwen3_vl_moe is the text model of Qwen3-VL's mixture-of-experts checkpoints: qwen3_moe read
from `text_config`, under `language_model.`. The Hugging Face case is a multimodal checkpoint
in transformers' layout: `model.language_model.*` and `model.visual.*` (dropped), the head at
the top level, and each layer's experts fused (`experts.gate_up_proj` `[E, hidden, 2 * width]`,
`experts.down_proj` `[E, width, hidden]`), which the reference splits and transposes.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint, Hugging Face layout (vision tower dropped, fused and transposed experts split), 4-bit with the 8-bit router"

TEXT = {
    "model_type": "qwen3_vl_moe_text",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "rope_scaling": {"rope_type": "default", "mrope_section": [4, 6, 6], "mrope_interleaved": True},
    "tie_word_embeddings": False,
}
BASE = {"model_type": "qwen3_vl_moe", "text_config": TEXT, "vision_config": {"depth": 1}}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' multimodal layout with fused experts."""
    mx.random.seed(12)
    out = {"model.visual.patch_embed.proj.weight": mx.random.normal((32, 3, 2, 16, 16)),
           "model.visual.blocks.0.norm1.weight": mx.ones((32,))}
    for k, v in weights.items():
        k = k.removeprefix("language_model.")
        if ".switch_mlp.up_proj." in k:
            continue
        if ".switch_mlp.gate_proj." in k:
            up = weights["language_model." + k.replace("gate_proj", "up_proj")]
            fused = mx.concatenate([v.swapaxes(-2, -1), up.swapaxes(-2, -1)], axis=-1)
            k, v = k.replace("switch_mlp.gate_proj.weight", "experts.gate_up_proj"), fused
        elif ".switch_mlp.down_proj." in k:
            k, v = k.replace("switch_mlp.down_proj.weight", "experts.down_proj"), v.swapaxes(-2, -1)
        if k.startswith("model."):
            k = "model.language_model." + k.removeprefix("model.")
        out[k] = v
    return out


CASES = [
    {"name": "text_config", "config": BASE},
    {"name": "hf_multimodal_fused_experts", "seed": 3, "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
