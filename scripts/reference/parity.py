"""Architecture parity fixtures, computed by the reference (mlx-lm 0.32.2 on MLX 0.32.2).

For each case: build a tiny random model with mlx-lm's own classes from a config dict, spread
its weights wider than the default initialisation (so that logits are far from ties), optionally
quantize it, save it as a checkpoint, load it back through mlx-lm's loader (its sanitize and
strict loading), then record what the reference computes:

- `prompt_logits`: logits of a full forward over the prompt, float32, [L, vocab];
- `tokens`: a greedy continuation of `steps` tokens decoded with the reference's cache;
- `step_logits`: the logits of each decode step, [steps, vocab];
- `margins`: the top-2 logit margin at each greedy step;
- `float16_prompt_logits`, `bfloat16_prompt_logits`: the prompt logits (as float32) of the same
  checkpoint cast to float16 / bfloat16, as a half-precision checkpoint runs, and (in
  reference.json) the greedy tokens it decodes with the cache.

Each architecture has a script in `parity/` that lists its cases and calls `run_cases`; a case
is {"name", "config", "prompt": [ids] (optional), "steps": 24, "seed": 0,
"quantize": {"bits": 4, "group_size": 32, "mode": "affine", "layers": {path: False or
{"bits": .., "group_size": ..}}} (optional), "hf_layout": fn(weights, config) -> weights
(optional: saves the checkpoint in the original Hugging Face naming instead of the reference's)}. Each case becomes OUT_DIR/<name>/ with
the checkpoint (config.json, model*.safetensors) and reference.safetensors + reference.json.
"""

import json
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes, load_model, quantize_model, save_config, save_model

import compat  # noqa: E402,F401  (quantized switch layers on the pinned MLX)

SPREAD = 0.08
# Greedy tokens decoded in float16 and in bfloat16.
HALF_STEPS = 8


def randomize(model: nn.Module, seed: int) -> None:
    mx.random.seed(seed)
    params = []
    for name, p in tree_flatten(model.parameters()):
        noise = mx.random.normal(p.shape, dtype=mx.float32) * SPREAD
        leaf = name.rsplit(".", 1)[-1]
        is_norm = "norm" in name and p.ndim == 1 and leaf == "weight"
        params.append((name, (1.0 + noise if is_norm else noise).astype(p.dtype)))
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())


def greedy(model: nn.Module, prompt: mx.array, steps: int) -> tuple:
    """Greedy decoding with the cache after `prompt`: the logits each token was chosen from, the
    tokens, and the logits after feeding each (logits as float32, of the last position)."""
    cache = make_prompt_cache(model)
    logits = model(prompt, cache=cache)[0, -1].astype(mx.float32)
    chosen_from, tokens, after = [], [], []
    for _ in range(steps):
        tok = mx.argmax(logits).item()
        chosen_from.append(logits)
        tokens.append(tok)
        logits = model(mx.array([[tok]], dtype=mx.int32), cache=cache)[0, -1].astype(mx.float32)
        after.append(logits)
    return chosen_from, tokens, after


def run_case(case: dict, out: Path) -> None:
    config = dict(case["config"])
    out.mkdir(parents=True, exist_ok=True)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    randomize(model, case.get("seed", 0))
    if "quantize" in case:
        q = case["quantize"]
        layers = q.get("layers", {})
        model, config = quantize_model(
            model,
            config,
            q.get("group_size"),
            q.get("bits"),
            mode=q.get("mode", "affine"),
            quant_predicate=(lambda path, _module: layers.get(path, True)) if layers else None,
        )
    if "hf_layout" in case:
        # The original Hugging Face layout: the case's function rewrites the reference's names
        # (and adds what HF checkpoints carry, such as rotary buffers); the reference's own
        # sanitize must undo it when loading back.
        weights = dict(tree_flatten(model.parameters()))
        weights = case["hf_layout"](weights, config)
        # A layout may also say under which safetensors dtype some tensors are written (the
        # uint8 bytes of FP8 weights as `F8_E4M3`, as FP8 checkpoints label them).
        weights, file_dtypes = weights if isinstance(weights, tuple) else (weights, {})
        mx.eval(weights)
        path = out / "model.safetensors"
        mx.save_safetensors(str(path), weights, metadata={"format": "pt"})
        relabel_safetensors(path, file_dtypes)
    else:
        save_model(out, model)
    save_config(config, out / "config.json")

    # Back through the reference loader: sanitize and strict loading.
    model, _ = load_model(out, strict=True)
    prompt = mx.array([case["prompt"]], dtype=mx.int32)
    prompt_logits = model(prompt)[0].astype(mx.float32)

    chosen_from, tokens, step_logits = greedy(model, prompt, case.get("steps", 24))
    margins = []
    for logits in chosen_from:
        top2 = mx.sort(logits)[-2:]
        margins.append((top2[1] - top2[0]).item())

    # What half-precision runs of the same checkpoint give (as a float16 or bfloat16 checkpoint
    # would): the logits' type (some quantized layers emit another) and the prompt logits.
    # Then a greedy continuation with the cache in that precision.
    half, half_tokens = {}, {}
    for dtype in (mx.float16, mx.bfloat16):
        model, _ = load_model(out, strict=True)
        model.set_dtype(dtype)
        logits = model(prompt)
        name = str(dtype).rsplit(".", 1)[-1]
        half[name] = (str(logits.dtype).rsplit(".", 1)[-1], logits[0].astype(mx.float32))
        half_tokens[name] = greedy(model, prompt, HALF_STEPS)[1]
    half_dtype = half["float16"][0]

    mx.save_safetensors(
        str(out / "reference.safetensors"),
        {
            "prompt_logits": prompt_logits,
            "step_logits": mx.stack(step_logits),
            "tokens": mx.array(tokens, dtype=mx.int32),
            "margins": mx.array(margins, dtype=mx.float32),
            "float16_prompt_logits": half["float16"][1],
            "bfloat16_prompt_logits": half["bfloat16"][1],
        },
    )
    (out / "reference.json").write_text(
        json.dumps(
            {
                "model_type": config["model_type"],
                "num_layers": len(model.layers),
                "prompt": case["prompt"],
                "tokens": tokens,
                "min_margin": min(margins) if margins else None,
                "float16_logits_dtype": half_dtype,
                "bfloat16_logits_dtype": half["bfloat16"][0],
                "float16_tokens": half_tokens["float16"],
                "bfloat16_tokens": half_tokens["bfloat16"],
            },
            indent=2,
        )
    )


