"""Parity cases of `mamba2`: python mamba2.py OUT_DIR. Attention-free: every layer is a Mamba2
mixer (causal depthwise convolution, SSD scan, gated RMSNorm) with an arrays cache."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "SSD scan in chunks of 256 and one-step decode, grouped B/C, conv state, time-step limits, gated RMSNorm, biases, tied and untied head, a prompt over two scan chunks, prefill in chunks of 1, 7 and 64, Hugging Face conv layout, 4-bit"

BASE = {
    "model_type": "mamba2",
    "num_heads": 8,
    "head_dim": 16,
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "state_size": 16,
    "num_hidden_layers": 2,
    "layer_norm_epsilon": 1e-5,
    "conv_kernel": 4,
    "n_groups": 2,
    "use_bias": False,
    "use_conv_bias": True,
    "tie_word_embeddings": True,
    "time_step_limit": [0.0, float("inf")],
    "time_step_rank": "auto",
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(300)]


def hf_layout(weights, config):
    """transformers' layout: depthwise conv filters as [C, 1, K]."""
    return {k: (v.moveaxis(2, 1) if k.endswith("conv1d.weight") else v) for k, v in weights.items()}


CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_biases_limits", "config": {**BASE, "tie_word_embeddings": False, "use_bias": True,
                                                "n_groups": 1, "ssm_state_size": 8,
                                                "time_step_limit": [0.05, 2.0], "time_step_rank": 4}},
    {"name": "hf_layout", "config": {**BASE, "use_conv_bias": False}, "hf_layout": hf_layout},
    {"name": "long_prompt", "config": BASE, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "quantized_4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
