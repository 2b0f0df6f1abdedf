"""Parity cases of `phimoe`: python phimoe.py OUT_DIR. Four experts of width 48, two per token,
routed by sparsemixer (a jitter band wide enough that the second expert's weight is not 1)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, w123_layout  # noqa: E402

COVERS = "sparsemixer routing, LayerNorms, biased attention and head, plain and su-scaled RoPE with long_mscale, Hugging Face per-expert w1/w2/w3 layout, 4-bit"

BASE = {
    "model_type": "phimoe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
    "router_jitter_noise": 0.5,
    "max_position_embeddings": 4096,
    "original_max_position_embeddings": 4096,
}
SU = {
    "short_factor": [1.0 + 0.05 * i for i in range(8)],
    "long_factor": [1.0 + 0.25 * i for i in range(8)],
    "short_mscale": 1.1,
    "long_mscale": 1.2,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


CASES = [
    {"name": "plain_rope", "config": BASE},
    {"name": "su_scaled", "config": {**BASE, "rope_scaling": SU, "max_position_embeddings": 16384}},
    {"name": "su_default_mscale", "config": {**BASE, "rope_scaling": {**SU, "long_mscale": None},
                                             "max_position_embeddings": 16384}},
    {"name": "hf_layout", "config": BASE, "hf_layout": w123_layout},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
