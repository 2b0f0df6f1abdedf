"""Parity cases of `stablelm`: python stablelm.py OUT_DIR.

stablelm (StableLM 2, StableLM 3B 4E1T, StableCode): LayerNorms, RoPE on
`partial_rotary_factor` of each head, biases on the q/k/v projections or not, per-head
LayerNorms on queries and keys (`qk_layernorm`, one `norms.{h}` module per head), attention
scores from float32 queries and keys, a SwiGLU MLP, the residual sequential or parallel
(`use_parallel_residual`), an untied head. The reference has no sanitize; its layout is the
Hugging Face one.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "partial rotary, q/k/v biases, per-head q/k LayerNorms, parallel / sequential residual, float32 scores, 4-bit"

BASE = {
    "model_type": "stablelm",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "intermediate_size": 128,
    "rope_theta": 10000.0,
    "use_qkv_bias": False,
    "partial_rotary_factor": 0.25,
    "layer_norm_eps": 1e-5,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "sequential", "config": BASE},
    {"name": "qkv_bias_gqa", "config": {**BASE, "use_qkv_bias": True, "num_key_value_heads": 2,
                                        "partial_rotary_factor": 0.5, "num_hidden_layers": 3}},
    {"name": "parallel_qk_layernorm", "config": {**BASE, "use_parallel_residual": True, "qk_layernorm": True,
                                                 "num_key_value_heads": 2, "layer_norm_eps": 1e-6}},
    {"name": "quantized_qk_layernorm", "config": {**BASE, "qk_layernorm": True},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
