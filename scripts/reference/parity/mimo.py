"""Parity cases of `mimo`: python mimo.py OUT_DIR.

mimo is llama with q/k/v biases (not on o_proj), a bias-free MLP and any RoPE scaling. Its
checkpoints carry multi-token-prediction layers (`model.mtp_layers.*`) that the reference's
sanitize drops, with rotary buffers and a tied checkpoint's `lm_head`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "q/k/v biases, tied and untied head, traditional linear and yarn RoPE, Hugging Face layout (MTP layers, rotary buffers, a tied lm_head), 4-bit"

BASE = {
    "model_type": "mimo",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 640000.0,
    "num_nextn_predict_layers": 1,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """What a MiMo checkpoint holds besides: an MTP layer, rotary buffers and, tied, a copy of
    the embeddings as `lm_head` (the reference drops all three)."""
    import mlx.core as mx

    dim = config["hidden_size"]
    head_dim = dim // config["num_attention_heads"]
    inv_freq = 1.0 / (config["rope_theta"] ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
    out = dict(weights)
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq
    out["model.mtp_layers.0.input_layernorm.weight"] = mx.ones((dim,))
    out["model.mtp_layers.0.input_proj.weight"] = mx.zeros((dim, 2 * dim))
    out["model.mtp_layers.0.self_attn.q_proj.weight"] = mx.zeros((dim, dim))
    out.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    return out


CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_traditional_linear_rope", "config": {**BASE, "tie_word_embeddings": True, "rope_traditional": True,
                                                         "rope_scaling": {"type": "linear", "factor": 2.0}}},
    {"name": "yarn_rope_one_kv_head", "config": {**BASE, "num_key_value_heads": 1, "num_hidden_layers": 3,
                                                  "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                                   "original_max_position_embeddings": 1024}}},
    {"name": "hf_layout_tied", "config": {**BASE, "tie_word_embeddings": True}, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
