"""Reference values for the recurrent blocks of `mlx_models::nn::rglru` and `nn::mamba`,
computed by mlx-lm 0.32.2's own functions and modules on random inputs and weights.

Usage: python recurrent.py OUT_DIR. Writes OUT_DIR/recurrent.safetensors:
- `scan.<case>.*`: `rnn_scan(x, a, h0)` of recurrent_gemma (one position or seven, with and
  without a starting state, float32 and bfloat16);
- `rglru.*`: recurrent_gemma's `RGLRU` module on a sequence of 9 positions, then 3 more from
  its state; its parameters as `rglru.param.<name>`;
- `mamba.*`: mamba's `MambaBlock` with an arrays cache on 7 positions, then 3 more (conv and
  SSM state carried); its parameters as `mamba.param.<name>`.
The Rust test tests/tests/blocks_recurrent.rs runs our blocks on the same inputs."""
import os
import sys

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import mamba, recurrent_gemma
from mlx_lm.models.cache import ArraysCache

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
mx.random.seed(0)
arrays = {}

for dtype in (mx.float32, mx.bfloat16):
    name = str(dtype).rsplit(".", 1)[-1]
    for length in (1, 7):
        for with_state in (False, True):
            case = f"{name}_{length}_{'state' if with_state else 'fresh'}"
            x = mx.random.normal((2, length, 6)).astype(dtype)
            a = mx.random.uniform(shape=(2, length, 6)).astype(dtype)
            h0 = mx.random.normal((2, 6)).astype(dtype) if with_state else None
            y, last = recurrent_gemma.rnn_scan(x, a, h0)
            arrays.update({f"scan.{case}.x": x, f"scan.{case}.a": a, f"scan.{case}.y": y,
                           f"scan.{case}.last": last})
            if h0 is not None:
                arrays[f"scan.{case}.h0"] = h0


def randomize(module, scale=0.3):
    params = tree_flatten(module.parameters())
    new = [(k, mx.random.normal(v.shape) * scale) for k, v in params]
    module.load_weights(new)
    return dict(new)


rglru = recurrent_gemma.RGLRU(width=16, num_heads=4)
for k, v in randomize(rglru).items():
    arrays[f"rglru.param.{k}"] = v
x1 = mx.random.normal((2, 9, 16))
x2 = mx.random.normal((2, 3, 16))
y1, h1 = rglru(x1)
y2, h2 = rglru(x2, cache=h1)
arrays.update({"rglru.x1": x1, "rglru.x2": x2, "rglru.y1": y1, "rglru.h1": h1, "rglru.y2": y2,
               "rglru.h2": h2})

args = mamba.ModelArgs(model_type="mamba", vocab_size=32, hidden_size=16, intermediate_size=24,
                       state_size=8, num_hidden_layers=1, conv_kernel=4, use_bias=True,
                       use_conv_bias=True, time_step_rank=3)
block = mamba.MambaBlock(args)
for k, v in randomize(block).items():
    arrays[f"mamba.param.{k}"] = v
cache = ArraysCache(size=2)
x1 = mx.random.normal((2, 7, 16))
x2 = mx.random.normal((2, 3, 16))
y1 = block(x1, cache)
y2 = block(x2, cache)
whole = block(mx.concatenate([x1, x2], axis=1), None)
arrays.update({"mamba.x1": x1, "mamba.x2": x2, "mamba.y1": y1, "mamba.y2": y2, "mamba.whole": whole,
               "mamba.conv_state": cache[0], "mamba.ssm_state": cache[1]})

mx.eval(arrays)
mx.save_safetensors(os.path.join(OUT, "recurrent.safetensors"), arrays)
