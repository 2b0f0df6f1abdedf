"""Quantized models on the CPU: ours against llama.cpp and mlx-lm, in one run on one machine.

    .venv-ref/bin/python scripts/bench/cpu_quantized.py [--repeat 3] [--prompt 128] [--tokens 128]
        [--llama-python PYTHON] [--gguf FILE] [--json OUT]

1. SmolLM2-135M-Instruct Q4_1 GGUF (`bash scripts/smollm2.sh` fetches it): `mlx-models generate`
   on the GGUF against llama.cpp through llama-cpp-python (2 threads for the prompt and for
   generation), the same prompt tokens, the same number of greedy tokens.
2. The 200M Llama of compare.py (random weights, made once under target/bench/) in float32, 4-bit
   and 8-bit (group 64): ours against mlx-lm 0.32.2 (OpenBLAS preloaded, as compare.py does).
3. Decode as a fraction of the memory-bandwidth limit: weight bytes read per token x tokens/s,
   over the read bandwidth this script measures (numpy sums over 512 MiB, one and two threads).

llama-cpp-python is not in the reference environment (it builds llama.cpp from source, minutes
on two cores); give its Python with --llama-python, e.g. a venv made with
`python3 -m venv target/bench/venv-llamacpp && target/bench/venv-llamacpp/bin/pip install
llama-cpp-python==0.3.36 numpy` (the default path). Each figure is the best of --repeat fresh
processes. Not a test: timings depend on the machine.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare", ROOT / "scripts/bench/compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

LLAMA_CPP = r"""
import json, sys, time
import numpy as np
from llama_cpp import Llama
path, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompt = [int(t) for t in sys.argv[4].split(",")]
llm = Llama(model_path=path, n_threads=2, n_threads_batch=2, n_ctx=n_prompt + n_gen + 8,
            n_batch=max(512, n_prompt), verbose=False)
vocab = llm.n_vocab()
def last_logits():
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))
tic = time.perf_counter()
llm.eval(prompt)
token = int(np.argmax(last_logits()))
prompt_s = time.perf_counter() - tic
tokens = [token]
tic = time.perf_counter()
for _ in range(n_gen - 1):
    llm.eval([token])
    token = int(np.argmax(last_logits()))
    tokens.append(token)
gen_s = time.perf_counter() - tic
print(json.dumps({"prompt_tps": n_prompt / prompt_s, "generation_tps": (n_gen - 1) / gen_s,
                  "tokens": tokens}))
