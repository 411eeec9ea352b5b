"""Bench part ``generate``: batched greedy generation vs one prompt at a time, same model, same prompts.

The model is SmolLM2-135M's architecture (its real config.json) with random weights: the offline
assets hold no base weights, and speed depends on shapes, not values. A random model never emits
its end-of-turn token, so every response runs to ``max_new_tokens``; that is the worst case for
static batching (no row finishes early) and makes both sides generate exactly the same number of
tokens. ``identical_share`` is the share of prompts whose batched greedy output equals the
one-by-one output (left padding must not change what the model sees).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any


def shared_dir() -> Path:
    """The offline assets folder: ``$SFTLAB_SHARED`` or ``shared/`` next to the checkout."""
    env = os.environ.get("SFTLAB_SHARED")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        cand = parent.parent / "shared"
        if (cand / "tokenizers").is_dir():
            return cand
    from sftlab.errors import SftlabError

    raise SftlabError("cannot find the shared assets folder; set SFTLAB_SHARED")


def load_prompts(n: int, seed: int = 0) -> list[str]:
    path = shared_dir() / "ifeval" / "input_data.jsonl"
    with open(path, encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    return random.Random(seed).sample(prompts, min(n, len(prompts)))


def build_model(seed: int = 0):
    """SmolLM2-135M-shaped Llama with random weights (float32) and the real tokenizer + ChatML."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sftlab.models import load_tokenizer

    tok_dir = shared_dir() / "tokenizers" / "SmolLM2-135M"
    tokenizer = load_tokenizer(str(tok_dir), chat_template="chatml")
    config = AutoConfig.from_pretrained(str(tok_dir))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return model, tokenizer


def run(quick: bool = False, n_prompts: int = 32, max_new_tokens: int = 128, batch_size: int = 16) -> dict[str, Any]:
    import torch

    import sftlab.generate as gen

    if quick:
        n_prompts, max_new_tokens, batch_size = min(n_prompts, 8), min(max_new_tokens, 24), min(batch_size, 8)
    model, tokenizer = build_model()
    prompts = load_prompts(n_prompts)

    single = gen.generate_responses(model, tokenizer, prompts,
                                    gen.GenerationConfig(max_new_tokens=max_new_tokens, batch_size=1), progress=False)
    s_stats = gen.last_stats
    batched = gen.generate_responses(model, tokenizer, prompts,
                                     gen.GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size),
                                     progress=False)
    b_stats = gen.last_stats
    identical = sum(a == b for a, b in zip(single, batched, strict=True))
    return {
        "single_tok_per_s": round(s_stats.tokens_per_s, 2),
        "batched_tok_per_s": round(b_stats.tokens_per_s, 2),
        "speedup_batched_vs_single": round(b_stats.tokens_per_s / max(s_stats.tokens_per_s, 1e-9), 2),
        "identical_share": identical / len(prompts),
        "n_prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "tokens_single": s_stats.new_tokens,
        "tokens_batched": b_stats.new_tokens,
        # on a shared 2-core VM, 2 intra-op threads were ~7x slower than 1 (OMP_NUM_THREADS=1)
        "torch_threads": torch.get_num_threads(),
        "note": "random-init SmolLM2-135M shape: no response stops early, both sides generate the same tokens",
    }
