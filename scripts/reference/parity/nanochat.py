"""Parity cases of `nanochat`: python nanochat.py OUT_DIR.

nanochat has no norm weights: weightless RMS norms (epsilon 1e-5) after the embeddings, before the
attention and the MLP, and at the end. Its attention rotates queries and keys with negated RoPE
frequencies (the rotation the other way round), RMS-norms them per head after RoPE, and attends
with grouped-query heads; a ReLU² MLP; an untied head whose logits are soft-capped at 15. Every
key has a default in the reference; the reference has no sanitize, so every checkpoint is in its
own names (`transformer.wte`, `transformer.h.N.attn.c_q`, ...).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "weightless RMS norms (embeddings, pre-norms, final), RoPE with negated frequencies then per-head q/k norms, grouped-query and full heads, ReLU² MLP, logits soft-capped at 15, 4-bit"

BASE = {
    "model_type": "nanochat",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "intermediate_size": 256,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "mha", "config": BASE},
    {"name": "gqa_theta", "config": {
        **BASE, "num_key_value_heads": 2, "num_attention_heads": 8, "rope_theta": 50000.0, "num_hidden_layers": 3}},
    {"name": "4bit_one_kv_head", "config": {**BASE, "num_key_value_heads": 1},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
