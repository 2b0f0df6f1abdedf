"""Parity cases of `plamo`: python plamo.py OUT_DIR.

plamo (PLaMo) is a parallel layer (one RMS norm read by the attention and a SwiGLU MLP, both
added to the residual stream) whose `num_attention_heads / n_shared_head` key/value heads the
reference tiles `n_shared_head` times: query head `i` reads key/value head `i mod kv_heads`, not
`i // n_shared_head` as grouped-query attention would. Plain RoPE (traditional or not), an
untied head. The checkpoint nests the layers as `model.layers.layers.N`; the reference has no
sanitize, so every case is in that layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "parallel attention and MLP on one norm, key/value heads shared in turn (tiled), one and two kv heads and plain MHA, traditional RoPE, nested layer names, 4-bit"

BASE = {
    "model_type": "plamo",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "n_shared_head": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "two_kv_heads", "config": BASE},
    {"name": "one_kv_head_traditional", "config": {
        **BASE, "n_shared_head": 4, "rope_traditional": True, "rope_theta": 50000.0, "num_hidden_layers": 3}},
    {"name": "mha", "config": {**BASE, "num_attention_heads": 8, "n_shared_head": 1}},
    {"name": "4bit_eight_heads", "config": {**BASE, "num_attention_heads": 8, "n_shared_head": 2},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
