"""Parity cases of `gemma3n`: python gemma3n.py OUT_DIR.

The text model of Gemma 3n's multimodal checkpoints (config under `text_config`): AltUp over
four copies of the residual stream (coefficients clipped or not, the corrected copy scaled or
not, another active copy), the LAuReL branch, per-layer inputs (a per-layer vocabulary smaller
than the prompt's ids, which read row 0), sliding-window layers with a window shorter than the
36-token sequence beside full ones with their own RoPE base, KV-shared layers, MLPs whose
gate keeps only its top activations in some layers, one MLP width per layer, soft-capped
logits or none, and a multimodal checkpoint whose vision and audio towers and embedders the
reference's sanitize drops.

The reference's forward without a cache lets its KV-shared layers compute keys and values with
their own projections, while with a cache (as generation runs, and as the original model
always does) they read their source layer's; the fixtures record the forward with a fresh
cache, which our model gives with or without one.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

import mlx.core as mx  # noqa: E402
from mlx_lm.models import gemma3n  # noqa: E402

COVERS = "config under text_config, AltUp (clipped or not, scaled correction, another active copy), LAuReL, per-layer inputs (ids past the per-layer vocabulary), sliding / full layers with their own bases, KV-shared layers (the cached path also without a cache), top-k sparse GeGLU, per-layer MLP widths, soft-capping or none, multimodal checkpoint with vision and audio towers dropped, 4-bit"

_forward = gemma3n.Model.__call__


def _with_cache(self, inputs, cache=None, input_embeddings=None):
    if cache is None:
        cache = self.make_cache()
    return _forward(self, inputs, cache=cache, input_embeddings=input_embeddings)


gemma3n.Model.__call__ = _with_cache

TEXT = {
    "model_type": "gemma3n_text",
    "hidden_size": 64,
    "num_hidden_layers": 5,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "num_key_value_heads": 2,
    "num_kv_shared_layers": 2,
    "vocab_size_per_layer_input": 256,
    "sliding_window": 8,
    "max_position_embeddings": 512,
    "rope_local_base_freq": 10000.0,
    "rope_theta": 1000000.0,
    "final_logit_softcapping": 30.0,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention",
                    "full_attention", "sliding_attention"],
    "activation_sparsity_pattern": [0.95, 0.95, 0.0, 0.0, 0.0],
    "hidden_size_per_layer_input": 16,
    "altup_num_inputs": 4,
    "altup_coef_clip": 120.0,
    "altup_correct_scale": True,
    "altup_active_idx": 0,
    "laurel_rank": 16,
}


def multimodal(text):
    return {"model_type": "gemma3n", "text_config": text,
            "vision_config": {"hidden_size": 32}, "audio_config": {"hidden_size": 32}}


PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

TOWERS = {
    "model.vision_tower.timm_model.blocks.0.0.conv_exp.weight": (32, 3, 3, 3),
    "model.audio_tower.subsample_conv_projection.conv_0.conv.weight": (32, 1, 3, 3),
    "model.embed_audio.embedding.weight": (16, 64),
    "model.embed_audio.embedding_projection.weight": (64, 32),
    "model.embed_vision.embedding.weight": (16, 64),
    "model.embed_vision.hard_embedding_norm.weight": (64,),
}


def with_towers(weights, config):
    """The multimodal checkpoint as released: the text model beside the vision and audio
    towers and their embedders (all dropped)."""
    out = dict(weights)
    for key, shape in TOWERS.items():
        out[key] = mx.zeros(shape)
    return out


CASES = [
    {"name": "base", "config": multimodal(TEXT)},
    {"name": "multimodal_checkpoint_towers_dropped", "config": multimodal(TEXT),
     "hf_layout": with_towers},
    {"name": "unclipped_active1_per_layer_vocab", "seed": 2, "config": multimodal({
        **TEXT, "altup_coef_clip": None, "altup_correct_scale": False, "altup_active_idx": 1,
        "vocab_size_per_layer_input": 200, "final_logit_softcapping": None,
        "intermediate_size": [96, 128, 64, 128, 96], "activation_sparsity_pattern": None,
        "num_kv_shared_layers": 1, "num_key_value_heads": 1, "sliding_window": 6})},
    {"name": "no_sharing_two_copies", "config": multimodal({
        **TEXT, "num_kv_shared_layers": 0, "altup_num_inputs": 2, "num_hidden_layers": 3,
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
        "activation_sparsity_pattern": [0.0, 0.5, 0.95], "rope_theta": 50000.0})},
    {"name": "4bit", "config": multimodal(TEXT), "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
