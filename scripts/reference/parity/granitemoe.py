"""Parity cases of `granitemoe`: python granitemoe.py OUT_DIR. Granite's multipliers
(embeddings x12, attention scale 1/128, residual branches x0.22, logits / 8) around four
experts of width 48, two per token."""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "top-k then float32 softmax routing, granite's multipliers, Hugging Face fused input_linear layout, 4-bit with the reference's 8-bit layers"

BASE = {
    "model_type": "granitemoe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "embedding_multiplier": 12.0,
    "attention_multiplier": 0.0078125,
    "residual_multiplier": 0.22,
    "logits_scaling": 8.0,
    "attention_bias": False,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' names: gate and up fused into `input_linear` (halves), the down
    projections as `output_linear`."""
    out = {}
    for key, value in weights.items():
        if ".switch_mlp.gate_proj." in key:
            up = weights[key.replace(".gate_proj.", ".up_proj.")]
            out[key.replace("switch_mlp.gate_proj", "input_linear")] = mx.concatenate([value, up], axis=1)
        elif ".switch_mlp.up_proj." in key:
            continue
        elif ".switch_mlp.down_proj." in key:
            out[key.replace("switch_mlp.down_proj", "output_linear")] = value
        else:
            out[key] = value
    return out


CASES = [
    {"name": "tied", "config": {**BASE, "tie_word_embeddings": True}},
    {"name": "untied_bias", "config": {**BASE, "tie_word_embeddings": False, "attention_bias": True}},
    {"name": "hf_layout", "config": {**BASE, "tie_word_embeddings": True}, "hf_layout": hf_layout},
    {"name": "4bit", "config": {**BASE, "tie_word_embeddings": False}, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
