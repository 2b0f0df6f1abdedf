"""Parity cases of `mistral3`: python mistral3.py OUT_DIR.

mistral3 (alias llava) is the text model of Mistral 3 multimodal checkpoints, read from
`text_config`: ministral3 when the text config's `model_type` says so, llama otherwise (Mistral
Small 3.1's says `mistral`), untied unless the text config says `tie_word_embeddings`. The
Hugging Face case is transformers' layout: `model.language_model.*`, the head at the top
level, `model.vision_tower.*` and `model.multi_modal_projector.*` (dropped).
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint, llama or ministral3 by the text config's model_type, untied head by default, Hugging Face layout with the vision tower and projector dropped, 4-bit"

MISTRAL = {
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
}
MINISTRAL3 = {
    "model_type": "ministral3",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    "sliding_window": 6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                        "llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 4},
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128, 11, 200, 77, 8, 19, 140, 66, 2]


def hf_layout(weights, config):
    """transformers' multimodal layout."""
    mx.random.seed(13)
    out = {"model.vision_tower.transformer.layers.0.attention.q_proj.weight": mx.random.normal((32, 32)),
           "model.vision_tower.ln_pre.weight": mx.ones((32,)),
           "model.multi_modal_projector.linear_1.weight": mx.random.normal((64, 32))}
    for k, v in weights.items():
        k = k.removeprefix("language_model.")
        out["model.language_model." + k.removeprefix("model.") if k.startswith("model.") else k] = v
    return out


CASES = [
    {"name": "llama_text", "config": {"model_type": "mistral3", "text_config": MISTRAL}},
    {"name": "ministral3_text_tied", "config": {"model_type": "mistral3",
                                               "text_config": {**MINISTRAL3, "tie_word_embeddings": True}}},
    {"name": "hf_ministral3_text", "seed": 4, "hf_layout": hf_layout,
     "config": {"model_type": "mistral3", "text_config": MINISTRAL3, "vision_config": {"hidden_size": 32}}},
    {"name": "llava_4bit", "config": {"model_type": "llava", "text_config": MISTRAL},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
