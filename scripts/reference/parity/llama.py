"""Parity cases of `llama` (and its `mistral` alias): python llama.py OUT_DIR."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "tied / untied, biases, explicit head_dim, llama3 and linear RoPE (traditional), sliding layers, Hugging Face layout"

BASE = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """What transformers saves: a rotary buffer per layer and, tied or not, an `lm_head`."""
    import mlx.core as mx

    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (config["rope_theta"] ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
    out = dict(weights)
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq
    out.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    return out

CASES = [
    {"name": "untied", "config": {**BASE, "tie_word_embeddings": False}},
    {"name": "tied_bias_head_dim", "config": {**BASE, "tie_word_embeddings": True, "attention_bias": True,
                                               "mlp_bias": True, "head_dim": 32}},
    {"name": "llama3_rope", "config": {**BASE, "tie_word_embeddings": False, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}},
    {"name": "linear_rope_traditional", "config": {**BASE, "rope_traditional": True,
                                                    "rope_scaling": {"type": "linear", "factor": 2.0}}},
    {"name": "hf_layout_tied", "config": {**BASE, "tie_word_embeddings": True}, "hf_layout": hf_layout},
    {"name": "mistral_sliding", "config": {**BASE, "model_type": "mistral", "tie_word_embeddings": False,
                                            "layer_types": ["sliding_attention", "full_attention"],
                                            "sliding_window": 8}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
