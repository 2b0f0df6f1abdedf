"""Parity cases of `falcon_h1`: python falcon_h1.py OUT_DIR. Every layer runs a Mamba2 mixer
(8 heads of 16) and RoPE attention (4 heads of 16, 2 key/value heads) side by side, then a
SwiGLU MLP; each layer's cache is a list of a KV cache and an arrays cache."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "parallel Mamba2 and attention in every layer with a cache list, output gate without norm, gated RMSNorm after and before the gate, grouped B/C, biases, traditional and scaled RoPE, tied head scaled by lm_head_multiplier / embedding_multiplier, a prompt over 64 tokens, Hugging Face layout with the muP multipliers folded in (tied and untied), 4-bit"

BASE = {
    "model_type": "falcon_h1",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "mamba_n_heads": 8,
    "mamba_d_head": 16,
    "mamba_d_ssm": 128,
    "mamba_n_groups": 1,
    "mamba_d_state": 16,
    "mamba_d_conv": 4,
    "rope_theta": 10000.0,
    "embedding_multiplier": 2.0,
    "lm_head_multiplier": 0.5,
    "tie_word_embeddings": True,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(90)]


def hf_layout(weights, config):
    """transformers' layout: depthwise conv filters as [C, 1, K] (the reference then folds the
    muP multipliers into the weights)."""
    return {k: (v.moveaxis(2, 1) if k.endswith("conv1d.weight") else v) for k, v in weights.items()}


# transformers' defaults for the multipliers.
MUP = {
    "embedding_multiplier": 5.656854249492381,
    "lm_head_multiplier": 0.0390625,
    "attention_in_multiplier": 1.5,
    "attention_out_multiplier": 0.9375,
    "ssm_in_multiplier": 1.25,
    "ssm_out_multiplier": 0.23570226039551587,
    "mlp_multipliers": [0.8838834764831844, 0.5859375],
    "ssm_multipliers": [0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738],
}

CASES = [
    {"name": "tied_gate_only", "config": BASE},
    {"name": "norm_untied_biases", "config": {**BASE, "mamba_rms_norm": True, "tie_word_embeddings": False,
                                              "attention_bias": True, "mamba_proj_bias": True,
                                              "projectors_bias": True, "mlp_bias": True, "mamba_n_groups": 2,
                                              "mamba_conv_bias": False}},
    {"name": "norm_before_gate_rope", "config": {**BASE, "mamba_rms_norm": True, "mamba_norm_before_gate": True,
                                                 "rope_traditional": True,
                                                 "rope_scaling": {"type": "linear", "factor": 2.0}}},
    {"name": "long_prompt", "config": BASE, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "hf_layout", "config": {**BASE, **MUP}, "hf_layout": hf_layout},
    {"name": "hf_layout_untied", "config": {**BASE, **MUP, "tie_word_embeddings": False, "mamba_rms_norm": True},
     "hf_layout": hf_layout},
    {"name": "quantized_4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
