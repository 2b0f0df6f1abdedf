"""Parity cases of `phi3`: python phi3.py OUT_DIR.

phi3 fuses the attention projections (`qkv_proj`) and the MLP's gate and up (`gate_up_proj`),
rotates only `partial_rotary_factor` of each head, and scales RoPE linearly or with LongRoPE
(`longrope` / `su`: per-frequency `long_factor`s and a magnitude scale from
`max_position_embeddings / original_max_position_embeddings`). The reference has no sliding
window (it ignores `sliding_window`) and no sanitize, so the checkpoints are in its own layout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "fused qkv and gate/up, partial rotary, longrope / su scaling past `original_max_position_embeddings`, 4-bit"

BASE = {
    "model_type": "phi3",
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
HEAD_DIM = 16


def factors(n, start, step):
    return [round(start + step * i, 4) for i in range(n)]


# LongRoPE: the 36-token sequence is longer than `original_max_position_embeddings` (16), and
# `max_position_embeddings / original_max_position_embeddings` = 8 makes the magnitude scale
# sqrt(1 + ln 8 / ln 16) != 1.
LONGROPE = {
    "type": "longrope",
    "long_factor": factors(HEAD_DIM // 2, 1.0, 0.75),
    "short_factor": factors(HEAD_DIM // 2, 1.0, 0.05),
}
# Phi-3.5 / Phi-4-mini style: `su` on three quarters of each head, tied embeddings.
SU_PARTIAL = {
    "type": "su",
    "long_factor": factors(12 // 2, 1.2, 1.5),
    "short_factor": factors(12 // 2, 1.0, 0.1),
}

CASES = [
    {"name": "untied", "config": {**BASE, "num_key_value_heads": 4}},
    {"name": "partial_rotary", "config": {**BASE, "partial_rotary_factor": 0.5}},
    {"name": "longrope", "config": {**BASE, "rope_scaling": LONGROPE, "max_position_embeddings": 128,
                                    "original_max_position_embeddings": 16}},
    {"name": "su_partial_tied", "config": {**BASE, "rope_scaling": SU_PARTIAL, "partial_rotary_factor": 0.75,
                                           "tie_word_embeddings": True, "max_position_embeddings": 64,
                                           "original_max_position_embeddings": 16}},
    {"name": "linear_traditional", "config": {**BASE, "rope_traditional": True,
                                              "rope_scaling": {"type": "linear", "factor": 2.0,
                                                               "long_factor": [1.0]}}},
    # 4-bit: the fused projections quantized as one layer each.
    {"name": "quantized_su", "config": {**BASE, "rope_scaling": SU_PARTIAL, "partial_rotary_factor": 0.75,
                                        "max_position_embeddings": 64, "original_max_position_embeddings": 16},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
