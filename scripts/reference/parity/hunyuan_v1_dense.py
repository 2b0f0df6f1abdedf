"""Parity cases of `hunyuan_v1_dense`: python hunyuan_v1_dense.py OUT_DIR.

hunyuan_v1_dense: llama with biases on all four attention projections, per-head q/k RMS norms
after RoPE (`query_layernorm` / `key_layernorm`), and NTK-alpha RoPE (the base times
`alpha^(d / (d - 2))`). The reference's sanitize drops a tied checkpoint's `lm_head`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "q/k norms after RoPE, NTK-alpha RoPE, attention biases, explicit head_dim, tied and untied head, Hugging Face layout (a tied lm_head), 4-bit"

BASE = {
    "model_type": "hunyuan_v1_dense",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": {"alpha": 1000.0, "factor": 1.0, "type": "dynamic"},
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def trained_qk_norms(weights, config):
    """q/k norm weights around one, as trained; the harness leaves them near zero."""
    return {k: (v + 1.0 if k.endswith(("query_layernorm.weight", "key_layernorm.weight")) else v)
            for k, v in weights.items()}


def hf_layout_tied(weights, config):
    out = trained_qk_norms(weights, config)
    out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


CASES = [
    {"name": "alpha_untied", "config": BASE, "hf_layout": trained_qk_norms},
    {"name": "no_scaling_bias_head_dim_tied", "config": {**BASE, "rope_scaling": None, "attention_bias": True,
                                                         "head_dim": 24, "num_hidden_layers": 3,
                                                         "tie_word_embeddings": True},
     "hf_layout": hf_layout_tied},
    {"name": "no_qk_norm", "config": {**BASE, "use_qk_norm": False}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}, "hf_layout": trained_qk_norms},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
