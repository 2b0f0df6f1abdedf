"""Parity cases of `phi3small`: python phi3small.py OUT_DIR.

phi3small is Phi-3-small: LayerNorms and biased projections, a fused query_key_value by
key/value group, μP scalings, a GeGELU MLP, the embeddings as the head with the tokenizer's
unused ids (100256 to 100351) at minus infinity, and block-sparse attention in every
`dense_attention_every_n_layers`-th layer from the first. The vocabulary is the real one
(100352), because the reference writes those ids whatever the vocabulary (out of bounds in a
smaller one); the model is otherwise tiny. Blocks of 32 with one local block and a vertical
stride of 2 (or 3), and a prompt of 70 tokens, so that the pattern masks something.

The reference's multi-token forward adds its boolean causal mask to the block-sparse scores
(as 0 and 1), so a query there also sees the later tokens of its own block; its cached decode
one token at a time does not. Every fixture here comes from that decode: the model's forward
is wrapped to feed a prompt one token at a time through the cache (a fresh one when none is
given), which is what a prompt gives in our implementation.
"""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402
from mlx_lm.models import phi3small  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "block-sparse layers (local and vertical blocks, per head), fused grouped query_key_value, GeGELU, μP scalings with and without mup_use_scaling, RoPE position scale, masked unused ids, Hugging Face layout (rotary buffers), 4-bit"

_forward = phi3small.Model.__call__


def _decoded(self, inputs, cache=None):
    """The reference's forward, one token at a time through its cache."""
    if inputs.shape[1] == 1:
        return _forward(self, inputs, cache=cache)
    if cache is None:
        cache = make_prompt_cache(self)
    steps = [_forward(self, inputs[:, i : i + 1], cache=cache) for i in range(inputs.shape[1])]
    return mx.concatenate(steps, axis=1)


phi3small.Model.__call__ = _decoded

BASE = {
    "model_type": "phi3small",
    "hidden_size": 32,
    "dense_attention_every_n_layers": 2,
    "ff_intermediate_size": 64,
    "gegelu_limit": 1.0,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "layer_norm_epsilon": 1e-5,
    "vocab_size": 100352,
    "mup_width_multiplier": 1.0,
    "mup_embedding_multiplier": 10.0,
    "blocksparse_block_size": 32,
    "blocksparse_num_local_blocks": 1,
    "blocksparse_vert_stride": 2,
    "rope_embedding_base": 10000.0,
}
PROMPT = [(37 * i + 11) % 1000 for i in range(70)]


def hf_layout(weights, config):
    """Rotary buffers beside each attention, as transformers checkpoints carry them."""
    out = dict(weights)
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    for i in range(config["num_hidden_layers"]):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = mx.arange(0, head_dim, 2, dtype=mx.float32)
    return out


CASES = [
    {"name": "block_sparse", "config": BASE, "steps": 8},
    {"name": "mha_no_mup_scaling_position_scale", "config": {
        **BASE, "num_key_value_heads": 4, "mup_use_scaling": False, "mup_width_multiplier": 2.0,
        "rope_position_scale": 0.5, "blocksparse_vert_stride": 3, "dense_attention_every_n_layers": 1,
        "gegelu_limit": 20.0, "mup_attn_multiplier": 2.0}, "steps": 8},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout, "steps": 8},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}, "steps": 8},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
