"""Parity cases of `qwen3_vl`: python qwen3_vl.py OUT_DIR.

qwen3_vl is the text model of Qwen3-VL checkpoints: qwen3 (q/k norms) read from `text_config`,
or from the whole config when there is none, under `language_model.`. Its multimodal RoPE
(`rope_type` default with `mrope_section`, interleaved) is plain RoPE on text. The Hugging Face cases carry the vision tower:
at the top level (`visual.*`, older checkpoints, with the text model at the top level too) or
nested with the text model under `model` (`model.visual.*`, `model.language_model.*`).
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint, flat or in text_config, q/k norms, interleaved multimodal RoPE as plain RoPE, vision tower dropped (top-level or nested layout), tied / untied"

TEXT = {
    "model_type": "qwen3_vl",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 1000000.0,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def tower(prefix):
    mx.random.seed(11)
    return {f"{prefix}.patch_embed.proj.weight": mx.random.normal((32, 3, 2, 14, 14)),
            f"{prefix}.blocks.0.norm1.weight": mx.ones((32,)),
            f"{prefix}.merger.mlp.0.weight": mx.random.normal((64, 128))}


def flat_layout(weights, config):
    """An older checkpoint: the text model at the top level, the tower as `visual.*`."""
    out = {k.removeprefix("language_model."): v for k, v in weights.items()}
    return {**out, **tower("visual")}


def nested_layout(weights, config):
    """A newer checkpoint: `model.language_model.*`, `model.visual.*`, `lm_head` at the top."""
    out = {}
    for k, v in weights.items():
        k = k.removeprefix("language_model.")
        out["model.language_model." + k.removeprefix("model.") if k.startswith("model.") else k] = v
    return {**out, **tower("model.visual")}


CASES = [
    {"name": "flat_config", "config": TEXT},
    {"name": "text_config_tied", "config": {"model_type": "qwen3_vl", "vision_config": {"depth": 1},
                                            "text_config": {**TEXT, "tie_word_embeddings": True}}},
    {"name": "hf_flat_layout", "config": TEXT, "hf_layout": flat_layout},
    {"name": "hf_nested_layout_tied", "seed": 2, "hf_layout": nested_layout, "config": {
        "model_type": "qwen3_vl", "text_config": {**TEXT, "tie_word_embeddings": True, "num_key_value_heads": 1}}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
