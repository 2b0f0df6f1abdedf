"""Parity cases of `qwen3_moe`: python qwen3_moe.py OUT_DIR. Eight experts of width 32, two per
token; one case routes enough (token, expert) pairs that the experts sort the tokens."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases, unstack_experts  # noqa: E402

COVERS = "softmax top-k routing with and without norm_topk_prob, dense layers by mlp_only_layers and decoder_sparse_step, sorted experts, Hugging Face per-expert layout, 4-bit with the 8-bit router"

BASE = {
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128]
LONG_PROMPT = [(7 * i + 3) % 256 for i in range(40)]


def hf_layout(weights, config):
    """transformers' names: one tensor per expert."""
    return unstack_experts(weights, ".mlp.switch_mlp.", ".mlp.experts.{e}.")


CASES = [
    {"name": "untied", "config": BASE},
    {"name": "tied_no_renorm", "config": {**BASE, "tie_word_embeddings": True, "norm_topk_prob": False}},
    # Layer 0 dense by mlp_only_layers, layer 2 dense by the step, layers 1 and 3 sparse.
    {"name": "dense_layers", "config": {**BASE, "num_hidden_layers": 4, "mlp_only_layers": [0],
                                        "decoder_sparse_step": 2}},
    {"name": "sorted_experts", "config": {**BASE, "num_experts_per_tok": 4}, "prompt": LONG_PROMPT},
    {"name": "hf_layout", "config": BASE, "hf_layout": hf_layout},
    # The reference's quant_predicate keeps the router at 8 bits, group 64.
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
