"""Parity cases of `qwen`: python qwen.py OUT_DIR.

qwen (the first Qwen) is a llama layer under GPT-2 names (`transformer.wte`, `transformer.h.N`
with `ln_1`, `attn.c_attn` / `c_proj`, `ln_2`, `mlp.w1` / `w2` / `c_proj`, `transformer.ln_f`),
which the reference keeps as they are (it has no sanitize): every case's checkpoint is in that
layout. Multi-head attention through one fused `c_attn` with a bias, RoPE of base 10000, a
SwiGLU MLP half `intermediate_size` wide, and `no_bias` (on by default) taking the biases off
`c_proj`, the MLP and the head, which is never tied.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import parity  # noqa: E402
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "its own checkpoint names, fused c_attn with a bias, half-width MLP, biases on c_proj, the MLP and the head (no_bias off), 4-bit"

BASE = {
    "model_type": "qwen",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "kv_channels": 16,
    "max_position_embeddings": 4096,
    "layer_norm_epsilon": 1e-6,
    "intermediate_size": 256,
    "vocab_size": 256,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]



def randomize(model, seed):
    """The shared randomization, with the RMS norms (`ln_1`, `ln_2`, `ln_f`, which it does not
    take for norms) around 1 as other architectures' norms are: else each norm shrinks the
    stream twelvefold and the logits are too flat for the greedy tokens to mean much."""
    from mlx.utils import tree_flatten, tree_unflatten

    base_randomize(model, seed)
    norms = [(n, 1.0 + p) for n, p in tree_flatten(model.parameters()) if ".ln_" in n]
    model.update(tree_unflatten(norms))


base_randomize, parity.randomize = parity.randomize, randomize

CASES = [
    {"name": "no_bias", "config": BASE},
    {"name": "biases_three_layers", "config": {**BASE, "no_bias": False, "num_hidden_layers": 3}},
    {"name": "4bit_biases", "config": {**BASE, "no_bias": False}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
