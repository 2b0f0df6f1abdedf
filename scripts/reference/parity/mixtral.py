"""Parity cases of `mixtral`: python mixtral.py OUT_DIR. Four experts of width 48, two per
token."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, w123_layout  # noqa: E402

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


CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_traditional", "config": {**BASE, "tie_word_embeddings": True, "rope_traditional": True}},
    {"name": "sorted_experts", "config": BASE, "prompt": LONG_PROMPT},
    {"name": "hf_layout", "config": BASE, "hf_layout": w123_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
