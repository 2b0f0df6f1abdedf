"""Reference values for the shared state-space blocks (`mlx_models::nn::ssm`), computed by
mlx-lm 0.32.2's `ssm_update` (on the CPU, its ops path `ssm_attn`) on random inputs.

Usage: python ssm.py OUT_DIR. Writes OUT_DIR/ssd.safetensors: for each case `<case>.<input>`
and `<case>.y`, `<case>.state`, with the case's settings in the metadata as JSON. The Rust test
tests/tests/blocks_ssm.rs runs `nn::ssm::ssd` on the same inputs. Cases: one and two scan
chunks (300 positions), grouped and ungrouped B/C, with and without a starting state, a
left-padding mask, per-row lengths, one decoded position (the recurrence step), clipped time
steps, float32 and bfloat16."""
import json
import os
import sys

import mlx.core as mx
from mlx_lm.models.ssm import ssm_update

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
mx.random.seed(0)

CASES = {
    "prompt": dict(b=2, l=7, h=4, dh=8, g=2, n=16, state=False),
    "two_chunks": dict(b=1, l=300, h=4, dh=8, g=1, n=8, state=False),
    "with_state": dict(b=2, l=9, h=6, dh=4, g=3, n=8, state=True),
    "decode_step": dict(b=2, l=1, h=4, dh=8, g=2, n=16, state=True),
    "masked": dict(b=2, l=10, h=4, dh=8, g=2, n=8, state=True, pad=[0, 3]),
    "masked_decode": dict(b=2, l=1, h=4, dh=8, g=2, n=8, state=True, pad=[0, 1]),
    "lengths": dict(b=2, l=8, h=4, dh=8, g=2, n=8, state=True, lengths=[8, 5]),
    "limits": dict(b=1, l=12, h=4, dh=8, g=1, n=8, state=True, limit=[0.2, 0.9]),
    "bfloat16": dict(b=2, l=11, h=4, dh=8, g=2, n=16, state=True, dtype="bfloat16"),
    "bfloat16_step": dict(b=2, l=1, h=4, dh=8, g=2, n=16, state=True, dtype="bfloat16"),
}

arrays, meta = {}, {}
for name, c in CASES.items():
    dtype = getattr(mx, c.get("dtype", "float32"))
    b, l, h, dh, g, n = (c[k] for k in ("b", "l", "h", "dh", "g", "n"))
    x = mx.random.normal((b, l, h, dh)).astype(dtype)
    B = mx.random.normal((b, l, g, n)).astype(dtype)
    C = mx.random.normal((b, l, g, n)).astype(dtype)
    dt = (mx.random.normal((b, l, h)) * 0.5).astype(dtype)
    a_log = (mx.random.normal((h,)) * 0.5).astype(dtype)
    d = mx.random.normal((h,)).astype(dtype)
    dt_bias = (mx.random.normal((h,)) * 0.5).astype(dtype)
    state = mx.random.normal((b, h, dh, n)) if c["state"] else None
    mask = None
    if "pad" in c:
        mask = mx.arange(l)[None, :] >= mx.array(c["pad"])[:, None]
    lengths = mx.array(c["lengths"]) if "lengths" in c else None
    limit = tuple(c.get("limit", [0.0, float("inf")]))
    y, new_state = ssm_update(x, a_log, B, C, d, dt, dt_bias, state, limit, mask, lengths)
    case = {"x": x, "b": B, "c": C, "dt": dt, "a_log": a_log, "d": d, "dt_bias": dt_bias,
            "y": y, "new_state": new_state}
    if state is not None:
        case["state"] = state
    if mask is not None:
        case["mask"] = mask
    if lengths is not None:
        case["lengths"] = lengths
    arrays.update({f"{name}.{k}": v for k, v in case.items()})
    meta[name] = json.dumps({"limit": [limit[0], min(limit[1], 3.0e38)]})

mx.eval(arrays)
mx.save_safetensors(os.path.join(OUT, "ssd.safetensors"), arrays, meta)
