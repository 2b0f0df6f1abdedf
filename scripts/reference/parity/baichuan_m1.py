"""Parity cases of `baichuan_m1`: python baichuan_m1.py OUT_DIR.

baichuan_m1 (Baichuan-M1) is llama's pre-norm layer with queries, keys and values fused in
`W_pack` and the keys and values passed through a two-tap causal convolution over the positions,
one pair of taps per key/value head (`conv_k`, `conv_v`), before RoPE; its state (the last raw
key and value) lives in an arrays cache beside the key/value cache. `sliding_window_layers` attend
to the last `sliding_window` positions through a rotating cache, with their own heads when
`num_swa_attention_heads` / `num_swa_key_value_heads` are set. The prompt (20 tokens) is longer
than the windows. The reference's sanitize divides the head's rows by their norms unless the head
is quantized: every float case's checkpoint carries the raw head (as a Hugging Face one does),
the 4-bit case a quantized one it leaves alone. The taps are randomized like every weight (the
reference initializes them to zero). The reference cannot run a tied head.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity import run_cases  # noqa: E402

# What the cases cover, for the README's architecture table (tests/tests/readme.rs).
COVERS = "fused W_pack, two-tap key/value convolution with its state in a cache list, sliding-window layers with their own heads, all and no sliding layers, the head normalized when read (raw and quantized heads), prefill in chunks, 4-bit"

BASE = {
    "model_type": "baichuan_m1",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 10000.0,
    "sliding_window": 6,
    "sliding_window_layers": [1, 3],
    "conv_window": 2,
}
PROMPT = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128, 11, 200, 77, 8, 19, 140, 66, 2]

CASES = [
    {"name": "sliding_layers", "config": BASE},
    {"name": "sliding_heads_first_layer", "config": {
        **BASE, "num_hidden_layers": 3, "sliding_window_layers": [2, 0], "sliding_window": 5,
        "num_swa_attention_heads": 8, "num_swa_key_value_heads": 2, "num_key_value_heads": 4,
        "rope_theta": 50000.0}},
    {"name": "all_sliding_mha", "config": {
        **BASE, "num_hidden_layers": 2, "sliding_window_layers": [0, 1], "num_key_value_heads": 4}},
    {"name": "no_sliding_one_kv_head", "config": {
        **BASE, "num_hidden_layers": 2, "sliding_window_layers": [], "num_key_value_heads": 1}},
    {"name": "4bit", "config": BASE, "quantize": {"bits": 4, "group_size": 32}},
]

if __name__ == "__main__":
    run_cases(CASES, Path(sys.argv[1]), default_prompt=PROMPT)
