"""Parity cases of `plamo2`: python plamo2.py OUT_DIR. Mamba2-style mixers (interleaved gate
and input per head, conv and SSD state in an arrays cache, RMS-normed B, C and time step) and
attention layers (fused qkv, normed queries and keys with per-head weights, RoPE) by
`mamba_step`, with sandwich norms of offset weights."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "Mamba2-style mixers (per-head interleaved gate and input, conv and SSD scan state in an arrays cache, RMS-normed B, C and low-rank time step, time steps clipped to (0.001, 100)) and attention (fused qkv, per-head q/k weights, RoPE, grouped-query heads) by mamba_step, Mamba disabled, sandwich norms with offsets, fused SwiGLU MLP, tied and untied head, prefill in chunks of 1, 7 and 64, left-padded batches, Hugging Face conv layout, 4-bit"

BASE = {
    "model_type": "plamo2",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size_per_head": 16,
    "intermediate_size": 96,
    "rms_norm_eps": 1e-6,
    "mamba_d_state": 8,
    "mamba_d_conv": 4,
    "mamba_num_heads": 4,
    "mamba_step": 2,
    "max_position_embeddings": 2048,
    "attention_window_size": 2048,
    "tie_word_embeddings": True,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(300)]


def hf_layout(weights, config):
    """transformers' layout: depthwise conv filters as [C, 1, K]."""
    return {k: (v.moveaxis(2, 1) if k.endswith("conv1d.weight") else v) for k, v in weights.items()}


CASES = [
    {"name": "step2", "config": BASE},
    {"name": "step3_untied", "config": {**BASE, "num_hidden_layers": 5, "mamba_step": 3,
                                        "tie_word_embeddings": False, "num_key_value_heads": 4,
                                        "mamba_num_heads": 6, "mamba_d_conv": 3}},
    {"name": "mamba_disabled", "config": {**BASE, "num_hidden_layers": 2, "mamba_enabled": False}},
    {"name": "hf_layout_long_prompt", "config": BASE, "hf_layout": hf_layout, "prompt": LONG_PROMPT,
     "steps": 8},
    {"name": "quantized_4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
