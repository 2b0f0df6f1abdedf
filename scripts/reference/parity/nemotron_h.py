"""Parity cases of `nemotron_h`: python nemotron_h.py OUT_DIR. Blocks chosen per layer by
`hybrid_override_pattern`: Mamba2 mixers (8 heads of 16, 2 groups, grouped gated norm),
attention without positions, relu² MLPs, and mixtures of eight relu² experts routed by
sigmoid scores with a correction bias (two per token, group-limited)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "Mamba2, attention, relu² MLP and MoE blocks by hybrid_override_pattern, grouped gated norm, group-limited sigmoid routing with correction bias, shared experts, latent expert projections, transformers' layers_block_type names, caches only for Mamba2 and attention blocks, a prompt over 64 tokens, Hugging Face per-expert and conv layout with MTP weights, 4-bit"

BASE = {
    "model_type": "nemotron_h",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "attention_bias": False,
    "mamba_num_heads": 8,
    "mamba_head_dim": 16,
    "mamba_proj_bias": False,
    "ssm_state_size": 16,
    "conv_kernel": 4,
    "n_groups": 2,
    "mlp_bias": False,
    "layer_norm_epsilon": 1e-5,
    "use_bias": False,
    "use_conv_bias": True,
    "hybrid_override_pattern": "M*M-ME",
    "moe_intermediate_size": 32,
    "moe_shared_expert_intermediate_size": 64,
    "n_group": 2,
    "topk_group": 1,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(100)]


def hf_layout(weights, config):
    """transformers' layout: one tensor per expert (`up_proj` / `down_proj`), depthwise conv
    filters as [C, 1, K], and the multi-token-prediction weights the reference drops."""
    out = {}
    for key, value in unstack_experts(weights, ".mixer.switch_mlp.", ".mixer.experts.{e}.").items():
        key = key.replace(".fc1.", ".up_proj.").replace(".fc2.", ".down_proj.")
        out[key] = value.moveaxis(2, 1) if key.endswith("conv1d.weight") else value
    out["mtp.layers.0.norm.weight"] = weights["backbone.norm_f.weight"]
    return out


CASES = [
    {"name": "moe_shared", "config": BASE},
    {"name": "dense_biases", "config": {**BASE, "hybrid_override_pattern": ["M", "-", "*", "M", "-"],
                                        "attention_bias": True, "mamba_proj_bias": True, "mlp_bias": True,
                                        "use_conv_bias": False, "head_dim": 32, "n_groups": 1,
                                        "time_step_limit": [0.05, 2.0]}},
    {"name": "latent_moe", "config": {**BASE, "hybrid_override_pattern": "ME*ME", "moe_latent_size": 32,
                                      "n_shared_experts": None, "n_group": 1, "topk_group": 1,
                                      "norm_topk_prob": False, "routed_scaling_factor": 1.0}},
    {"name": "long_prompt", "config": BASE, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "hf_layout", "config": {**{k: v for k, v in BASE.items() if k != "hybrid_override_pattern"},
                                     "layers_block_type": ["mamba", "attention", "mamba", "mlp", "mamba", "moe"]},
     "hf_layout": hf_layout},
    {"name": "quantized_4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
