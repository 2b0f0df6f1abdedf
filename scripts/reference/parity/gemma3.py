"""Parity cases of `gemma3`: python gemma3.py OUT_DIR.

gemma3 is the text model of Gemma 3's multimodal checkpoints: gemma3_text read from
`text_config`, under `language_model.`. The reference takes the vocabulary from the top level
(262208 when absent, whatever `text_config` says) and defaults the text config's heads to 8 and
4; one case leaves the heads out, one gives the top-level vocabulary. Multimodal checkpoints
carry the vision tower and the projector, which are dropped; the head is tied exactly when the
checkpoint has none (gemma3_text's rule; the cases with a head say `tie_word_embeddings`
false, as gemma3_text's do).
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "text model of a multimodal checkpoint (vision tower and projector dropped), top-level vocabulary, default heads, head tied by the checkpoint, 4-bit"

TEXT = {
    "model_type": "gemma3_text",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "query_pre_attn_scalar": 32,
    "sliding_window": 8,
    "sliding_window_pattern": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
BASE = {"model_type": "gemma3", "vocab_size": 256, "text_config": TEXT,
        "vision_config": {"hidden_size": 32, "model_type": "siglip_vision_model"},
        "mm_tokens_per_image": 4, "image_token_index": 255}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def multimodal(weights, config):
    """A Hugging Face multimodal checkpoint: the towers beside the text model, no head (tied)."""
    mx.random.seed(7)
    out = {k: v for k, v in weights.items() if k != "language_model.lm_head.weight"}
    out["vision_tower.vision_model.embeddings.patch_embedding.weight"] = mx.random.normal((32, 3, 4, 4))
    out["vision_tower.vision_model.post_layernorm.weight"] = mx.ones((32,))
    out["multi_modal_projector.mm_input_projection_weight"] = mx.random.normal((32, 64))
    out["multi_modal_projector.mm_soft_emb_norm.weight"] = mx.ones((32,))
    return out


CASES = [
    {"name": "text_config", "config": BASE},
    {"name": "hf_multimodal_tied_default_heads", "seed": 3, "hf_layout": multimodal, "config": {
        **BASE, "text_config": {k: v for k, v in TEXT.items()
                                if k not in ("num_attention_heads", "num_key_value_heads", "tie_word_embeddings")}
        | {"hidden_size": 128, "head_dim": 16, "query_pre_attn_scalar": 16}}},
    {"name": "4bit", "config": {
        **BASE, "text_config": {**TEXT, "num_hidden_layers": 2}}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
