"""Parity cases of `gemma3_text`: python gemma3_text.py OUT_DIR.

Local (sliding-window) and global layers by `sliding_window_pattern`, windows shorter than the
36-token sequence, a separate local RoPE base, q/k norms, linear RoPE scaling on the global
layers, and the head: the reference ties it exactly when the checkpoint has no
`lm_head.weight`, whatever config.json says, so the tied cases are checkpoints in the Hugging
Face layout (no `lm_head`, or a redundant copy of the embeddings). One case pushes the residual
stream past float16's range; every case also records the reference's float16 prompt logits.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "local / global layers by `sliding_window_pattern`, local RoPE base, linear RoPE on global layers, float16 residual clipping, head tied or not by the checkpoint"

BASE = {
    "model_type": "gemma3_text",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "query_pre_attn_scalar": 32,
    "sliding_window": 8,
    "sliding_window_pattern": 2,
    "max_position_embeddings": 512,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def without_head(weights, config):
    """A tied checkpoint as transformers saves it: no `lm_head`."""
    return {k: v for k, v in weights.items() if not k.startswith("lm_head.")}


def redundant_head(weights, config):
    """A tied checkpoint that also stores the head, a copy of the embeddings."""
    out = without_head(weights, config)
    out["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return out


def float16_overflow(weights, config):
    """Not a naming change: the reference's layout with the last layer's post-feedforward norm
    scaled up, so that its residual sum leaves float16's range (which gemma3 clips)."""
    out = dict(weights)
    key = f"model.layers.{config['num_hidden_layers'] - 1}.post_feedforward_layernorm.weight"
    out[key] = weights[key] * 20000.0
    return out


CASES = [
    {"name": "untied_pattern2_window8", "config": {**BASE, "tie_word_embeddings": False}},
    {"name": "linear_rope_pattern3_window6", "config": {
        **BASE, "tie_word_embeddings": False, "sliding_window_pattern": 3, "sliding_window": 6,
        "num_hidden_layers": 5, "rope_scaling": {"rope_type": "linear", "factor": 4.0}}},
    {"name": "hf_tied_no_head_odd_hidden", "seed": 5, "hf_layout": without_head, "config": {
        **BASE, "hidden_size": 48, "num_key_value_heads": 1, "head_dim": 16, "query_pre_attn_scalar": 20}},
    {"name": "hf_untied_config_no_head", "hf_layout": without_head,
     "config": {**BASE, "tie_word_embeddings": False}},
    {"name": "hf_tied_redundant_head", "hf_layout": redundant_head,
     "config": {**BASE, "tie_word_embeddings": True, "sliding_window_pattern": 1}},
    {"name": "float16_residual_overflow", "hf_layout": float16_overflow,
     "config": {**BASE, "tie_word_embeddings": False}},
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
