"""Reference runs of mlx-lm 0.32.2's generation features on a tiny random llama (heads of 64
features, so that the key/value cache quantizes in groups of 32 and 64).

Usage: python generation.py OUT_DIR

Writes OUT_DIR/model/ (the checkpoint) and OUT_DIR/reference.json with, for the fixed prompt:
- `plain`: the greedy tokens of `generate_step`;
- `kv`: for each (bits, group size, quantized_kv_start), the greedy tokens of `generate_step`
  with the cache quantized as `--kv-bits` does it;
- `prompt_cache`: OUT_DIR/prompt_cache.safetensors, the cache of the prompt's first part saved
  with `save_prompt_cache` (as `mlx_lm.cache_prompt` does: `generate_step` with max_tokens=0,
  metadata `model` and `tokenizer_config`), and the greedy continuation after loading it back
  and feeding the rest of the prompt, as `mlx_lm.generate --prompt-cache-file` runs it.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step, speculative_generate_step
from mlx_lm.models.cache import load_prompt_cache, make_prompt_cache, save_prompt_cache
from mlx_lm.utils import _get_classes, load_model, quantize_model, save_config, save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity import randomize  # noqa: E402

CONFIG = {
    "model_type": "llama",
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
PROMPT = [1, 17, 42, 99, 3, 250, 8, 64, 128, 77, 5, 200]
SPLIT = 7  # the cached part of the prompt
STEPS = 24
KV = [(4, 32, 4), (8, 64, 0), (2, 32, 10)]


def greedy(model, prompt, cache=None, **kw):
    out = generate_step(mx.array(prompt, dtype=mx.uint32), model, max_tokens=STEPS, prompt_cache=cache, **kw)
    return [int(t) for t, _ in out]


DRAFT = {**CONFIG, "hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128,
         "num_attention_heads": 1}
QWEN3 = {
    "model_type": "qwen3",
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
}
QWEN3_DRAFT = {**QWEN3, "hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128,
               "num_attention_heads": 1}


def make(out: Path, name: str, config: dict, seed: int, quantize: bool = False) -> None:
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    randomize(model, seed)
    if quantize:
        model, config = quantize_model(model, dict(config), 32, 4)
    save_model(out / name, model)
    save_config(dict(config), out / name / "config.json")


def speculative(out: Path) -> list:
    make(out, "draft", DRAFT, 1)
    make(out, "qwen3", QWEN3, 2)
    make(out, "qwen3_draft", QWEN3_DRAFT, 3)
    make(out, "model_4bit", CONFIG, 0, quantize=True)
    runs = []
    for target, draft in [("model", "draft"), ("qwen3", "qwen3_draft"), ("model_4bit", "draft"),
                          ("model", "model")]:
        t, _ = load_model(out / target, strict=True)
        d, _ = load_model(out / draft, strict=True)
        plain = greedy(t, PROMPT)
        steps = speculative_generate_step(mx.array(PROMPT, dtype=mx.uint32), t, d,
                                          num_draft_tokens=3, max_tokens=STEPS)
        tokens, from_draft = [], []
        for tok, _, drafted in steps:
            tokens.append(int(tok))
            from_draft.append(bool(drafted))
        runs.append({"target": target, "draft": draft, "plain": plain, "tokens": tokens,
                     "from_draft": from_draft})
    return runs


def main(out: Path) -> None:
    model_dir = out / "model"
    model_class, args_class = _get_classes(CONFIG)
    model = model_class(args_class.from_dict(CONFIG))
    randomize(model, 0)
    save_model(model_dir, model)
    save_config(dict(CONFIG), model_dir / "config.json")
    model, _ = load_model(model_dir, strict=True)

    result = {"prompt": PROMPT, "split": SPLIT, "steps": STEPS, "plain": greedy(model, PROMPT), "kv": []}
    for bits, group, start in KV:
        tokens = greedy(model, PROMPT, kv_bits=bits, kv_group_size=group, quantized_kv_start=start)
        result["kv"].append({"bits": bits, "group_size": group, "start": start, "tokens": tokens})

    cache = make_prompt_cache(model)
    for _ in generate_step(mx.array(PROMPT[:SPLIT], dtype=mx.uint32), model, max_tokens=0, prompt_cache=cache):
        pass
    # The model as a path relative to OUT_DIR (the folder is renamed once written).
    metadata = {"model": "model", "tokenizer_config": json.dumps({"trust_remote_code": False})}
    save_prompt_cache(str(out / "prompt_cache.safetensors"), cache, metadata)
    cache, meta = load_prompt_cache(str(out / "prompt_cache.safetensors"), return_metadata=True)
    assert meta == metadata, meta
    result["prompt_cache"] = {"metadata": metadata, "tokens": greedy(model, PROMPT[SPLIT:], cache=cache)}
    result["speculative"] = speculative(out)
    (out / "reference.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
