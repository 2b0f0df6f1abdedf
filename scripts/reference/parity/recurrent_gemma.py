"""Parity cases of `recurrent_gemma`: python recurrent_gemma.py OUT_DIR. Griffin: residual
blocks whose temporal block is a recurrent block (gated branch, causal conv with its state,
RG-LRU; an arrays cache of two) or local attention (one key/value head, RoPE on half of each
head, a rotating cache of the window), by the cyclic `block_types`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

COVERS = "RG-LRU recurrent blocks (block-diagonal gates, conv and recurrent state in an arrays cache) and local attention (one key/value head, RoPE on half of each head, rotating cache of the window) by cyclic block_types or _block_types, zero-centred RMS norms, GeGLU MLP with biases, embeddings scaled by sqrt(width) or not, logit soft-cap or none, head from the checkpoint or tied, prompts longer than the window, prefill in chunks of 1, 7 and 64, left-padded batches (the recurrent blocks masked, beyond the reference), Hugging Face conv layout, 4-bit"

BASE = {
    "model_type": "recurrent_gemma",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "attention_bias": False,
    "conv1d_width": 4,
    "logits_soft_cap": 30.0,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_window_size": 32,
    "block_types": ["recurrent", "recurrent", "attention"],
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(80)]


def hf_layout(weights, config):
    """transformers' layout: depthwise conv filters as [C, 1, K]; tied checkpoints have no head."""
    return {k: (v.moveaxis(2, 1) if k.endswith("conv_1d.weight") else v)
            for k, v in weights.items() if not k.startswith("lm_head.")}


CASES = [
    {"name": "cyclic_blocks", "config": BASE},
    {"name": "underscore_block_types_no_cap", "config": {
        **{k: v for k, v in BASE.items() if k != "block_types"}, "num_hidden_layers": 3,
        "_block_types": ["attention", "recurrent"], "logits_soft_cap": 0.0,
        "embeddings_scale_by_sqrt_dim": False}},
    {"name": "hf_layout_tied_long_prompt", "config": {**BASE, "attention_window_size": 16,
                                                      "tie_word_embeddings": True},
     "hf_layout": hf_layout, "prompt": LONG_PROMPT, "steps": 8},
    {"name": "quantized_4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
