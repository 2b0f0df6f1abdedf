"""Benchmark: `mlx-models serve` against `mlx_lm.server` on the same checkpoint, driven by the
same client code (the official `openai` client).

    .venv-ref/bin/python scripts/bench/serve.py [--concurrency 1,4,16] [--requests 2]
        [--max-tokens 64] [--turns 5]

The checkpoint is SmolLM2-135M-Instruct (Q4_1 GGUF from `scripts/smollm2.sh`) written as an MLX
folder by `tests/examples/gguf_export.rs` (4-bit affine, groups of 32; mlx-lm loads it as is),
so both servers run the same weights with the same tokenizer and chat template. The reference
runs with OpenBLAS preloaded, as ours links it. For each concurrency level, that many clients
each send `--requests` chat requests (different prompts, greedy, `--max-tokens`), streamed;
printed: aggregate generated tokens per second, and the median time to the first token.
Then a `--turns`-turn conversation: the time to the first token of each turn (the prompt
cache should make turn N cost only its new tokens). Not a test: timings depend on the machine.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint(out: Path) -> Path:
    gguf = subprocess.run(["bash", str(ROOT / "scripts/smollm2.sh")], check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    folder = out / "smollm2-135m-q4"
    if not (folder / "model.safetensors").exists():
        subprocess.run(["cargo", "run", "-q", "--release", "-p", "mlx-models-tests", "--example",
                        "gguf_export", "--", gguf, str(folder)], check=True, cwd=ROOT)
    return folder


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    for _ in range(1500):
        if proc.poll() is not None:
            sys.exit(f"the server exited: {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not come up")


def start(kind: str, model: Path, port: int, concurrency: int) -> subprocess.Popen:
    if kind == "ours":
        binary = ROOT / "target/release/mlx-models"
        cmd = [str(binary), "serve", "-m", str(model), "--port", str(port), "-q",
               "--max-concurrency", str(max(concurrency, 1)), "--served-model-name", "model"]
        env = dict(os.environ)
    else:
        cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--port",
               str(port), "--log-level", "ERROR", "--decode-concurrency", str(max(concurrency, 1)),
               "--prompt-concurrency", str(max(concurrency, 1))]
        env = dict(os.environ, LD_PRELOAD=compare.openblas())
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def stream_chat(client, model, messages, max_tokens):
    """(time to first token, generated tokens, text)."""
    tic = time.perf_counter()
    first, text, tokens = None, "", 0
    for chunk in client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content and first is None:
                first = time.perf_counter() - tic
            text += choice.delta.content or ""
    return first if first is not None else time.perf_counter() - tic, tokens, text


def load(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=3600)
    ttfts, tokens, errors = [], [], []

    def worker(w):
        try:
            for k in range(requests):
                msg = [{"role": "user", "content":
                        f"Write a short story about a robot named R{w}-{k} who learns to paint."}]
                t, n, _ = stream_chat(client, model, msg, max_tokens)
                ttfts.append(t)
                tokens.append(n)
        except Exception as e:  # noqa: BLE001 (reported)
            errors.append(repr(e))

    tic = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    if errors:
        sys.exit(f"errors: {errors[:3]}")
    return {"tps": sum(tokens) / wall, "ttft": statistics.median(ttfts), "tokens": sum(tokens)}


def turns(url: str, model: str, n: int, max_tokens: int) -> list:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=3600)
    messages = [{"role": "system", "content": "You are a helpful assistant. " * 40}]
    out = []
    for i in range(n):
        messages.append({"role": "user", "content": f"Tell me fact number {i + 1} about the sea, "
                                                    "in two sentences."})
        t, _, text = stream_chat(client, model, messages, max_tokens)
        messages.append({"role": "assistant", "content": text})
        out.append(t)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "target/bench")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "mlx-models-cli"], check=True,
                   cwd=ROOT)
    model = checkpoint(args.out)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = {}
    for kind in ("ours", "reference"):
        for level in levels:
            port = free_port()
            proc = start(kind, model, port, level)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, proc)
                # The reference serves its `--model` under the name `default_model`.
                name = "model" if kind == "ours" else "default_model"
                # One request first so that both start warm.
                load(url, name, 1, 1, 4)
                rows[(kind, level)] = load(url, name, level, args.requests, args.max_tokens)
                if level == levels[0]:
                    rows[(kind, "turns")] = turns(url, name, args.turns, 32)
            finally:
                proc.terminate()
                proc.wait()
    print(f"SmolLM2-135M-Instruct 4-bit, {args.requests} requests per client, "
          f"{args.max_tokens} tokens each, greedy")
    print("| clients | ours tok/s | reference tok/s | ratio | ours TTFT s | reference TTFT s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for level in levels:
        o, r = rows[("ours", level)], rows[("reference", level)]
        print(f"| {level} | {o['tps']:.1f} | {r['tps']:.1f} | {o['tps'] / r['tps']:.2f}x "
              f"| {o['ttft']:.3f} | {r['ttft']:.3f} |")
    print("| turn | ours TTFT s | reference TTFT s |")
    print("| --- | --- | --- |")
    for i, (o, r) in enumerate(zip(rows[("ours", "turns")], rows[("reference", "turns")])):
        print(f"| {i + 1} | {o:.3f} | {r:.3f} |")
    print(json.dumps({f"{k[0]}-{k[1]}": v for k, v in rows.items()}))


if __name__ == "__main__":
    main()
