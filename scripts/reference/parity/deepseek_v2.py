"""Parity cases of `deepseek_v2`: python deepseek_v2.py OUT_DIR. DeepSeek-V2's latent attention
without absorption (four heads of 16 + 8 features, a latent of 32, low-rank queries or one query
projection, yarn RoPE), a dense first layer, then eight experts of width 32 routed greedily or
within two of four groups, two experts per token, beside one shared expert."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "latent attention expanded by kv_b_proj (low-rank or plain queries), yarn RoPE with and without mscale_all_dim, softmax routing greedy and group-limited, routed scaling, a shared expert, dense first layers and moe_layer_freq, Hugging Face per-expert layout, 4-bit"

BASE = {
    "model_type": "deepseek_v2",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 1.0, "original_max_position_embeddings": 4096},
    "q_lora_rank": 32,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "topk_method": "greedy",
    "n_group": None,
    "topk_group": None,
    "n_shared_experts": 1,
    "n_routed_experts": 8,
    "routed_scaling_factor": 2.5,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "attention_bias": False,
}
YARN = {
    "type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 1024,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' names: one tensor per expert."""
    return unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")


GROUPED = {**BASE, "topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2}

CASES = [
    {"name": "greedy", "config": BASE},
    {"name": "grouped_q_proj_yarn", "config": {**GROUPED, "q_lora_rank": None, "rope_scaling": YARN,
                                               "attention_bias": True, "n_shared_experts": None,
                                               "first_k_dense_replace": 0, "moe_layer_freq": 2}},
    {"name": "grouped_yarn", "config": {**GROUPED, "rope_scaling": YARN}},
    {"name": "hf_layout", "config": GROUPED, "hf_layout": hf_layout},
    {"name": "4bit", "config": GROUPED, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
