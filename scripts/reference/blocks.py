"""Reference values for the shared building blocks (issue 4), computed by mlx-lm 0.32.2.

Usage: python blocks.py OUT_DIR

Writes one safetensors file per group into OUT_DIR: the inputs, the reference's outputs, and
(in the metadata, as JSON) the configs. The Rust tests in tests/tests/blocks_*.rs rebuild
each block from the same inputs and compare. Nothing here is committed output: the tests run
this script at test time and cache the result under the target directory.
"""

import json
import os
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_map_with_path
from mlx_lm.models import cache as C
from mlx_lm.models.activations import swiglu, swiglu_oai
from mlx_lm.models.base import (
    create_attention_mask,
    create_causal_mask,
    quantized_scaled_dot_product_attention,
    scaled_dot_product_attention,
)
from mlx_lm.models.gemma import RMSNorm as GemmaRMSNorm
from mlx_lm.models.rope_utils import SuScaledRoPE, apply_yarn_mscale, initialize_rope
from mlx_lm.models.switch_layers import SwitchGLU, SwitchLinear, SwitchMLP

import compat  # noqa: E402,F401  (quantized switch layers on the pinned MLX)

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
mx.random.seed(0)


def save(name, arrays, meta=None):
    arrays = {k: v for k, v in arrays.items()}
    mx.eval(arrays)
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (meta or {}).items()}
    mx.save_safetensors(os.path.join(OUT, name + ".safetensors"), arrays, meta)


def normal(*shape, scale=1.0):
    return mx.random.normal(shape) * scale


