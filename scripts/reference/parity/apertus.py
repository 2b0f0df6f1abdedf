"""Parity cases of `apertus`: python apertus.py OUT_DIR.

apertus: llama's attention with per-head q/k RMS norms, an ungated MLP with the learned xIELU
activation (four scalars per layer), norms named `attention_layernorm` and
`feedforward_layernorm`. The reference's sanitize squeezes Hugging Face's one-element
`alpha_p` / `alpha_n` and drops a tied checkpoint's `lm_head`.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "xIELU activation with learned scalars, q/k norms, MLP biases, llama3 RoPE, tied and untied head, Hugging Face layout (one-element alphas, a tied lm_head), 4-bit"

BASE = {
    "model_type": "apertus",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "mlp_bias": False,
    "num_attention_heads": 4,
    "attention_bias": False,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "post_norm": False,
    "qk_norm": True,
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def trained_activation(weights, config):
    """The xIELU scalars as a trained checkpoint has them (the harness draws them near zero,
    `eps` included, which should be a small negative number), and q/k norms near one."""
    out = {}
    for k, v in weights.items():
        if k.endswith("act_fn.alpha_p"):
            v = v + 0.5
        elif k.endswith("act_fn.alpha_n"):
            v = v - 0.8
        elif k.endswith("act_fn.beta"):
            v = mx.array(0.5, dtype=v.dtype)
        elif k.endswith("act_fn.eps"):
            v = mx.array(-1e-6, dtype=v.dtype)
        elif k.endswith(("q_norm.weight", "k_norm.weight")):
            v = v + 1.0
        out[k] = v
    return out


def hf_layout(weights, config):
    """transformers' one-element alphas and a tied head's copy."""
    out = trained_activation(weights, config)
    for k in list(out):
        if k.endswith(("alpha_p", "alpha_n")):
            out[k] = out[k].reshape(1)
    out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


CASES = [
    {"name": "untied", "config": BASE, "hf_layout": trained_activation},
    {"name": "tied_mlp_bias_llama3", "config": {**BASE, "tie_word_embeddings": True, "mlp_bias": True,
                                                "num_hidden_layers": 3,
                                                "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                 "original_max_position_embeddings": 1024}},
     "hf_layout": trained_activation},
    {"name": "hf_layout", "config": {**BASE, "tie_word_embeddings": True}, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}, "hf_layout": trained_activation},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
