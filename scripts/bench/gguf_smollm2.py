"""Prompt and generation speed of `mlx-models generate` on the SmolLM2 GGUF, next to mlx-lm's.

The reference gets the same tensors: MLX's `mx.load` reads the GGUF (Q4_1 / Q8_0 arrive as
affine-quantized triplets), the tensors are renamed to Hugging Face names, the query/key rows
that llama.cpp's converter permuted are put back, and mlx-lm's own llama model is quantized
layer by layer to match and loaded strictly. Both sides run the same chat-template prompt
greedily; the script also checks that they generate the same tokens. As in compare.py, the
reference runs with OpenBLAS preloaded (the script re-executes itself with `LD_PRELOAD`), so that
MLX's float32 matmuls (attention) go through it as they do in our binary.

    .venv-ref/bin/python scripts/bench/gguf_smollm2.py [--runs 3] [--max-tokens 128]

Run after `cargo build --release -p mlx-models-cli` and
`bash scripts/smollm2.sh` (which prints the GGUF's path; pass it with --gguf, or let the script
run it).
"""

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from jinja2 import Environment
from mlx_lm.generate import stream_generate
from mlx_lm.models import llama
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]

RENAMES = [
    ("token_embd.", "model.embed_tokens."),
    ("output_norm.", "model.norm."),
    ("output.", "lm_head."),
]
BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name):
    for old, new in RENAMES:
        if name.startswith(old):
            return new + name[len(old):]
    _, layer, module, rest = name.split(".", 3)
    return f"model.layers.{layer}.{BLOCK[module]}.{rest}"


def unpermute(w, heads):
    # llama.cpp: w.reshape(heads, 2, d/2, ...).swapaxes(1, 2); this is its inverse.
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def scalar(md, key, default=None):
    v = md.get(key, default)
    return v.item() if isinstance(v, mx.array) else v


def reference_model(path):
    tensors, md = mx.load(str(path), return_metadata=True)
    heads = scalar(md, "llama.attention.head_count")
    kv_heads = scalar(md, "llama.attention.head_count_kv", heads)
    weights = {}
    for name, w in tensors.items():
        new = hf_name(name)
        if ".q_proj." in new:
            w = unpermute(w, heads)
        elif ".k_proj." in new:
            w = unpermute(w, kv_heads)
        weights[new] = w
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=scalar(md, "llama.embedding_length"),
        num_hidden_layers=scalar(md, "llama.block_count"),
        intermediate_size=scalar(md, "llama.feed_forward_length"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=scalar(md, "llama.attention.layer_norm_rms_epsilon"),
        vocab_size=len(md["tokenizer.ggml.tokens"]),
        rope_theta=scalar(md, "llama.rope.freq_base", 10000.0),
        tie_word_embeddings="lm_head.weight" not in weights,
    )
    model = llama.Model(args)

    def predicate(p, m):
        if f"{p}.scales" not in weights:
            return False
        # 32 values per group; bits from the packed width.
        bits = weights[f"{p}.weight"].shape[-1] * 32 // (weights[f"{p}.scales"].shape[-1] * 32)
        return {"group_size": 32, "bits": bits}

    nn.quantize(model, group_size=32, bits=4, class_predicate=predicate)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model, md


def reference_tokenizer(md):
    tokens = md["tokenizer.ggml.tokens"]
    types = md["tokenizer.ggml.token_type"].tolist()
    spec = {
        "version": "1.0",
        "added_tokens": [
            {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(types) if t == 3
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in md["tokenizer.ggml.merges"]]},
    }
    eos = tokens[scalar(md, "tokenizer.ggml.eos_token_id")]
    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=eos)
    return TokenizerWrapper(hf)


def run_reference(model, tokenizer, prompt_ids, max_tokens):
    last, tokens = None, []
    for r in stream_generate(model, tokenizer, prompt=prompt_ids, max_tokens=max_tokens,
                             sampler=make_sampler(temp=0.0)):
        last = r
        tokens.append(r.token)
    return tokens, last.prompt_tps, last.generation_tps


def run_ours(binary, gguf, prompt, max_tokens):
    out = subprocess.run(
        [str(binary), "generate", "--model", str(gguf), "--prompt", prompt, "--temp", "0",
         "--max-tokens", str(max_tokens), "--format", "json"],
        check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    stats = result["stats"]
    return result["prompt_tokens"], result["tokens"], stats["prompt_tps"], stats["generation_tps"]


def preload_openblas():
    if os.environ.get("LD_PRELOAD"):
        return
    for name in ("openblas", "openblas64"):
        found = ctypes.util.find_library(name)
        if found:
            env = dict(os.environ, LD_PRELOAD=found)
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    sys.exit("OpenBLAS not found: install libopenblas0-pthread (scripts/setup.sh does)")


def main():
    preload_openblas()
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt", default="Write a short story about a robot who learns to paint.")
    ap.add_argument("--binary", default=str(ROOT / "target/release/mlx-models"))
    args = ap.parse_args()
    gguf = args.gguf or subprocess.run(["bash", str(ROOT / "scripts/smollm2.sh")], check=True,
                                       capture_output=True, text=True).stdout.strip().splitlines()[-1]

    model, md = reference_model(gguf)
    tokenizer = reference_tokenizer(md)
    template = Environment().from_string(md["tokenizer.chat_template"])
    text = template.render(messages=[{"role": "user", "content": args.prompt}], add_generation_prompt=True)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)

    ours_p, ours_g, ref_p, ref_g = [], [], [], []
    same = True
    for _ in range(args.runs):
        our_prompt, our_tokens, p, g = run_ours(args.binary, gguf, args.prompt, args.max_tokens)
        ours_p.append(p)
        ours_g.append(g)
        ref_tokens, p, g = run_reference(model, tokenizer, prompt_ids, args.max_tokens)
        ref_p.append(p)
        ref_g.append(g)
        same = same and our_prompt == prompt_ids and our_tokens == ref_tokens
    med = statistics.median
    print(f"prompt: {len(prompt_ids)} tokens; generated: {len(ref_tokens)} tokens; runs: {args.runs} (medians)")
    print(f"mlx-models: prompt {med(ours_p):.1f} tokens/s, generation {med(ours_g):.1f} tokens/s")
    print(f"mlx-lm:     prompt {med(ref_p):.1f} tokens/s, generation {med(ref_g):.1f} tokens/s")
    print(f"same prompt ids and greedy tokens: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
