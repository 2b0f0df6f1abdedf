"""Parity cases of `olmo2`: python olmo2.py OUT_DIR.

olmo2 normalises queries and keys with RMSNorms over the whole projection (not per head) and
puts its norms after attention and after the MLP (no pre-norm). Cases: tied and untied heads,
attention and MLP biases with an explicit head_dim, RoPE scaling through the shared
`initialize_rope`, and a checkpoint in the Hugging Face layout (rotary buffers, which the
reference's sanitize drops).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "q/k norms over the whole projection, post-norms, llama3 RoPE, Hugging Face layout"

BASE = {
    "model_type": "olmo2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """What transformers saves: a rotary buffer per layer."""
    import mlx.core as mx

    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (config["rope_theta"] ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
    out = dict(weights)
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq
    return out


CASES = [
    {"name": "tied", "config": {**BASE}},
    {"name": "untied_bias_head_dim", "config": {**BASE, "tie_word_embeddings": False, "attention_bias": True,
                                                 "mlp_bias": True, "head_dim": 32}},
    {"name": "llama3_rope", "config": {**BASE, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}},
    {"name": "hf_layout_untied", "config": {**BASE, "tie_word_embeddings": False, "num_key_value_heads": 4},
     "hf_layout": hf_layout},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
