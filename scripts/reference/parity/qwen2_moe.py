"""Parity cases of `qwen2_moe`: python qwen2_moe.py OUT_DIR. Eight experts of width 32, two
per token, and a shared expert of width 96 behind its sigmoid gate."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "softmax top-k routing without renormalising, a sigmoid-gated shared expert, biased q/k/v, Hugging Face per-expert layout, 4-bit"

BASE = {
    "model_type": "qwen2_moe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 96,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' names: one tensor per expert."""
    return unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")


CASES = [
    {"name": "base", "config": BASE},
    {"name": "one_kv_head", "config": {**BASE, "num_key_value_heads": 1, "num_experts_per_tok": 3}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
