"""Parity cases of `gemma2`: python gemma2.py OUT_DIR.

The reference's gemma2 has no sanitize and always ties its head. It soft-caps the attention
logits and the final logits, scales queries by `query_pre_attn_scalar`, and attends with full
attention on every layer: it reads neither `sliding_window` nor `sliding_window_size`, so the
case that carries a window shorter than the sequence (8 of 36 tokens) checks that we ignore
it just as the reference does.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "attention and final logit soft-capping, `query_pre_attn_scalar`, four norms"

BASE = {
    "model_type": "gemma2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    # Caps low enough to bite: attention scores reach a few units, logits a few tens.
    {"name": "tight_softcaps", "config": {
        **BASE, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 5.0,
        "query_pre_attn_scalar": 16.0}},
    {"name": "default_caps_and_scalar", "config": BASE},
    {"name": "multi_head_odd_hidden", "seed": 5, "config": {
        **BASE, "hidden_size": 48, "num_key_value_heads": 4, "head_dim": 16, "num_hidden_layers": 3,
        "attn_logit_softcapping": 1.5, "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 24.0}},
    {"name": "window_keys_ignored", "seed": 6, "config": {
        **BASE, "num_hidden_layers": 4, "sliding_window": 8, "sliding_window_size": 8,
        "cache_implementation": "hybrid", "attn_logit_softcapping": 3.0, "final_logit_softcapping": 10.0}},
]


def record_float16(cases, out_dir):
    """The prompt logits of each case's checkpoint run in float16 by the reference (loaded as
    saved, parameters cast like `--dtype float16`), as OUT_DIR/<case>/float16.safetensors."""
    import mlx.core as mx
    from mlx_lm.utils import load_model

    for case in cases:
        model, _ = load_model(out_dir / case["name"], strict=True)
        model.set_dtype(mx.float16)
        prompt = mx.array([case.get("prompt", PROMPT)], dtype=mx.int32)
        logits = model(prompt)[0].astype(mx.float32)
        mx.save_safetensors(str(out_dir / case["name"] / "float16.safetensors"), {"prompt_logits": logits})


if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
    record_float16(CASES, Path(sys.argv[1]))
