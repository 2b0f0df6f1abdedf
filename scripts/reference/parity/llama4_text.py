"""Parity cases of `llama4_text`: python llama4_text.py OUT_DIR. mlx-lm 0.32.2's module of this
name is dense (RoPE in some layers, weightless q/k norms); three layers, the middle one without
RoPE."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "layers without RoPE by no_rope_layers, traditional RoPE, weightless q/k norms, explicit head_dim, a head named output"

BASE = {
    "model_type": "llama4_text",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 256,
    "intermediate_size_mlp": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 500000.0,
    "no_rope_layers": [1, 0, 1],
    "use_qk_norm": True,
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "untied_qk_norm", "config": BASE},
    {"name": "tied_no_qk_norm", "config": {**BASE, "tie_word_embeddings": True, "use_qk_norm": False}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
