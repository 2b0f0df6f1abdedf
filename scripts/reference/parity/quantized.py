"""Parity cases of quantized checkpoints (the reference's `quantize_model`, saved and loaded
back through its loader): python quantized.py OUT_DIR."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
}
QWEN3 = {
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]

CASES = [
    # Every linear layer, the embedding and the untied head at 4 bits.
    {"name": "llama_4bit", "config": {**LLAMA, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 32}},
    # Per-layer entries: an 8-bit layer with its own group size, a layer left dense, and the
    # tied embedding (quantized) doubling as the head.
    {"name": "llama_mixed", "config": {**LLAMA, "tie_word_embeddings": True},
     "quantize": {"bits": 4, "group_size": 64, "layers": {
         "model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 32},
         "model.layers.1.self_attn.q_proj": False,
     }}},
    # 3 bits (packing across word boundaries) and 6 bits.
    {"name": "llama_3bit", "config": {**LLAMA, "tie_word_embeddings": False},
     "quantize": {"bits": 3, "group_size": 32}},
    {"name": "llama_6bit", "config": {**LLAMA, "tie_word_embeddings": True},
     "quantize": {"bits": 6, "group_size": 64}},
    # qwen3 (explicit head_dim, q/k norms stay dense) at 4 bits, tied and untied.
    {"name": "qwen3_4bit_tied", "config": {**QWEN3, "tie_word_embeddings": True},
     "quantize": {"bits": 4, "group_size": 32}},
    {"name": "qwen3_4bit_untied", "config": {**QWEN3, "tie_word_embeddings": False},
     "quantize": {"bits": 4, "group_size": 64}},
    # A microscaling mode: uint8 scales, no biases.
    {"name": "llama_mxfp4", "config": {**LLAMA, "tie_word_embeddings": False},
     "quantize": {"mode": "mxfp4"}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
