"""Parity cases of `gemma4`: python gemma4.py OUT_DIR.

gemma4 (alias gemma4_unified) is the text model of Gemma 4's multimodal checkpoints:
gemma4_text read from `text_config`, under `language_model.`. The reference takes the
vocabulary from the top level (262144 when absent) and defaults the text config's heads to 8
and 1. The multimodal case is a Hugging Face checkpoint: `model.language_model.*` beside the
vision and audio towers and their embedders under `model.`, all dropped. Layer scalars are
drawn about one, as in gemma4_text's cases.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint (vision and audio towers and embedders dropped, nested Hugging Face layout), top-level vocabulary, default heads, 4-bit"

TEXT = {
    "model_type": "gemma4_text",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size_per_layer_input": 256,
    "hidden_size_per_layer_input": 16,
    "num_kv_shared_layers": 1,
    "sliding_window": 8,
    "sliding_window_pattern": 2,
    "max_position_embeddings": 512,
}
BASE = {"model_type": "gemma4", "vocab_size": 256, "text_config": TEXT,
        "vision_config": {"hidden_size": 32}, "audio_config": {"hidden_size": 32}}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def scalars_about_one(weights, config):
    """The reference's layout with each layer's `layer_scalar` drawn about one."""
    return {k: (1.0 + v if k.endswith(".layer_scalar") else v) for k, v in weights.items()}


def multimodal(weights, config):
    """transformers' multimodal names: `model.language_model.*` (tied: no head), the towers
    and embedders under `model.`."""
    mx.random.seed(8)
    out = {}
    for k, v in scalars_about_one(weights, config).items():
        if k.startswith("language_model.model."):
            out["model.language_model." + k.removeprefix("language_model.model.")] = v
        else:
            out[k] = v
    out["model.vision_tower.encoder.layers.0.mlp.fc1.weight"] = mx.random.normal((32, 32))
    out["model.audio_tower.conv.weight"] = mx.random.normal((32, 1, 3))
    out["model.embed_vision.embedding_projection.weight"] = mx.random.normal((64, 32))
    out["model.embed_audio.embedding_projection.weight"] = mx.random.normal((64, 32))
    return out


CASES = [
    {"name": "text_config", "config": BASE, "hf_layout": scalars_about_one},
    {"name": "hf_multimodal_default_heads", "seed": 2, "hf_layout": multimodal, "config": {
        **BASE, "text_config": {k: v for k, v in TEXT.items()
                                if k not in ("num_attention_heads", "num_key_value_heads")}}},
    {"name": "4bit", "config": BASE, "hf_layout": scalars_about_one,
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
