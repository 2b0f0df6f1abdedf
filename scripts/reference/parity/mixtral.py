"""Parity cases of `mixtral`: python mixtral.py OUT_DIR. Four experts of width 48, two per
token."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "top-k then softmax routing, traditional RoPE, sorted experts, Hugging Face per-expert w1/w2/w3 layout, 4-bit experts"

BASE = {
    "model_type": "mixtral",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(11 * i + 5) % 256 for i in range(36)]
HF_NAMES = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}


def hf_layout(weights, config):
    """transformers' names: `block_sparse_moe.experts.{e}.w1/w2/w3`, one tensor per expert."""
    out = {}
    for key, value in unstack_experts(weights, ".switch_mlp.", ".experts.{e}.").items():
        for ours, theirs in HF_NAMES.items():
            key = key.replace(f".{ours}.", f".{theirs}.") if ".experts." in key else key
        out[key] = value
    return out


CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_traditional", "config": {**BASE, "tie_word_embeddings": True, "rope_traditional": True}},
    {"name": "sorted_experts", "config": BASE, "prompt": LONG_PROMPT},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
