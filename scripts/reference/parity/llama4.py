"""Parity cases of `llama4`: python llama4.py OUT_DIR.

llama4 is the text model of Llama 4's multimodal checkpoints, read from `text_config`, under
`language_model.`. Four layers, so that the fourth attends to everything without RoPE (with
temperature tuning, its `floor_scale` small enough to move the queries over these positions)
while the others attend within chunks of 4 positions (the prompt and the decode cross several
chunks, and the chunked caches trim their front). Mixtures of experts every second layer, or
in every layer; the multimodal case carries the vision model and the projector, to drop, and
the experts in the Hugging Face layout (`gate_up_proj`, `down_proj` as `[E, in, out]`).
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "text model of a multimodal checkpoint (vision model and projector dropped), chunked local attention, every fourth layer without RoPE and with temperature tuning, q/k norms after RoPE, MoE with a shared expert interleaved with dense layers, llama3 RoPE scaling, attention biases, Hugging Face experts, 4-bit"

TEXT = {
    "model_type": "llama4_text",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 64,
    "intermediate_size_mlp": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 500000.0,
    "rope_scaling": None,
    "max_position_embeddings": 1024,
    "attention_bias": False,
    "attention_chunk_size": 4,
    "interleave_moe_layer_step": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 1,
    "use_qk_norm": True,
    "attn_temperature_tuning": True,
    "floor_scale": 4,
    "attn_scale": 0.1,
    "no_rope_layers": [1, 1, 1, 0],
}
BASE = {"model_type": "llama4", "text_config": TEXT,
        "vision_config": {"hidden_size": 32, "model_type": "llama4_vision_model"},
        "image_token_index": 255}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def multimodal(weights, config):
    """A Hugging Face multimodal checkpoint: the vision model and the projector beside the
    text model, the experts as `gate_up_proj` `[E, dim, 2 * hidden]` and `down_proj`
    `[E, hidden, dim]`."""
    mx.random.seed(7)
    out = {}
    for key, value in weights.items():
        if key.endswith(".experts.gate_proj.weight"):
            prefix = key[: -len(".gate_proj.weight")]
            up = weights[prefix + ".up_proj.weight"]
            out[prefix + ".gate_up_proj"] = mx.concatenate(
                [value.swapaxes(1, 2), up.swapaxes(1, 2)], axis=-1)
        elif key.endswith(".experts.up_proj.weight"):
            continue
        elif key.endswith(".experts.down_proj.weight"):
            out[key[: -len(".weight")]] = value.swapaxes(1, 2)
        else:
            out[key] = value
    out["vision_model.patch_embedding.linear.weight"] = mx.random.normal((32, 48))
    out["vision_model.model.layers.0.self_attn.q_proj.weight"] = mx.random.normal((32, 32))
    out["vision_model.layernorm_post.weight"] = mx.ones((32,))
    out["multi_modal_projector.linear_1.weight"] = mx.random.normal((64, 32))
    return out


CASES = [
    {"name": "chunked_moe_every_second", "config": BASE},
    {"name": "llama3_bias_moe_every_layer", "seed": 1, "config": {**BASE, "text_config": {
        **TEXT, "rope_scaling": LLAMA3, "attention_bias": True, "use_qk_norm": False,
        "attn_temperature_tuning": 0, "interleave_moe_layer_step": 1, "head_dim": None,
        "attention_chunk_size": 5}}},
    {"name": "hf_multimodal", "seed": 2, "hf_layout": multimodal, "config": {
        **BASE, "text_config": {**TEXT, "num_hidden_layers": 5}}},
    {"name": "4bit", "seed": 1, "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