# ---------------------------------------------------------------- RoPE
def rope_group():
    head_dim = 32
    x = normal(2, 3, 5, head_dim)
    arrays = {"x": x}
    meta = {}
    cases = {
        "default": dict(dims=32, base=10000.0, scaling=None),
        "default_partial": dict(dims=16, base=10000.0, scaling=None),
        "linear": dict(dims=32, base=10000.0, scaling={"type": "linear", "factor": 2.0}),
        "dynamic": dict(dims=32, base=10000.0, max_pos=16, scaling={"type": "dynamic", "factor": 2.0}),
        "llama3": dict(
            dims=32,
            base=500000.0,
            max_pos=131072,
            scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
        "llama3_small_context": dict(
            dims=32,
            base=10000.0,
            max_pos=4096,
            scaling={"rope_type": "llama3", "factor": 4.0, "original_max_position_embeddings": 64},
        ),
        "yarn": dict(
            dims=32,
            base=10000.0,
            max_pos=16384,
            scaling={
                "type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 4096,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 1.0,
                "mscale_all_dim": 0.707,
            },
        ),
        "deepseek_yarn": dict(
            dims=32,
            base=10000.0,
            max_pos=163840,
            scaling={
                "rope_type": "deepseek_yarn",
                "factor": 40,
                "original_max_position_embeddings": 4096,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
            },
        ),
        "longrope": dict(
            dims=32,
            base=10000.0,
            max_pos=131072,
            scaling={
                "type": "longrope",
                "original_max_position_embeddings": 4096,
                "short_factor": [1.0 + 0.1 * i for i in range(16)],
                "long_factor": [1.0 + 0.7 * i for i in range(16)],
            },
        ),
        "proportional": dict(
            dims=32,
            base=10000.0,
            scaling={"rope_type": "proportional", "partial_rotary_factor": 0.5, "factor": 2.0},
        ),
        "mrope": dict(dims=32, base=10000.0, scaling={"type": "mrope", "mrope_section": [4, 6, 6]}),
    }
    offsets = [0, 1, 9, 40]
    for name, case in cases.items():
        for trad in (False, True):
            rope = initialize_rope(
                case["dims"], case["base"], trad, case["scaling"], case.get("max_pos")
            )
            for off in offsets:
                arrays[f"{name}.{int(trad)}.{off}"] = rope(x, offset=off)
            if name != "dynamic":  # the reference's dynamic NTK takes int offsets only
                arrays[f"{name}.{int(trad)}.batch"] = rope(x, offset=mx.array([3, 11]))
        meta[name] = {
            "dims": case["dims"],
            "base": case["base"],
            "max_position_embeddings": case.get("max_pos"),
            "rope_scaling": case["scaling"],
            "attention_scale": apply_yarn_mscale(0.125, case["scaling"]),
        }
    # phi3's spelling "su" builds SuScaledRoPE directly
    su = cases["longrope"]
    rope = SuScaledRoPE(
        32,
        base=su["base"],
        max_position_embeddings=su["max_pos"],
        original_max_position_embeddings=4096,
        short_factor=su["scaling"]["short_factor"],
        long_factor=su["scaling"]["long_factor"],
    )
    for off in offsets:
        arrays[f"su.0.{off}"] = rope(x, offset=off)
    meta["su"] = dict(meta["longrope"], rope_scaling=dict(su["scaling"], type="su"))
    # transformers v5 spelling: the scaling lives in `rope_parameters` with `rope_theta`
    params = dict(cases["llama3"]["scaling"], rope_theta=500000.0)
    rope = initialize_rope(32, params["rope_theta"], False, params, 131072)
    for off in offsets:
        arrays[f"rope_parameters.0.{off}"] = rope(x, offset=off)
    meta["rope_parameters"] = {"config": {"rope_parameters": params, "max_position_embeddings": 131072}}
    meta["offsets"] = offsets
    save("rope", arrays, meta)


# ---------------------------------------------------------------- masks and attention
def attention_group():
    arrays = {}
    arrays["causal_36_w8"] = create_causal_mask(36, 0, window_size=8)
    arrays["causal_5_off7"] = create_causal_mask(5, 7)
    arrays["causal_5_off7_w4"] = create_causal_mask(5, 7, window_size=4)
    lp = mx.array([0, 2, 5])
    rp = mx.array([1, 0, 3])
    arrays["left_padding"] = lp
    arrays["right_padding"] = rp
    arrays["causal_6_left"] = create_causal_mask(6, 0, left_padding=lp)
    arrays["causal_6_off2_left_right"] = create_causal_mask(6, 2, left_padding=lp, right_padding=rp)

    # create_attention_mask without a cache
    h36 = mx.zeros((1, 36, 4))
    arrays["attn_mask_36_w8"] = create_attention_mask(h36, None, window_size=8)
    arrays["attn_mask_36_array"] = create_attention_mask(h36, None, return_array=True)
    kv = C.KVCache()
    kv.update_and_fetch(mx.zeros((1, 1, 10, 4)), mx.zeros((1, 1, 10, 4)))
    arrays["kv_mask_5_off10_array"] = create_attention_mask(mx.zeros((1, 5, 4)), kv, return_array=True)
    arrays["kv_mask_5_off10_w4"] = create_attention_mask(mx.zeros((1, 5, 4)), kv, window_size=4)
    arrays["kv_mask_1_off10_w4"] = create_attention_mask(mx.zeros((1, 1, 4)), kv, window_size=4)

    B, Hq, Hk, L, D = 2, 8, 2, 36, 16
    q = normal(B, Hq, L, D)
    k = normal(B, Hk, L, D)
    v = normal(B, Hk, L, D)
    sinks = normal(Hq)
    scale = D**-0.5
    arrays.update(q=q, k=k, v=v, sinks=sinks)
    win = create_causal_mask(L, 0, window_size=8)
    additive = normal(L, L) * 2.0
    arrays["additive"] = additive
    sdpa = lambda q, k, v, mask, sinks=None: scaled_dot_product_attention(
        q, k, v, cache=None, scale=scale, mask=mask, sinks=sinks
    )
    arrays["sdpa_none"] = sdpa(q, k, v, None)
    arrays["sdpa_causal"] = sdpa(q, k, v, "causal")
    arrays["sdpa_window8"] = sdpa(q, k, v, win)
    arrays["sdpa_additive"] = sdpa(q, k, v, additive)
    arrays["sdpa_causal_sinks"] = sdpa(q, k, v, "causal", sinks)
    arrays["sdpa_window8_sinks"] = sdpa(q, k, v, win, sinks)
    # one decode step against all 36 keys, and a padded batch
    arrays["sdpa_decode"] = sdpa(q[:, :, -1:], k, v, None)
    padmask = create_causal_mask(L, 0, left_padding=mx.array([0, 7]))
    arrays["sdpa_left_padded"] = sdpa(q, k, v, padmask)

    # quantized keys and values: attention through quantized_matmul
    Dq = 64
    q2 = normal(B, Hq, 6, Dq)
    k2 = normal(B, Hk, 6, Dq)
    v2 = normal(B, Hk, 6, Dq)
    arrays.update(q2=q2, k2=k2, v2=v2)
    q2_copy = mx.array(q2 * 1.0)
    mx.eval(q2_copy)
    for bits in (4, 8):
        qc = C.QuantizedKVCache(group_size=32, bits=bits)
        qk, qv = qc.update_and_fetch(k2, v2)
        for mname, m in (("none", None), ("causal", "causal"), ("window3", create_causal_mask(6, 0, window_size=3))):
            # a fresh array each call: the reference scales its `queries` in place (`*=`)
            arrays[f"qsdpa_{bits}_{mname}"] = scaled_dot_product_attention(
                mx.array(q2), qk, qv, cache=qc, scale=Dq**-0.5, mask=m
            )
    mx.eval(arrays)
    assert mx.array_equal(arrays["q2"], q2_copy), "the reference scaled q2 in place"
    save("attention", arrays, {"scale": scale})


# ---------------------------------------------------------------- caches
def snap(x):
    """A copy that later in-place writes (`cache.keys[...] = ...` replaces the array inside the
    same Python object) cannot reach."""
    y = mx.array(x)
    mx.eval(y)
    return y


def record_kv(prefix, arrays, cache, step, keys, values):
    k, v = map(snap, cache.update_and_fetch(keys, values))
    arrays[f"{prefix}.{step}.in_k"] = keys
    arrays[f"{prefix}.{step}.in_v"] = values
    arrays[f"{prefix}.{step}.k"] = k
    arrays[f"{prefix}.{step}.v"] = v


def cache_group():
    arrays = {}
    meta = {}
    H, D = 2, 8

    def kv_in(n):
        return normal(1, H, n, D), normal(1, H, n, D)

    def run(prefix, cache, script, mask_queries=()):
        """script: list of ("update", n) / ("trim", n) / ("trim_front",); records
        everything after each step."""
        log = []
        for i, op in enumerate(script):
            entry = {"op": op[0]}
            if op[0] == "update":
                record_kv(prefix, arrays, cache, i, *kv_in(op[1]))
                entry["n"] = op[1]
            elif op[0] == "trim":
                entry["n"] = op[1]
                entry["trimmed"] = cache.trim(op[1])
            elif op[0] == "trim_front":
                cache.maybe_trim_front()
            entry["offset"] = int(cache.offset) if not isinstance(cache.offset, mx.array) else None
            entry["trimmable"] = bool(cache.is_trimmable())
            if hasattr(cache, "size"):
                entry["size"] = cache.size()
            if getattr(cache, "keys", None) is not None and not isinstance(cache.keys, tuple):
                entry["capacity"] = cache.keys.shape[2]
            if hasattr(cache, "_idx"):
                entry["idx"] = cache._idx
            masks = []
            for j, (n, window, ret) in enumerate(mask_queries):
                m = cache.make_mask(n, window_size=window, return_array=ret)
                if m is None:
                    masks.append("none")
                elif isinstance(m, str):
                    masks.append(m)
                else:
                    arrays[f"{prefix}.{i}.mask{j}"] = m
                    masks.append("array")
            entry["masks"] = masks
            if getattr(cache, "keys", None) is not None and op[0] != "update" and not isinstance(cache.keys, tuple):
                k, v = cache.keys_and_values() if hasattr(cache, "keys_and_values") else (cache.keys, cache.values)
                arrays[f"{prefix}.{i}.k"] = snap(k)
                arrays[f"{prefix}.{i}.v"] = snap(v)
            log.append(entry)
        meta[prefix] = {"script": log, "mask_queries": [list(q) for q in mask_queries]}

    mq = [(1, None, False), (3, None, False), (4, None, True), (1, 4, False), (3, 4, False)]
    run(
        "kv",
        C.KVCache(),
        [("update", 5), ("update", 1), ("update", 1), ("trim", 3), ("update", 300), ("update", 1), ("trim", 1000), ("update", 2)],
        mq,
    )
    rot_q = [(1, None, False), (3, None, False), (3, None, True), (1, 4, False), (3, 4, False)]
    # a prompt longer than the window, then decoding past several wraps, then another chunk
    run(
        "rot_long_prompt",
        C.RotatingKVCache(max_size=8, keep=2),
        [("update", 10)] + [("update", 1)] * 9 + [("update", 3)] + [("update", 1)] * 4,
        rot_q,
    )
    # short prompt, grow to the window, trim while trimmable, wrap, chunk, wrap again
    run(
        "rot_short",
        C.RotatingKVCache(max_size=8, keep=0),
        [("update", 3), ("update", 1), ("update", 1), ("trim", 2), ("update", 1)]
        + [("update", 1)] * 7
        + [("update", 5)]
        + [("update", 1)] * 10,
        rot_q,
    )
    # a window of 8 over a max size of 12 (the decode-step mask rolls)
    run(
        "rot_window",
        C.RotatingKVCache(max_size=12, keep=0),
        [("update", 6)] + [("update", 1)] * 14,
        [(1, 8, False), (2, 8, False)],
    )
    run(
        "chunked",
        C.ChunkedKVCache(chunk_size=8),
        [("update", 5), ("update", 1), ("trim_front",), ("update", 6), ("trim_front",), ("update", 1), ("trim", 2), ("update", 3), ("trim_front",)],
    )

    # quantized KV cache: the packed keys step by step
    for bits in (4, 8):
        qc = C.QuantizedKVCache(group_size=32, bits=bits)
        log = []
        for i, n in enumerate([5, 1, 260, 1]):
            kk, vv = normal(1, H, n, 64), normal(1, H, n, 64)
            qk, qv = qc.update_and_fetch(kk, vv)
            arrays[f"q{bits}.{i}.in_k"] = kk
            arrays[f"q{bits}.{i}.in_v"] = vv
            for j in range(3):
                arrays[f"q{bits}.{i}.k{j}"] = snap(qk[j])
                arrays[f"q{bits}.{i}.v{j}"] = snap(qv[j])
            log.append({"n": n, "offset": qc.offset, "capacity": qc.keys[0].shape[2]})
        trimmed = qc.trim(4)
        log.append({"trim": 4, "trimmed": trimmed, "offset": qc.offset})
        meta[f"q{bits}"] = log

    # to_quantized of a KV cache
    kvc = C.KVCache()
    kk, vv = normal(1, H, 7, 64), normal(1, H, 7, 64)
    kvc.update_and_fetch(kk, vv)
    qc = kvc.to_quantized(group_size=32, bits=4)
    arrays["to_quantized.in_k"] = kk
    arrays["to_quantized.in_v"] = vv
    for j in range(3):
        arrays[f"to_quantized.k{j}"] = qc.keys[j]

    # a left-padded batch: masks, updates, trim, filter, extract, merge
    bc = C.BatchKVCache([1, 3, 0])
    arrays["batch.0.mask"] = bc.make_mask(4)
    k, v = normal(3, H, 4, D), normal(3, H, 4, D)
    arrays["batch.0.in_k"], arrays["batch.0.in_v"] = k, v
    arrays["batch.0.k"], arrays["batch.0.v"] = map(snap, bc.update_and_fetch(k, v))
    arrays["batch.0.offset"] = snap(bc.offset)
    arrays["batch.1.mask"] = bc.make_mask(1)
    arrays["batch.1.mask_w3"] = bc.make_mask(1, window_size=3)
    k, v = normal(3, H, 1, D), normal(3, H, 1, D)
    arrays["batch.1.in_k"], arrays["batch.1.in_v"] = k, v
    arrays["batch.1.k"], arrays["batch.1.v"] = map(snap, bc.update_and_fetch(k, v))
    trimmed = bc.trim(2)
    arrays["batch.2.k"], arrays["batch.2.v"] = map(snap, bc.keys_and_values())
    arrays["batch.2.offset"] = snap(bc.offset)
    k, v = normal(3, H, 2, D), normal(3, H, 2, D)
    arrays["batch.3.in_k"], arrays["batch.3.in_v"] = k, v
    arrays["batch.3.k"], arrays["batch.3.v"] = map(snap, bc.update_and_fetch(k, v))
    bc.filter(mx.array([1, 2]))
    arrays["batch.4.k"], arrays["batch.4.v"] = map(snap, bc.keys_and_values())
    arrays["batch.4.offset"] = snap(bc.offset)
    arrays["batch.4.left_padding"] = snap(bc.left_padding)
    arrays["batch.4.mask"] = bc.make_mask(2)
    one = bc.extract(0)
    arrays["batch.5.k"] = snap(one.keys)
    singles = []
    for n in (3, 5):
        c = C.KVCache()
        kk, vv = normal(1, H, n, D), normal(1, H, n, D)
        arrays[f"batch.merge.in_k{n}"], arrays[f"batch.merge.in_v{n}"] = kk, vv
        c.update_and_fetch(kk, vv)
        singles.append(c)
    merged = C.BatchKVCache.merge(singles + [C.KVCache()])
    arrays["batch.merge.k"], arrays["batch.merge.v"] = map(snap, merged.keys_and_values())
    arrays["batch.merge.offset"] = snap(merged.offset)
    arrays["batch.merge.left_padding"] = snap(merged.left_padding)
    arrays["batch.merge.mask"] = merged.make_mask(1)
    meta["batch"] = {
        "trimmed": trimmed,
        "idx_after_filter": bc._idx,
        "extract_offset": one.offset,
        "merge_idx": merged._idx,
    }

    # arrays cache masks
    ac = C.ArraysCache(2, left_padding=[0, 2, 3])
    arrays["arrays.mask_left"] = ac.make_mask(5)
    ac.prepare(lengths=[5, 4, 2])
    arrays["arrays.mask_left_lengths"] = ac.make_mask(5)
    ac.advance(2)
    arrays["arrays.mask_advanced"] = ac.make_mask(3)

    # save_prompt_cache with every kind, read by the Rust loader
    caches = []
    kv = C.KVCache()
    kv.update_and_fetch(*kv_in(5))
    caches.append(kv)
    rot = C.RotatingKVCache(max_size=4, keep=1)
    rot.update_and_fetch(*kv_in(6))
    rot.update_and_fetch(*kv_in(1))
    caches.append(rot)
    qkv = C.QuantizedKVCache(group_size=32, bits=8)
    qkv.update_and_fetch(normal(1, H, 3, 64), normal(1, H, 3, 64))
    caches.append(qkv)
    ar = C.ArraysCache(2)
    ar[0] = normal(1, 3, 4)
    ar[1] = normal(1, 2, 4, 4)
    caches.append(ar)
    ch = C.ChunkedKVCache(chunk_size=8)
    ch.update_and_fetch(*kv_in(3))
    caches.append(ch)
    kv2 = C.KVCache()
    kv2.update_and_fetch(*kv_in(2))
    ar2 = C.ArraysCache(1)
    ar2[0] = normal(1, 5)
    caches.append(C.CacheList(kv2, ar2))
    path = os.path.join(OUT, "prompt_cache.safetensors")
    C.save_prompt_cache(path, caches, {"model": "tiny", "note": "blocks"})
    loaded = C.load_prompt_cache(path)
    expect = []
    for i, c in enumerate(loaded):
        e = {"class": type(c).__name__}
        if isinstance(c, (C.KVCache, C.RotatingKVCache, C.ChunkedKVCache)):
            k, v = c.keys_and_values() if not isinstance(c, C.RotatingKVCache) else (c.keys, c.values)
            arrays[f"pc.{i}.k"] = k
            arrays[f"pc.{i}.v"] = v
            e["offset"] = c.offset
        elif isinstance(c, C.QuantizedKVCache):
            for j in range(3):
                arrays[f"pc.{i}.k{j}"] = c.keys[j]
            e["offset"] = c.offset
        elif isinstance(c, C.ArraysCache):
            for j, a in enumerate(c.cache):
                arrays[f"pc.{i}.s{j}"] = a
        elif isinstance(c, C.CacheList):
            arrays[f"pc.{i}.0.k"] = c[0].keys_and_values()[0]
            arrays[f"pc.{i}.1.s0"] = c[1][0]
            e["inner"] = [type(x).__name__ for x in c.caches]
        expect.append(e)
    meta["prompt_cache"] = expect
    save("cache", arrays, meta)


# ---------------------------------------------------------------- quantized layers
def quantized_group():
    arrays = {}
    meta = {}
    x = normal(2, 3, 128)
    arrays["x"] = x
    w = normal(48, 128, scale=0.1)
    b = normal(48, scale=0.1)
    arrays["w"] = w
    arrays["b"] = b
    lin = nn.Linear(128, 48)
    lin.weight = w
    lin.bias = b
    arrays["dense"] = lin(x)
    lin_nb = nn.Linear(128, 48, bias=False)
    lin_nb.weight = w
    arrays["dense_nobias"] = lin_nb(x)
    cases = [("affine", 64, bits) for bits in (2, 3, 4, 5, 6, 8)]
    cases += [("affine", 32, 4), ("affine", 128, 8), ("mxfp4", 32, 4), ("nvfp4", 16, 4), ("mxfp8", 32, 8)]
    names = []
    for mode, gs, bits in cases:
        name = f"{mode}_{gs}_{bits}"
        names.append({"name": name, "mode": mode, "group_size": gs, "bits": bits})
        ql = nn.QuantizedLinear.from_linear(lin, group_size=gs, bits=bits, mode=mode)
        arrays[f"{name}.weight"] = ql.weight
        arrays[f"{name}.scales"] = ql.scales
        if ql.get("biases") is not None:
            arrays[f"{name}.biases"] = ql.biases
        arrays[f"{name}.out"] = ql(x)
        arrays[f"{name}.dequantized"] = mx.dequantize(
            ql.weight, ql.scales, ql.get("biases"), group_size=gs, bits=bits, mode=mode
        )
    meta["cases"] = names

    # embeddings: rows and the tied output projection
    table = normal(40, 128, scale=0.1)
    ids = mx.array([[0, 5, 39, 5], [7, 7, 1, 2]])
    arrays["table"] = table
    arrays["ids"] = ids
    emb = nn.Embedding(40, 128)
    emb.weight = table
    arrays["emb.dense"] = emb(ids)
    arrays["emb.dense_as_linear"] = emb.as_linear(x)
    emb_cases = [("affine", 64, 4), ("affine", 32, 8), ("affine", 64, 3), ("mxfp4", 32, 4)]
    en = []
    for mode, gs, bits in emb_cases:
        name = f"emb.{mode}_{gs}_{bits}"
        en.append({"name": name, "mode": mode, "group_size": gs, "bits": bits})
        qe = nn.QuantizedEmbedding.from_embedding(emb, group_size=gs, bits=bits, mode=mode)
        arrays[f"{name}.weight"] = qe.weight
        arrays[f"{name}.scales"] = qe.scales
        if qe.get("biases") is not None:
            arrays[f"{name}.biases"] = qe.biases
        arrays[f"{name}.out"] = qe(ids)
        arrays[f"{name}.as_linear"] = qe.as_linear(x)
    meta["emb_cases"] = en
    save("quantized", arrays, meta)


# ---------------------------------------------------------------- switch layers
def switch_group():
    arrays = {}
    meta = {}
    E, D, Hd = 4, 64, 128
    glu = SwitchGLU(D, Hd, E)
    mlp = SwitchMLP(D, Hd, E, bias=True)
    lin = SwitchLinear(D, Hd, E, bias=True)
    # wider weights than the default initialisation
    for mod in (glu, mlp, lin):
        mod.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.08, mod.parameters()))
    for prefix, mod in (("glu", glu), ("mlp", mlp), ("lin", lin)):
        for k, v in tree_flatten(mod.parameters()):
            arrays[f"{prefix}.param.{k}"] = v
    # small: 2 x 5 tokens, 2 experts each, some repeated (no sorting); large: 2 x 40 x 2 (sorted)
    small_x = normal(2, 5, D)
    small_idx = mx.array(
        [[[0, 0], [1, 3], [2, 2], [3, 1], [0, 3]], [[1, 1], [2, 0], [3, 3], [0, 1], [2, 2]]],
        dtype=mx.uint32,
    )
    large_x = normal(2, 40, D)
    large_idx = mx.random.randint(0, E, (2, 40, 2)).astype(mx.uint32)
    large_idx[0, :5] = 2  # repeated experts within and across tokens
    for case, x, idx in (("small", small_x, small_idx), ("large", large_x, large_idx)):
        arrays[f"{case}.x"] = x
        arrays[f"{case}.idx"] = idx
        arrays[f"{case}.glu"] = glu(x, idx)
        arrays[f"{case}.mlp"] = mlp(x, idx)
        arrays[f"{case}.lin"] = lin(mx.expand_dims(x, (-2, -3)), idx)
    # quantized experts
    for bits in (4, 8):
        qglu = SwitchGLU(D, Hd, E)
        qglu.update(glu.parameters())
        nn.quantize(qglu, group_size=64, bits=bits)
        for k, v in tree_flatten(qglu.parameters()):
            arrays[f"qglu{bits}.param.{k}"] = v
        for case, x, idx in (("small", small_x, small_idx), ("large", large_x, large_idx)):
            arrays[f"{case}.qglu{bits}"] = qglu(x, idx)
    # Wide experts (1024 rows in the gate and up projections): products that mlx-models splits
    # across the CPU's cores must equal MLX's single product.
    wide = SwitchGLU(D, 1024, E)
    wide.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.08, wide.parameters()))
    nn.quantize(wide, group_size=32, bits=4)
    for k, v in tree_flatten(wide.parameters()):
        arrays[f"qglu_wide.param.{k}"] = v
    for case, x, idx in (("small", small_x, small_idx), ("large", large_x, large_idx)):
        arrays[f"{case}.qglu_wide"] = wide(x, idx)
    # mxfp4 experts with biases, as gpt_oss has them (the large case is grouped by expert on
    # the CPU, its experts dequantized).
    qglu_fp4 = SwitchGLU(D, Hd, E, bias=True)
    qglu_fp4.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.08, qglu_fp4.parameters()))
    nn.quantize(qglu_fp4, group_size=32, bits=4, mode="mxfp4")
    for k, v in tree_flatten(qglu_fp4.parameters()):
        arrays[f"qglu_mxfp4.param.{k}"] = v
    for case, x, idx in (("small", small_x, small_idx), ("large", large_x, large_idx)):
        arrays[f"{case}.qglu_mxfp4"] = qglu_fp4(x, idx)
    qmlp = SwitchMLP(D, Hd, E, bias=True)
    qmlp.update(mlp.parameters())
    nn.quantize(qmlp, group_size=32, bits=4, mode="mxfp4")
    for k, v in tree_flatten(qmlp.parameters()):
        arrays[f"qmlp_mxfp4.param.{k}"] = v
    for case, x, idx in (("small", small_x, small_idx), ("large", large_x, large_idx)):
        arrays[f"{case}.qmlp_mxfp4"] = qmlp(x, idx)
    save("switch", arrays, meta)


