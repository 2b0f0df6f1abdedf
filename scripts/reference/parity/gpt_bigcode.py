"""Parity cases of `gpt_bigcode`: python gpt_bigcode.py OUT_DIR.

gpt_bigcode (StarCoder, SantaCoder): gpt2's layer with learned positions, multi-query attention
(one key/value head; every head its own with `multi_query` false), an exact-gelu MLP of width
`n_inner`, biases on the attention and the MLP or not, a tied or untied head. The reference has
no sanitize: the checkpoints are in its own layout, which is the Hugging Face one.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "learned positions, multi-query or multi-head fused `c_attn`, biases or none, tied / untied, 4-bit"

BASE = {
    "model_type": "gpt_bigcode",
    "n_embd": 64,
    "n_layer": 2,
    "n_inner": 160,
    "n_head": 4,
    "n_positions": 64,
    "layer_norm_epsilon": 1e-5,
    "vocab_size": 256,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "multi_query_tied", "config": BASE},
    {"name": "multi_head_untied_no_bias", "config": {**BASE, "multi_query": False, "tie_word_embeddings": False,
                                                     "attention_bias": False, "mlp_bias": False, "n_layer": 3,
                                                     "layer_norm_epsilon": 1e-6}},
    {"name": "quantized", "config": {**BASE, "tie_word_embeddings": False}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
