"""What the pinned reference needs to run on this CPU; imported by blocks.py and parity.py."""

import mlx.core as mx

# mlx-lm 0.32.2's QuantizedSwitchLinear passes `global_scale=` to `mx.gather_qmm`, which MLX
# 0.32.2 does not take (a TypeError: quantized MoE layers fail in the pinned reference). The
# argument is always None for the layers built here, so drop it and keep everything else.
_gather_qmm = mx.gather_qmm


def _gather_qmm_compat(*args, global_scale=None, **kwargs):
    assert global_scale is None
    return _gather_qmm(*args, **kwargs)


mx.gather_qmm = _gather_qmm_compat


# MLX 0.32.2's CPU GatherMM has float32 kernels only ("[GatherMM::eval] Currently only supports
# float32"), so a float16 or bfloat16 mixture of experts fails on this CPU in the reference. Its
# half-precision runs here compute the experts' products in float32 and cast back, which is
# what mlx-models does on the CPU (GPU kernels take half inputs directly).
_gather_mm = mx.gather_mm


def _gather_mm_compat(a, b, *args, **kwargs):
    if a.dtype in (mx.float16, mx.bfloat16) and mx.default_device() == mx.cpu:
        out = _gather_mm(a.astype(mx.float32), b.astype(mx.float32), *args, **kwargs)
        return out.astype(a.dtype)
    return _gather_mm(a, b, *args, **kwargs)


mx.gather_mm = _gather_mm_compat