# ---------------------------------------------------------------- activations and norms
def layers_group():
    arrays = {}
    x = normal(3, 64, scale=3.0)
    gate = normal(3, 64, scale=4.0)
    arrays.update(x=x, gate=gate)
    arrays["silu"] = nn.silu(x)
    arrays["gelu"] = nn.gelu(x)
    arrays["gelu_approx"] = nn.gelu_approx(x)
    arrays["gelu_fast_approx"] = nn.gelu_fast_approx(x)
    arrays["relu"] = nn.relu(x)
    arrays["relu2"] = nn.relu2(x)
    arrays["swiglu"] = swiglu(gate, x)
    arrays["geglu"] = nn.gelu_approx(gate) * x
    arrays["swiglu_oai"] = swiglu_oai(gate, x)
    w = normal(64, scale=0.3)
    bias = normal(64, scale=0.3)
    arrays.update(w=w, bias=bias)
    rms = nn.RMSNorm(64, eps=1e-6)
    rms.weight = w
    arrays["rms_norm"] = rms(x)
    g = GemmaRMSNorm(64, eps=1e-6)
    g.weight = w
    arrays["rms_norm_zero_centered"] = g(x)
    ln = nn.LayerNorm(64, eps=1e-5)
    ln.weight = w
    ln.bias = bias
    arrays["layer_norm"] = ln(x)
    ln_nb = nn.LayerNorm(64, eps=1e-5, bias=False)
    ln_nb.weight = w
    arrays["layer_norm_nobias"] = ln_nb(x)
    ln_na = nn.LayerNorm(64, eps=1e-5, affine=False)
    arrays["layer_norm_plain"] = ln_na(x)
    save("layers", arrays)



