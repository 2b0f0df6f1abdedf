"""Reference values for the gated delta rule (`mlx_models::nn::gated_delta`), computed by
mlx-lm 0.32.2's `models/gated_delta.py` on the CPU (its ops path: the Metal kernels do not
exist there) and its `Qwen3NextRMSNormGated`.

Usage: python gated_delta.py OUT_DIR

Writes OUT_DIR/gated_delta.safetensors: per case `<case>.<input>` and `<case>.<output>` arrays,
and in the metadata `<case>` (JSON) what the case runs. Run by tests/tests/blocks_gated_delta.rs
at test time and cached under the target directory.
"""

import json
import os
import sys

import mlx.core as mx
from mlx_lm.models.gated_delta import (
    compute_g,
    gated_delta_ops,
    gated_delta_update,
    normalize_qk,
)
from mlx_lm.models.qwen3_next import Qwen3NextRMSNormGated

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
mx.random.seed(0)
arrays, meta = {}, {}


def normal(shape, scale=1.0):
    return mx.random.normal(shape) * scale


def update_case(name, B, T, Hk, Hv, Dk, Dv, state=False, mask=None, dtype=mx.float32, rate=(0.5, 16)):
    """`gated_delta_update` from the projections, after `normalize_qk`, as the layers call it;
    decay rates exp(A_log) drawn from `rate`."""
    q = normal((B, T, Hk, Dk)).astype(dtype)
    k = normal((B, T, Hk, Dk)).astype(dtype)
    v = normal((B, T, Hv, Dv)).astype(dtype)
    a = normal((B, T, Hv)).astype(dtype)
    b = normal((B, T, Hv)).astype(dtype)
    A_log = mx.log(mx.random.uniform(low=rate[0], high=rate[1], shape=(Hv,))).astype(dtype)
    dt_bias = normal((Hv,), 0.5).astype(dtype)
    s0 = normal((B, Hv, Dv, Dk), 0.3) if state else None
    m = mx.array(mask) if mask is not None else None
    qn, kn = normalize_qk(q, k, inv_scale=Dk**-0.5, eps=1e-6)
    y, s = gated_delta_update(qn, kn, v, a, b, A_log, dt_bias, s0, m, use_kernel=False)
    inputs = {"q": q, "k": k, "v": v, "a": a, "b": b, "A_log": A_log, "dt_bias": dt_bias}
    if s0 is not None:
        inputs["state"] = s0
    if m is not None:
        inputs["mask"] = m
    outputs = {"qn": qn, "kn": kn, "g": compute_g(A_log, a, dt_bias), "y": y, "final_state": s}
    for key, value in {**inputs, **outputs}.items():
        arrays[f"{name}.{key}"] = value
    meta[name] = json.dumps({"kind": "update", "dtype": str(dtype).rsplit(".", 1)[-1]})


def ops_case(name, B, T, Hk, Hv, Dk, Dv, vector_gate, mask=None):
    """`gated_delta_ops` on given decays and betas (a per-feature decay when `vector_gate`)."""
    q = normal((B, T, Hk, Dk), 0.3)
    k = normal((B, T, Hk, Dk), 0.3)
    v = normal((B, T, Hv, Dv))
    g_shape = (B, T, Hv, Dk) if vector_gate else (B, T, Hv)
    g = mx.random.uniform(low=0.5, high=1.0, shape=g_shape)
    beta = mx.random.uniform(shape=(B, T, Hv))
    s0 = normal((B, Hv, Dv, Dk), 0.3)
    m = mx.array(mask) if mask is not None else None
    y, s = gated_delta_ops(q, k, v, g, beta, s0, m)
    values = {"q": q, "k": k, "v": v, "g": g, "beta": beta, "state": s0, "y": y, "final_state": s}
    if m is not None:
        values["mask"] = m
    for key, value in values.items():
        arrays[f"{name}.{key}"] = value
    meta[name] = json.dumps({"kind": "ops", "dtype": "float32"})


def norm_case(name, dtype):
    norm = Qwen3NextRMSNormGated(16, eps=1e-6)
    norm.weight = (1.0 + normal((16,), 0.1)).astype(dtype)
    x = normal((2, 5, 3, 16)).astype(dtype)
    z = normal((2, 5, 3, 16)).astype(dtype)
    values = {"weight": norm.weight, "x": x, "z": z, "gated": norm(x, z), "plain": norm(x)}
    for key, value in values.items():
        arrays[f"{name}.{key}"] = value
    meta[name] = json.dumps({"kind": "norm", "dtype": str(dtype).rsplit(".", 1)[-1]})


LEFT_PADDED = [[True] * 7, [False] * 3 + [True] * 4]
RIGHT_PADDED = [[True] * 7, [True] * 5 + [False] * 2]
LONG_PADDED = [[True] * 80, [False] * 5 + [True] * 75]

update_case("grouped_prefill", 2, 7, 2, 4, 16, 8)
update_case("grouped_state_masked", 2, 7, 2, 4, 16, 8, state=True, mask=LEFT_PADDED)
update_case("right_padded", 2, 7, 1, 3, 8, 8, state=True, mask=RIGHT_PADDED)
update_case("decode_step", 2, 1, 2, 4, 16, 8, state=True)
update_case("same_heads_long", 1, 64, 2, 2, 32, 16)
update_case("grouped_long_state", 2, 64, 1, 4, 16, 16, state=True)
# Two chunks of the chunked prefill, a padded row, and decays that reach zero in float32.
update_case("long_masked_strong_decay", 2, 80, 2, 4, 16, 8, state=True, mask=LONG_PADDED, rate=(1e3, 1e5))
update_case("long_two_chunks", 1, 130, 2, 4, 32, 16, state=True)
for dt in (mx.float16, mx.bfloat16):
    tag = str(dt).rsplit(".", 1)[-1]
    update_case(f"{tag}_grouped_long", 2, 64, 2, 4, 16, 8, state=True)
    update_case(f"{tag}_masked", 2, 7, 2, 4, 16, 8, mask=LEFT_PADDED)
    update_case(f"{tag}_long_masked", 2, 80, 2, 4, 16, 8, state=True, mask=LONG_PADDED)
ops_case("ops_scalar_gate", 2, 7, 2, 4, 8, 8, vector_gate=False, mask=LEFT_PADDED)
ops_case("ops_vector_gate", 2, 7, 2, 4, 8, 8, vector_gate=True, mask=LEFT_PADDED)
ops_case("ops_vector_gate_long", 1, 64, 1, 2, 8, 4, vector_gate=True)
for dt in (mx.float32, mx.float16, mx.bfloat16):
    norm_case(f"norm_{str(dt).rsplit('.', 1)[-1]}", dt)

mx.eval(arrays)
mx.save_safetensors(os.path.join(OUT, "gated_delta.safetensors"), arrays, metadata=meta)