"""


def prompt_tokens(n: int, vocab: int) -> list:
    return [(i * 7919 + 13) % vocab for i in range(n)]


def run_ours_gguf(binary: Path, gguf: Path, prompt: list, n: int) -> dict:
    out = subprocess.run(
        [str(binary), "generate", "--model", str(gguf), "--prompt-tokens", ",".join(map(str, prompt)),
         "--max-tokens", str(n), "--format", "json"],
        check=True, capture_output=True, text=True,
    )
    result = json.loads(out.stdout)
    stats = result["stats"]
    return {"prompt_tps": stats["prompt_tps"], "generation_tps": stats["generation_tps"],
            "tokens": result["tokens"]}


def run_llama_cpp(python: str, gguf: Path, prompt: list, n: int) -> dict:
    out = subprocess.run([python, "-c", LLAMA_CPP, str(gguf), str(len(prompt)), str(n),
                          ",".join(map(str, prompt))], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(runs: list) -> dict:
    return {"prompt_tps": max(r["prompt_tps"] for r in runs),
            "generation_tps": max(r["generation_tps"] for r in runs),
            "tokens": runs[0]["tokens"]}


def read_bandwidth(threads: int) -> float:
    """GB/s of summing 512 MiB of float32 with `threads` threads (numpy releases the GIL)."""
    a = np.ones(128 << 20, dtype=np.float32)
    parts = np.array_split(a, threads)
    best_s = float("inf")
    for _ in range(5):
        workers = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts]
        tic = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best_s = min(best_s, time.perf_counter() - tic)
    return a.nbytes / best_s / 1e9


def weight_bytes(model: Path) -> int:
    if model.is_file():
        return model.stat().st_size
    return sum(f.stat().st_size for f in model.glob("*.safetensors"))


def make_q8(dense: Path) -> Path:
    q8 = dense.parent / dense.name.replace("-f32", "-q8")
    if not (q8 / "config.json").exists():
        from mlx_lm.utils import load_model, quantize_model, save_config, save_model
        model, config = load_model(dense)
        model, qconfig = quantize_model(model, config, 64, 8)
        save_model(q8, model)
        save_config(qconfig, q8 / "config.json")
    return q8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/mlx-models")
    parser.add_argument("--llama-python", default=str(ROOT / "target/bench/venv-llamacpp/bin/python"))
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    gguf = args.gguf
    if gguf is None:
        out = subprocess.run(["bash", str(ROOT / "scripts/smollm2.sh")], check=True, capture_output=True, text=True)
        gguf = Path(out.stdout.strip().splitlines()[-1])
    if not Path(args.llama_python).exists():
        sys.exit(f"no llama-cpp-python at {args.llama_python} (see --help)")

    rows = []
    # 1. SmolLM2 GGUF: ours against llama.cpp.
    prompt = prompt_tokens(args.prompt, 49152)
    ours = best([run_ours_gguf(args.binary, gguf, prompt, args.tokens) for _ in range(args.repeat)])
    ref = best([run_llama_cpp(args.llama_python, gguf, prompt, args.tokens) for _ in range(args.repeat)])
    same = next((i for i, (a, b) in enumerate(zip(ours["tokens"], ref["tokens"])) if a != b), len(ours["tokens"]))
    rows.append(("SmolLM2-135M Q4_1 GGUF", "llama.cpp", gguf, ours, ref, same))

    # 2. The 200M Llama: float32, 4-bit, 8-bit, against mlx-lm.
    dense, q4 = compare.make_checkpoints(ROOT / "target/bench", "dense")
    q8 = make_q8(dense)
    for label, model in [("Llama 200M float32", dense), ("Llama 200M 4-bit", q4), ("Llama 200M 8-bit", q8)]:
        ours = compare.best([compare.run_ours(args.binary, model, args.prompt, args.tokens) for _ in range(args.repeat)])
        ref = compare.best([compare.run_reference(model, args.prompt, args.tokens) for _ in range(args.repeat)])
        rows.append((label, "mlx-lm", model, ours, ref, None))

    bw1, bw2 = read_bandwidth(1), read_bandwidth(2)
    print(f"read bandwidth: {bw1:.1f} GB/s (1 thread), {bw2:.1f} GB/s (2 threads)")
    print(f"{'model':<24} {'against':<10} {'prompt tok/s':>22} {'generation tok/s':>22} {'bandwidth used':>15}")
    results = []
    for label, against, model, ours, ref, same in rows:
        gb = weight_bytes(model) / 1e9
        frac = gb * ours["generation_tps"] / bw2
        p = f"{ours['prompt_tps']:.0f} / {ref['prompt_tps']:.0f} ({ours['prompt_tps'] / ref['prompt_tps']:.2f}x)"
        g = f"{ours['generation_tps']:.1f} / {ref['generation_tps']:.1f} ({ours['generation_tps'] / ref['generation_tps']:.2f}x)"
        print(f"{label:<24} {against:<10} {p:>22} {g:>22} {frac:>14.0%}")
        if same is not None:
            print(f"{'':<24} greedy tokens equal to llama.cpp's for the first {same} of {len(ours['tokens'])}")
        results.append({"model": label, "against": against, "weight_gb": gb, "ours": {k: v for k, v in ours.items() if k != "tokens"},
                        "reference": {k: v for k, v in ref.items() if k != "tokens"}, "bandwidth_fraction": frac})
    if args.json:
        args.json.write_text(json.dumps({"read_bandwidth_gbs": [bw1, bw2], "results": results}, indent=2))


if __name__ == "__main__":
    main()
