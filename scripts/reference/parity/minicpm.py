"""Parity cases of `minicpm`: python minicpm.py OUT_DIR.

minicpm is llama with embeddings times `scale_emb`, residual branches times
`scale_depth / sqrt(num_hidden_layers)` and the head's input divided by
`hidden_size / dim_model_base`. The reference's sanitize copies the embeddings into a missing
`lm_head` (MiniCPM's releases tie it). It cannot load a `tie_word_embeddings` checkpoint (that
sanitize adds an `lm_head` the tied model lacks), so there is no tied case.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "embedding scale, depth-scaled residuals, head input divided by hidden_size / dim_model_base, linear RoPE scaling, Hugging Face layout without lm_head (the embeddings copied), 4-bit"

BASE = {
    "model_type": "minicpm",
    "hidden_size": 64,
    "dim_model_base": 16,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "scale_depth": 1.4,
    "scale_emb": 12.0,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]


def without_head(weights, config):
    """MiniCPM's releases: no `lm_head` (the reference copies the embeddings there)."""
    return {k: v for k, v in weights.items() if not k.startswith("lm_head.")}


CASES = [
    {"name": "untied", "config": BASE},
    {"name": "linear_rope_gqa1", "config": {**BASE, "num_key_value_heads": 4, "num_hidden_layers": 2,
                                            "rope_scaling": {"type": "linear", "factor": 2.0}}},
    {"name": "hf_layout_no_head", "config": BASE, "hf_layout": without_head},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