# ---------------------------------------------------------------- mixture-of-experts routers
class _Spy(nn.Module):
    """Stands in for a block's experts: records the experts chosen and returns row j of the
    identity for the j-th of them, so that the block's output holds the weights it applied."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def __call__(self, x, inds):
        self.seen = inds
        eye = mx.eye(inds.shape[-1], x.shape[-1], dtype=x.dtype)
        return mx.broadcast_to(eye, tuple(inds.shape) + (x.shape[-1],))


def _route_block(block, logits, experts_attr="switch_mlp"):
    """Runs a reference MoE block on `logits` as its input, its gate the identity: the experts
    it picks and their weights."""
    spy = _Spy()
    setattr(block, experts_attr, spy)
    k = None
    out = block(logits)
    k = spy.seen.shape[-1]
    return spy.seen.reshape(*logits.shape[:-1], k), out[..., :k]


def router_group():
    from mlx_lm.models import glm4_moe, gpt_oss, granitemoe, mixtral, olmoe, phimoe, qwen2_moe, qwen3_moe

    E, K = 8, 2
    arrays = {}
    logits = mx.random.normal((2, 6, E))
    # Ties: a row of equal logits, rows rounded to one decimal, a tie at the top-k boundary.
    logits[0, 0] = 0.5
    logits[0, 1:4] = mx.round(logits[0, 1:4] * 2) / 2
    logits[1, 0] = mx.array([3.0, 1.0, 1.0, 1.0, 0.0, -1.0, 1.0, 2.0])
    logits[1, 1] = mx.array([2.0, 2.0, 2.0, 0.0, 0.0, 2.0, -3.0, 1.0])
    arrays["logits"] = logits
    identity = mx.eye(E)

    def common(extra):
        base = dict(model_type="x", hidden_size=E, num_hidden_layers=1, intermediate_size=4,
                    num_attention_heads=1, rms_norm_eps=1e-5, vocab_size=16)
        base.update(extra)
        return base

    # qwen3_moe: softmax, argpartition(x, -k)[-k:], renormalised or not.
    for renorm in (True, False):
        args = qwen3_moe.ModelArgs(**common(dict(
            num_experts=E, num_experts_per_tok=K, decoder_sparse_step=1, mlp_only_layers=[],
            moe_intermediate_size=4, num_key_value_heads=1, head_dim=8, rope_theta=1e4,
            tie_word_embeddings=True, max_position_embeddings=64, norm_topk_prob=renorm)))
        block = qwen3_moe.Qwen3MoeSparseMoeBlock(args)
        block.gate.weight = identity
        name = f"qwen3_moe_{'renorm' if renorm else 'plain'}"
        arrays[f"{name}.inds"], arrays[f"{name}.scores"] = _route_block(block, logits)

    # qwen2_moe: softmax, argpartition(-x, k-1)[:k]; its shared expert zeroed.
    args = qwen2_moe.ModelArgs(**common(dict(
        num_experts=E, num_experts_per_tok=3, moe_intermediate_size=4,
        shared_expert_intermediate_size=4)))
    block = qwen2_moe.Qwen2MoeSparseMoeBlock(args)
    block.gate.weight = identity
    block.shared_expert_gate.weight = mx.zeros_like(block.shared_expert_gate.weight)
    block.shared_expert.down_proj.weight = mx.zeros_like(block.shared_expert.down_proj.weight)
    arrays["qwen2_moe.inds"], arrays["qwen2_moe.scores"] = _route_block(block, logits)

    # olmoe: as qwen2_moe, over flattened tokens, renormalised.
    args = olmoe.ModelArgs(**common(dict(num_experts=E, num_experts_per_tok=K, norm_topk_prob=True)))
    block = olmoe.OlmoeSparseMoeBlock(args)
    block.gate.weight = identity
    arrays["olmoe.inds"], arrays["olmoe.scores"] = _route_block(block, logits)

    # mixtral: top-k logits (argpartition(-x, k-1)[:k]), then softmax.
    args = mixtral.ModelArgs(**common(dict(num_local_experts=E, num_experts_per_tok=K)))
    block = mixtral.MixtralSparseMoeBlock(args)
    block.gate.weight = identity
    arrays["mixtral.inds"], arrays["mixtral.scores"] = _route_block(block, logits)

    # granitemoe: top-k logits (argpartition(x, -k)[-k:]), softmax in float32.
    gating = granitemoe.GraniteMoeTopKGating(E, E, K)
    gating.layer.weight = identity
    arrays["granitemoe.inds"], arrays["granitemoe.scores"] = gating(logits)

    # gpt_oss: mlx_topk, then softmax; the router's bias zeroed.
    args = gpt_oss.ModelArgs(num_hidden_layers=1, num_local_experts=E, num_experts_per_tok=4,
                             vocab_size=16, hidden_size=E, intermediate_size=4, head_dim=8,
                             num_attention_heads=1, num_key_value_heads=1)
    block = gpt_oss.MLPBlock(args)
    block.router.weight = identity
    block.router.bias = mx.zeros((E,))
    arrays["gpt_oss.inds"], arrays["gpt_oss.scores"] = _route_block(block, logits, "experts")

    # phimoe: sparsemixer.
    inds, scores = phimoe.sparsemixer(logits, top_k=K, jitter_eps=0.01)
    arrays["phimoe.inds"], arrays["phimoe.scores"] = inds, scores

    # glm4_moe: sigmoid, correction bias, group-limited top-k, renormalised, scaled.
    bias = mx.random.normal((E,)) * 0.1
    arrays["glm4_moe.bias"] = bias
    for name, n_group, topk_group, renorm in (("glm4_moe_groups", 4, 2, True),
                                              ("glm4_moe_one_group", 1, 1, False)):
        inds, scores = glm4_moe.group_expert_select(logits, bias, K, n_group, topk_group, 2.5, renorm)
        arrays[f"{name}.inds"], arrays[f"{name}.scores"] = inds, scores
    save("router", arrays)


# ---------------------------------------------------------------- multi-head latent attention
def mla_group():
    """deepseek_v3's attention alone, random weights, through a KV cache: a prefill of 37
    positions then one (absorbed decode at offset 37), one position at offset 0, and a chunk of
    5 after 37 (expanded keys at an offset). Two shapes: low-rank queries with yarn's
    `mscale_all_dim` in the scale, and one `q_proj` with biases and plain RoPE."""
    from mlx_lm.models import deepseek_v3

    arrays, meta = {}, {}
    configs = {
        "lora": dict(q_lora_rank=24, attention_bias=False, rope_theta=10000.0,
                     max_position_embeddings=256,
                     rope_scaling={"type": "yarn", "factor": 4.0, "mscale": 1.0,
                                   "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1,
                                   "original_max_position_embeddings": 64}),
        "plain": dict(q_lora_rank=None, attention_bias=True, rope_theta=500.0,
                      max_position_embeddings=256, rope_scaling=None),
    }
    for name, extra in configs.items():
        config = dict(model_type="deepseek_v3", vocab_size=16, hidden_size=64,
                      intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=4, kv_lora_rank=32, qk_nope_head_dim=16,
                      qk_rope_head_dim=8, v_head_dim=12, rms_norm_eps=1e-6)
        config.update(extra)
        meta[f"{name}.config"] = config
        attn = deepseek_v3.DeepseekV3Attention(deepseek_v3.ModelArgs(**config))

        def spread(path, p):
            if "layernorm" in path:
                return 1.0 + normal(*p.shape, scale=0.2)
            if path.endswith("bias"):
                return normal(*p.shape, scale=0.1)
            return normal(*p.shape, scale=p.shape[-1] ** -0.5)

        attn.update(tree_map_with_path(spread, attn.parameters()))
        for k, v in tree_flatten(attn.parameters()):
            arrays[f"{name}.param.{k}"] = v

        B = 2
        x_pre = normal(B, 37, 64)
        x_one = normal(B, 1, 64)
        x_chunk = normal(B, 5, 64)
        arrays.update({f"{name}.x_pre": x_pre, f"{name}.x_one": x_one,
                       f"{name}.x_chunk": x_chunk})

        def run(x, cache):
            mask = create_attention_mask(x, cache, return_array=True)
            return attn(x, mask, cache)

        cache = C.KVCache()
        arrays[f"{name}.prefill"] = run(x_pre, cache)
        n = cache.offset
        arrays[f"{name}.prefill.keys"] = cache.keys[..., :n, :]
        arrays[f"{name}.prefill.values"] = cache.values[..., :n, :]
        arrays[f"{name}.step"] = run(x_one, cache)  # offset 37, one position
        arrays[f"{name}.first"] = run(x_one, C.KVCache())  # offset 0, one position
        cache = C.KVCache()
        run(x_pre, cache)
        arrays[f"{name}.chunk"] = run(x_chunk, cache)  # offset 37, five positions
    save("mla", arrays, meta)


rope_group()
attention_group()
cache_group()
quantized_group()
switch_group()
layers_group()
print("blocks reference written to", OUT)
router_group()
mla_group()
