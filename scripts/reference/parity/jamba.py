"""Parity cases of `jamba`: python jamba.py OUT_DIR. Mamba mixers (with RMS norms on the time
step, B and C) and attention layers without positions by `attn_layer_period` /
`attn_layer_offset` or `layers_block_type`; a mixture of experts (router, top-k then softmax)
every `expert_layer_period` layers, a dense SwiGLU elsewhere."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "Mamba mixers with normed time step, B and C (conv and scan state in an arrays cache) and attention layers without RoPE by period and offset or layers_block_type, grouped-query heads, a mixture of experts by period and offset (top-k then softmax) with dense MLPs elsewhere, projection and conv biases, explicit time-step rank, tied and untied head, prefill in chunks of 1, 7 and 64, left-padded batches (the Mamba layers masked, beyond the reference), Hugging Face layout (per-expert tensors, [C, 1, K] conv), 4-bit (8-bit router)"

BASE = {
    "model_type": "jamba",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "attn_layer_period": 4,
    "attn_layer_offset": 2,
    "expert_layer_period": 2,
    "expert_layer_offset": 1,
    "mamba_d_conv": 4,
    "mamba_d_state": 8,
    "mamba_expand": 2,
    "mamba_dt_rank": "auto",
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(80)]


def hf_layout(weights, config):
    """transformers' layout: one tensor per expert, depthwise conv filters as [C, 1, K]."""
    out = {}
    for k, v in weights.items():
        if ".feed_forward.switch_mlp." in k:
            for e in range(v.shape[0]):
                out[k.replace(".switch_mlp.", f".experts.{e}.")] = v[e]
        elif k.endswith("conv1d.weight"):
            out[k] = v.moveaxis(2, 1)
        else:
            out[k] = v
    return out


CASES = [
    {"name": "periods", "config": BASE},
    {"name": "block_types_untied_biases", "config": {
        **BASE, "num_hidden_layers": 5, "tie_word_embeddings": False, "mamba_proj_bias": True,
        "mamba_conv_bias": False, "mamba_dt_rank": 6, "num_key_value_heads": 4,
        "expert_layer_period": 3, "expert_layer_offset": 0, "num_experts": 3, "num_experts_per_tok": 1,
        "layers_block_type": ["mamba", "attention", "mamba", "mamba", "attention"]}},
    {"name": "dense_only", "config": {**BASE, "num_experts": 1, "num_experts_per_tok": 1,
                                      "attn_layer_period": 3, "attn_layer_offset": 0}},
    {"name": "hf_layout_long_prompt", "config": {**BASE, "mamba_d_conv": 3}, "hf_layout": hf_layout,
     "prompt": LONG_PROMPT, "steps": 8},
    {"name": "quantized_4bit", "config": {**BASE, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
