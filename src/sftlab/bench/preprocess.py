"""Masking speed: the fast path against the prefix re-tokenisation reference, on real ShareGPT data.

Both methods encode the same ShareGPT conversations (the first 2,000 usable ones; 200 with
``quick``) with the SmolLM2-135M tokenizer and the ChatML template, assistant masking, max
length 2048, in one process, one after the other, so the ratio is what matters on a shared
machine. ``identical`` says whether every feature of every conversation agreed.

For scale, ``tokenize_only_conv_per_s`` is a floor no masking method can beat: render the
template once and tokenise it once, with no mask at all. When TRL is installed its own chat
template helper is timed the same way (render + tokenise, as its SFT data preparation does);
otherwise that entry says why it was skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

FULL_N = 2000
QUICK_N = 200
MAX_LENGTH = 2048


def _shared_tokenizer_dir() -> Path | None:
    env = os.environ.get("SFTLAB_SHARED")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p.parent / "shared" for p in here.parents]
    for c in candidates:
        d = c / "tokenizers" / "SmolLM2-135M"
        if (d / "tokenizer.json").is_file():
            return d
    return None


def _load_tokenizer() -> tuple[Any, str]:
    from sftlab.models import GGUF_ALIAS, load_tokenizer

    d = _shared_tokenizer_dir()
    if d is not None:
        return load_tokenizer(str(d), chat_template="chatml"), f"{d} + chatml"
    return load_tokenizer(GGUF_ALIAS, chat_template="chatml"), f"{GGUF_ALIAS} + chatml"


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def _time_trl(tok: Any, convs: list) -> dict[str, Any]:
    try:
        from trl.data_utils import apply_chat_template as trl_apply_chat_template
    except ImportError as e:
        return {"trl": f"skipped: trl not importable ({e.__class__.__name__})"}
    try:
        t0 = time.perf_counter()
        for c in convs:
            text = trl_apply_chat_template({"messages": c}, tok)["text"]
            tok(text, add_special_tokens=False)
        return {"trl_conv_per_s": _rate(len(convs), time.perf_counter() - t0)}
    except Exception as e:  # an API change in TRL must not sink the rest of the bench
        return {"trl": f"skipped: {e.__class__.__name__}: {e}"}


def run(quick: bool = False, n: int | None = None) -> dict[str, Any]:
    """Measure conversations/s of both masking methods on the same ShareGPT conversations."""
    from sftlab.data import load_conversations
    from sftlab.masking import encode_conversation

    n = n or (QUICK_N if quick else FULL_N)
    convs = load_conversations("sharegpt", max_samples=n).conversations
    tok, tok_desc = _load_tokenizer()
    flags = getattr(tok, "deprecation_warnings", None)
    if isinstance(flags, dict):  # long conversations are expected; truncation happens after masking
        flags["sequence-length-is-longer-than-the-specified-maximum"] = True
    for c in convs[:5]:  # warm-up: template compilation, first-call caches
        encode_conversation(c, tok, max_length=MAX_LENGTH, method="fast")
        encode_conversation(c, tok, max_length=MAX_LENGTH, method="prefix")

    t0 = time.perf_counter()
    fast = [encode_conversation(c, tok, max_length=MAX_LENGTH, method="fast") for c in convs]
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [encode_conversation(c, tok, max_length=MAX_LENGTH, method="prefix") for c in convs]
    prefix_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in convs:
        tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)
    floor_s = time.perf_counter() - t0

    result: dict[str, Any] = {
        "n_conversations": len(convs),
        "mean_messages": round(sum(len(c) for c in convs) / len(convs), 2),
        "tokens": sum(len(f["input_ids"]) for f in fast),
        "tokenizer": tok_desc,
        "fast_conv_per_s": _rate(len(convs), fast_s),
        "prefix_conv_per_s": _rate(len(convs), prefix_s),
        "speedup_vs_prefix": round(prefix_s / fast_s, 2) if fast_s > 0 else None,
        "identical": fast == ref,
        "tokenize_only_conv_per_s": _rate(len(convs), floor_s),
    }
    result.update(_time_trl(tok, convs))
    return result


if __name__ == "__main__":  # pragma: no cover - manual use
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
