"""Parity cases of `minicpm3`: python minicpm3.py OUT_DIR. MiniCPM3's latent attention without
absorption (four heads of 16 + 8 features, values of hidden_size / heads = 16, a latent of 32,
low-rank queries), su-scaled RoPE on the rotated parts, embeddings times `scale_emb`, residual
branches times `scale_depth / sqrt(num_hidden_layers)`, and an untied head fed the hidden states
divided by `hidden_size / dim_model_base` (the tied head, as the reference has it, is not).

The reference has no sanitize: a Hugging Face checkpoint is already in its layout. Its RoPE
rotates with `long_factor` at every length (`short_factor` is read and unused), the rotated
features scaled by sqrt(1 + ln(max / original) / ln(original)) when `max_position_embeddings`
exceeds `original_max_position_embeddings`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "latent attention expanded by kv_b_proj, su-scaled RoPE with long factors past original_max_position_embeddings (and the magnitude scale), scale_emb, scale_depth on the residuals, dim_model_base on the untied head, tied embeddings, attention biases, 4-bit"

ROPE_DIM = 8


def factors(start, step):
    return [round(start + step * i, 4) for i in range(ROPE_DIM // 2)]


# As MiniCPM3-4B writes it: `original_max_position_embeddings` equal to the context length.
LONGROPE = {
    "type": "longrope",
    "long_factor": factors(1.0, 0.5),
    "short_factor": factors(1.0, 0.05),
    "original_max_position_embeddings": 4096,
}
# The context extended eightfold past an original of 16: the 36 positions of the prompt and
# its continuation go past it, and the rotated features are scaled by sqrt(1 + ln 8 / ln 16).
EXTENDED = {
    "type": "longrope",
    "long_factor": factors(1.2, 1.5),
    "short_factor": factors(1.0, 0.1),
    "original_max_position_embeddings": 16,
}

BASE = {
    "model_type": "minicpm3",
    "hidden_size": 64,
    "dim_model_base": 16,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "q_lora_rank": 32,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": ROPE_DIM,
    "scale_depth": 1.4,
    "scale_emb": 12,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": LONGROPE,
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied", "config": {**BASE, "tie_word_embeddings": True, "scale_emb": 0.5}},
    {"name": "extended_long_factor", "config": {**BASE, "rope_scaling": EXTENDED, "max_position_embeddings": 128,
                                                "attention_bias": True}},
    # One factor for every rotated pair, as the reference broadcasts it.
    {"name": "scalar_long_factor", "config": {**BASE, "rope_scaling": {"type": "longrope", "long_factor": 1.5,
                                                                       "original_max_position_embeddings": 32},
                                              "max_position_embeddings": 64, "scale_depth": 0.7}},
    {"name": "4bit", "config": {**BASE, "rope_scaling": EXTENDED, "max_position_embeddings": 128},
     "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
