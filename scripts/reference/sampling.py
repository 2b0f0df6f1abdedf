"""Reference outputs of mlx-lm's sampler and logits processors on fixed logits.

Usage: python sampling.py OUT_DIR   (writes OUT_DIR/sampling.safetensors)

Runs mlx-lm 0.32.2's own `sample_utils` functions (the filters, `make_sampler`,
`make_logits_processors`) on fixed logits and saves every input and output to one safetensors
file. The list of cases (what to run on which input, with which parameters) is saved as JSON in
the file's metadata under "cases", so the Rust test replays exactly these cases.
"""

import json
import os
import sys

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    apply_xtc,
    make_logits_processors,
    make_sampler,
)

VOCAB = 64


def main(out_path):
    arrays = {}
    cases = []

    # Inputs: fixed pseudo-random logits of a few sharpnesses, one row and a batch.
    key = mx.random.key(1234)
    k1, k2, k3 = mx.random.split(key, 3)
    logits = {
        "a": mx.random.normal((1, VOCAB), key=k1) * 2.0,
        "b": mx.random.normal((1, VOCAB), key=k2) * 5.0,
        "batch": mx.random.normal((3, VOCAB), key=k3) * 3.0,
    }
    for name, x in logits.items():
        arrays[f"logits_{name}"] = x
        # As generate_step computes them.
        arrays[f"logprobs_{name}"] = x - mx.logsumexp(x, axis=-1, keepdims=True)

    def add(kind, inp, out, value, **params):
        arrays[out] = value
        cases.append({"kind": kind, "input": inp, "output": out, **params})

    # Filters, each alone.
    for name in logits:
        lp = arrays[f"logprobs_{name}"]
        for p in [0.05, 0.3, 0.5, 0.9, 0.99]:
            add("top_p", f"logprobs_{name}", f"top_p_{p}_{name}", apply_top_p(lp, p), top_p=p)
        for p in [0.01, 0.1, 0.5]:
            for keep in [1, 4]:
                add(
                    "min_p",
                    f"logprobs_{name}",
                    f"min_p_{p}_{keep}_{name}",
                    apply_min_p(lp, p, keep),
                    min_p=p,
                    min_tokens_to_keep=keep,
                )
        for k in [1, 5, 32, VOCAB - 1]:
            add("top_k", f"logprobs_{name}", f"top_k_{k}_{name}", apply_top_k(lp, k), top_k=k)
        # XTC with probability 1 always applies (a uniform draw in [0, 1) is never > 1).
        top = int(mx.argmax(lp[0]).item())
        for thr in [0.02, 0.1, 0.3]:
            for special in [[], [top, 5]]:
                add(
                    "xtc",
                    f"logprobs_{name}",
                    f"xtc_{thr}_{len(special)}_{name}",
                    apply_xtc(lp, 1.0, thr, special),
                    xtc_threshold=thr,
                    xtc_special_tokens=special,
                )

    # Greedy picks.
    for name in logits:
        lp = arrays[f"logprobs_{name}"]
        add("greedy", f"logprobs_{name}", f"greedy_{name}", make_sampler(temp=0.0)(lp).astype(mx.int32))

    # Seeded sampling: the same seed must draw the same tokens.
    sampler_configs = [
        dict(temp=1.0),
        dict(temp=0.7, top_p=0.9),
        dict(temp=1.3, min_p=0.05, min_tokens_to_keep=2),
        dict(temp=0.8, top_k=10),
        dict(temp=1.0, top_p=0.95, min_p=0.02, top_k=20),
        dict(temp=1.0, xtc_probability=0.5, xtc_threshold=0.05, xtc_special_tokens=[0]),
        dict(temp=0.5, top_p=0.8, min_p=0.1, xtc_probability=0.3, xtc_threshold=0.1, top_k=8),
    ]
    steps = 48
    for i, cfg in enumerate(sampler_configs):
        for name in ["a", "b"]:
            seed = 100 + i
            mx.random.seed(seed)
            sampler = make_sampler(**cfg)
            lp = arrays[f"logprobs_{name}"]
            toks = [int(sampler(lp).item()) for _ in range(steps)]
            add(
                "sample",
                f"logprobs_{name}",
                f"sample_{i}_{name}",
                mx.array(toks, dtype=mx.int32),
                seed=seed,
                steps=steps,
                **cfg,
            )

    # Logits processors, alone and together, on a token history with repeats.
    history = [3, 7, 7, 1, 63, 7, 20, 3, 5, 9, 11, 3, 7]
    arrays["history"] = mx.array(history, dtype=mx.int32)
    processor_configs = [
        dict(logit_bias={0: 2.5, 7: -1.0, 63: 10.0}),
        dict(repetition_penalty=1.3, repetition_context_size=5),
        dict(repetition_penalty=0.8, repetition_context_size=20),
        dict(presence_penalty=0.7, presence_context_size=4),
        dict(presence_penalty=-0.5, presence_context_size=20),
        dict(frequency_penalty=0.4, frequency_context_size=10),
        dict(frequency_penalty=1.5, frequency_context_size=20),
        dict(
            logit_bias={1: -3.0, 20: 1.0},
            repetition_penalty=1.2,
            repetition_context_size=6,
            presence_penalty=0.3,
            presence_context_size=8,
            frequency_penalty=0.2,
            frequency_context_size=12,
        ),
    ]
    for i, cfg in enumerate(processor_configs):
        processors = make_logits_processors(**cfg)
        for name in logits:
            # A new array: the processors assign into their input (`logits[:, tokens] = ...`),
            # which must not change the saved inputs.
            x = mx.array(arrays[f"logits_{name}"]) + 0
            tokens = mx.array(history)
            for proc in processors:
                x = proc(tokens, x)
            params = dict(cfg)
            if "logit_bias" in params:
                params["logit_bias"] = {str(k): v for k, v in params["logit_bias"].items()}
            add("processors", f"logits_{name}", f"processors_{i}_{name}", x, **params)

    mx.eval(arrays)
    mx.save_safetensors(out_path, arrays, metadata={"cases": json.dumps(cases)})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sampling.py OUT_DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    main(os.path.join(sys.argv[1], "sampling.safetensors"))
