"""Parity cases of `pixtral`: python pixtral.py OUT_DIR.

pixtral is the text model of Pixtral checkpoints: llama read from `text_config`, under
`language_model.`, with its own head (the reference forces `tie_word_embeddings` off) and 32
query heads where the text config gives none (one case). The multimodal case carries the
vision tower and the projector, which are dropped.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint (vision tower and projector dropped), head never tied, default query heads"

TEXT = {
    "model_type": "mistral",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 1000000000.0,
    "tie_word_embeddings": True,
}
BASE = {"model_type": "pixtral", "text_config": TEXT, "vision_config": {"hidden_size": 32},
        "image_token_index": 10}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def multimodal(weights, config):
    """A multimodal checkpoint: the tower and the projector beside the text model."""
    mx.random.seed(9)
    return {**weights,
            "vision_tower.patch_conv.weight": mx.random.normal((32, 3, 16, 16)),
            "vision_tower.ln_pre.weight": mx.ones((32,)),
            "multi_modal_projector.linear_1.weight": mx.random.normal((64, 32))}


CASES = [
    {"name": "text_config_tie_ignored", "config": BASE},
    {"name": "multimodal_default_heads", "seed": 6, "hf_layout": multimodal, "config": {
        **BASE, "text_config": {**{k: v for k, v in TEXT.items() if k != "num_attention_heads"},
                                "hidden_size": 256, "head_dim": 8, "num_key_value_heads": 8}}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
