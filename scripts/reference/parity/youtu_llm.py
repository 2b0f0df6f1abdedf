"""Parity cases of `youtu_llm`: python youtu_llm.py OUT_DIR.

youtu_llm is a dense llama stack with DeepSeek-V2's latent attention in its plain form: low-rank
queries (or one `q_proj` when `q_lora_rank` is null), keys and values expanded from a normed
latent, a shared rotated key, traditional RoPE by default. The reference's sanitize only drops
a tied `lm_head`, hence no Hugging Face layout case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "latent attention with low-rank or plain queries, traditional and non-traditional RoPE, yarn scaling, attention and MLP biases, tied and untied head, 4-bit"

BASE = {
    "model_type": "youtu_llm",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 32,
    "q_lora_rank": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 16,
    "qk_nope_head_dim": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "tied_low_rank_queries", "config": BASE},
    {"name": "untied_plain_queries_biases", "config": {
        **BASE, "q_lora_rank": None, "tie_word_embeddings": False, "attention_bias": True,
        "mlp_bias": True, "v_head_dim": 24}},
    {"name": "yarn_not_traditional", "config": {
        **BASE, "rope_traditional": False,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}}},
    {"name": "4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
