"""Parity cases of `helium`: python helium.py OUT_DIR.

helium is llama with traditional (interleaved) RoPE, q/k/v biases (`attention_bias`) and MLP
biases (`mlp_bias`) set apart. The reference requires `head_dim` but sizes the heads by
`hidden_size / num_attention_heads`; one case gives a `head_dim` that differs. Its model keeps an
`lm_head` even when the embeddings are tied, so tied checkpoints carry an unused one (which
ours drops). The reference has no sanitize, hence no Hugging Face layout case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "traditional RoPE, q/k/v and MLP biases, unread head_dim, tied head with an unused lm_head, 4-bit"

BASE = {
    "model_type": "helium",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-8,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "attention_bias": False,
    "mlp_bias": False,
    "rope_theta": 100000.0,
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_biases_unread_head_dim", "config": {**BASE, "tie_word_embeddings": True, "attention_bias": True,
                                                        "mlp_bias": True, "head_dim": 40, "num_hidden_layers": 3}},
    {"name": "4bit_one_kv_head", "config": {**BASE, "num_key_value_heads": 1, "attention_bias": True},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
