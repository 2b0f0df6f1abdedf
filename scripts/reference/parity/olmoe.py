"""Parity cases of `olmoe`: python olmoe.py OUT_DIR. Eight experts of width 32, two per
token."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "softmax top-k routing with and without norm_topk_prob, q/k norms over all heads, biased experts, linear RoPE scaling, Hugging Face per-expert layout, 4-bit"

BASE = {
    "model_type": "olmoe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def hf_layout(weights, config):
    """transformers' names: one tensor per expert."""
    return unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")


CASES = [
    {"name": "tied", "config": BASE},
    {"name": "untied_renorm_biases", "config": {**BASE, "tie_word_embeddings": False, "norm_topk_prob": True,
                                                "mlp_bias": True, "attention_bias": True,
                                                "num_key_value_heads": 2,
                                                "rope_scaling": {"type": "linear", "factor": 2.0}}},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
