"""Parity cases of `lfm2-vl`: python lfm2-vl.py OUT_DIR.

lfm2-vl is the text model of LFM2-VL checkpoints: lfm2 (gated short convolutions and attention
layers) read from `text_config`, under `language_model.`. The multimodal case carries the
vision tower and the projector, which are dropped.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint (vision tower and projector dropped), short convolutions and attention layers, 4-bit"

TEXT = {
    "model_type": "lfm2",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "norm_eps": 1e-5,
    "conv_bias": False,
    "conv_L_cache": 3,
    "block_dim": 64,
    "block_ff_dim": 192,
    "block_multiple_of": 32,
    "block_ffn_dim_multiplier": 1.0,
    "block_auto_adjust_ff_dim": True,
    "full_attn_idxs": [1],
}
BASE = {"model_type": "lfm2-vl", "text_config": TEXT, "vision_config": {"hidden_size": 32},
        "downsample_factor": 2}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def multimodal(weights, config):
    """A multimodal checkpoint: the tower and the projector beside the text model."""
    mx.random.seed(5)
    return {**weights,
            "vision_tower.vision_model.embeddings.patch_embedding.weight": mx.random.normal((32, 3, 16, 16)),
            "vision_tower.vision_model.post_layernorm.weight": mx.ones((32,)),
            "multi_modal_projector.linear_1.weight": mx.random.normal((64, 128))}


CASES = [
    {"name": "text_config", "config": BASE},
    {"name": "multimodal_towers", "seed": 4, "config": BASE, "hf_layout": multimodal},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