def run_cases(cases: list, out_dir: Path, default_prompt: list) -> None:
    for case in cases:
        case = {"prompt": default_prompt, **case}
        run_case(case, out_dir / case["name"])


def unstack_experts(weights, stacked, per_expert):
    """The Hugging Face layout of stacked experts: every `...{stacked}<proj>.<leaf>` tensor
    `[E, ...]` becomes E tensors `...{per_expert with {e}}<proj>.<leaf>`."""
    out = {}
    for key, value in weights.items():
        if stacked in key:
            head, tail = key.split(stacked, 1)
            for e in range(value.shape[0]):
                out[head + per_expert.format(e=e) + tail] = value[e]
        else:
            out[key] = value
    return out


def w123_layout(weights, config):
    """The Hugging Face layout of mixtral-style experts: `block_sparse_moe.experts.{e}.w1/w2/w3`
    (gate, down, up), one tensor per expert."""
    names = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    out = {}
    for key, value in unstack_experts(weights, ".switch_mlp.", ".experts.{e}.").items():
        if ".experts." in key:
            for ours, theirs in names.items():
                key = key.replace(f".{ours}.", f".{theirs}.")
        out[key] = value
    return out


def relabel_safetensors(path: Path, file_dtypes: dict) -> None:
    """Rewrites the header of a safetensors file so that each tensor named in `file_dtypes`
    carries that dtype (one of the same width: `U8` bytes as `F8_E4M3`); the data is kept."""
    if not file_dtypes:
        return
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for name, dtype in file_dtypes.items():
        assert header[name]["dtype"] == "U8", (name, header[name]["dtype"])
        header[name]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


FP8_BLOCK = 128


def fp8_blocks(weights: dict, is_fp8) -> tuple:
    """The FP8 layout of DeepSeek V3's and Kimi K2's releases: every 2-D `<name>.weight` for
    which `is_fp8(name)` holds becomes E4M3 values (uint8 bytes, labelled `F8_E4M3` in the file)
    with a float32 `<name>.weight_scale_inv` per block of 128 x 128 (the block's largest
    magnitude over 448, E4M3's largest value), so that value * scale approximates the weight."""
    out, file_dtypes = {}, {}
    for key, w in weights.items():
        name = key[: -len(".weight")]
        if not (key.endswith(".weight") and w.ndim == 2 and is_fp8(name)):
            out[key] = w
            continue
        m, n = w.shape
        pm, pn = -m % FP8_BLOCK, -n % FP8_BLOCK
        tiles = mx.pad(w.astype(mx.float32), ((0, pm), (0, pn))).reshape(
            (m + pm) // FP8_BLOCK, FP8_BLOCK, (n + pn) // FP8_BLOCK, FP8_BLOCK
        )
        scale = mx.maximum(mx.abs(tiles).max(axis=(1, 3)), 1e-12) / 448.0
        values = mx.to_fp8(tiles / scale[:, None, :, None]).reshape(m + pm, n + pn)[:m, :n]
        out[key] = values
        out[f"{name}.weight_scale_inv"] = scale
        file_dtypes[key] = "F8_E4M3"
    return out, file_dtypes
