"""Parity cases of `glm4_moe`: python glm4_moe.py OUT_DIR. A dense first layer, then eight
experts of width 32 in four groups (two groups kept per token, two experts per token) beside
one shared expert; RoPE on half of each head."""
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "sigmoid routing with a correction bias and group-limited top-k, routed scaling, a shared expert, dense first layers, partial RoPE, q/k norms, Hugging Face per-expert layout with a multi-token-prediction layer, 4-bit with a dense router"

BASE = {
    "model_type": "glm4_moe",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "n_group": 4,
    "topk_group": 2,
    "n_shared_experts": 1,
    "n_routed_experts": 8,
    "routed_scaling_factor": 2.5,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "use_qk_norm": True,
    "tie_word_embeddings": False,
    "attention_bias": True,
    "partial_rotary_factor": 0.5,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' names (one tensor per expert), and a multi-token-prediction layer after
    the last (both sides drop it)."""
    out = unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")
    last, mtp = config["num_hidden_layers"] - 1, config["num_hidden_layers"]
    for key in [k for k in out if k.startswith(f"model.layers.{last}.")]:
        out[key.replace(f"layers.{last}.", f"layers.{mtp}.", 1)] = out[key]
    out[f"model.layers.{mtp}.eh_proj.weight"] = mx.zeros((64, 128))
    return out


CASES = [
    {"name": "grouped", "config": BASE},
    {"name": "one_group_no_shared", "config": {**BASE, "n_group": 1, "topk_group": 1, "n_shared_experts": None,
                                               "norm_topk_prob": False, "use_qk_norm": False,
                                               "attention_bias": False, "partial_rotary_factor": 1.0,
                                               "first_k_dense_replace": 0}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
