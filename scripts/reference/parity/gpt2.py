"""Parity cases of `gpt2`: python gpt2.py OUT_DIR.

gpt2: learned absolute positions added to the token embeddings, pre-norm LayerNorm layers with
a fused `c_attn` and a `4 * n_embd` tanh-gelu MLP, biases everywhere, the embeddings as the
head. The reference's sanitize reads the Hugging Face layout (keys without the `model.` prefix,
`Conv1D` projections stored `[in, out]`, causal-mask buffers `h.{i}.attn.bias`), so one case is
saved in that layout.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "learned positions, fused `c_attn`, Hugging Face `Conv1D` layout, 4-bit"

BASE = {
    "model_type": "gpt2",
    "n_ctx": 64,
    "n_embd": 64,
    "n_head": 4,
    "n_layer": 2,
    "n_positions": 64,
    "layer_norm_epsilon": 1e-5,
    "vocab_size": 256,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def hf_layout(weights, config):
    """transformers' GPT2Model layout: no `model.` prefix, `Conv1D` weights `[in, out]`, and
    the causal-mask buffer of each attention."""
    out = {}
    n = config["n_positions"]
    for key, value in weights.items():
        key = key.removeprefix("model.")
        if key.endswith(".weight") and key.split(".", 2)[-1][: -len(".weight")] in CONV1D:
            value = value.T
        out[key] = value
    for i in range(config["n_layer"]):
        out[f"h.{i}.attn.bias"] = mx.tril(mx.ones((n, n))).reshape(1, 1, n, n)
    return out


CASES = [
    {"name": "mlx_layout", "config": BASE},
    {"name": "hf_layout", "config": {**BASE, "n_layer": 3, "layer_norm_epsilon": 1e-6, "n_head": 8},
     "hf_layout": hf_layout},
    # 4-bit: the token and the position embeddings quantized too.
    {"name": "quantized", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
