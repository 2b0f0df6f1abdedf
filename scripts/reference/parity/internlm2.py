"""Parity cases of `internlm2`: python internlm2.py OUT_DIR.

internlm2 is llama with q/k/v fused in one `wqkv` grouped by key/value head (each group's
query heads, its key, its value), biases on `wqkv` and `wo` with `bias` (on by default), its
own checkpoint names (`tok_embeddings`, `attention.wqkv`, `feed_forward.w1`, `output`, ...),
and linear or dynamic NTK RoPE scaling spelled with `type`. Dynamic NTK has no case: its base
depends on the one offset of the cache, so it cannot run a left-padded batch (the reference's
cannot either), which the harness checks for every case. The reference's sanitize only drops
rotary buffers named `...attention.rope.inv_freq`: the Hugging Face layout case adds them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "fused wqkv grouped by key/value head (GQA, one key/value head, MHA), wqkv/wo biases on and off, linear RoPE, traditional RoPE, tied and untied head, Hugging Face layout (rotary buffers), 4-bit"

BASE = {
    "model_type": "internlm2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """Rotary buffers as the reference's sanitize expects them (`...attention.rope.inv_freq`)."""
    import mlx.core as mx

    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (config["rope_theta"] ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
    out = dict(weights)
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.attention.rope.inv_freq"] = inv_freq
    return out


CASES = [
    {"name": "untied_bias", "config": BASE},
    {"name": "no_bias_linear_rope_one_kv_head", "config": {
        **BASE, "bias": False, "num_key_value_heads": 1,
        "rope_scaling": {"type": "linear", "factor": 6.0}}},
    {"name": "tied_traditional_mha", "config": {**BASE, "tie_word_embeddings": True, "rope_traditional": True,
                                                 "num_key_value_heads": None, "num_hidden_layers": 3}},
    {"name": "hf_layout_untied", "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
