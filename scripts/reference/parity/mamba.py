"""Parity cases of `mamba` (and its alias `falcon_mamba`): python mamba.py OUT_DIR.
Attention-free: every layer is a Mamba mixer (causal depthwise convolution, selective scan)
with an arrays cache."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "selective scan one position at a time, conv state, low-rank time step (auto and explicit rank), falcon_mamba's RMS-normalised time step, B and C, biases, tied and untied head, prefill in chunks of 1, 7 and 64, left-padded batches (masked, beyond the reference), Hugging Face conv layout, 4-bit"

BASE = {
    "model_type": "mamba",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "state_size": 8,
    "num_hidden_layers": 2,
    "conv_kernel": 4,
    "use_bias": False,
    "use_conv_bias": True,
    "time_step_rank": "auto",
    "tie_word_embeddings": True,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(80)]


def hf_layout(weights, config):
    """transformers' layout: depthwise conv filters as [C, 1, K]."""
    return {k: (v.moveaxis(2, 1) if k.endswith("conv1d.weight") else v) for k, v in weights.items()}


CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_biases_rank", "config": {**BASE, "tie_word_embeddings": False, "use_bias": True,
                                              "use_conv_bias": False, "time_step_rank": 6}},
    {"name": "falcon_mamba", "config": {**BASE, "model_type": "falcon_mamba", "mixer_rms_eps": 1e-6}},
    {"name": "hf_layout_long_prompt", "config": BASE, "hf_layout": hf_layout, "prompt": LONG_PROMPT,
     "steps": 8},
    {"name": "quantized_4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
