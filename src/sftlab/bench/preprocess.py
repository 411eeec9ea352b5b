"""Masking speed: the fast path against the prefix re-tokenisation reference, on real ShareGPT data.

Both methods encode the same ShareGPT conversations (the first 2,000 usable ones; 200 with
``quick``) with the SmolLM2-135M tokenizer and the ChatML template, assistant masking, max
length 2048, in one process, one after the other, so the ratio is what matters on a shared
machine. ``identical`` says whether every feature of every conversation agreed. The fast path is
timed twice: batched, as ``sftlab preprocess`` runs it (one multi-core tokenizer call per batch),
and one conversation per call (one core).

Why the ratio has a ceiling: the reference tokenises every prefix of a conversation, so its work
is ``prefix_tokenisations_per_conversation`` whole-conversation tokenisations (about half the
number of messages, weighted by length); an exact method still has to tokenise each conversation
once, so on one core it cannot beat the reference by much more than that, and batching can
multiply that by at most the number of cores.

For scale, ``tokenize_only_conv_per_s`` renders the template once and tokenises it once per
conversation, with no mask at all: about what any exact method costs on one core. When TRL is
installed (extra ``bench``) its SFT tokenisation with assistant masks is timed on the same
conversations; otherwise that entry says why it was skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sftlab.prep.pipeline import ENCODE_BATCH as BATCH  # the batch `sftlab preprocess` encodes at once

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
    from sftlab.models.loading import GGUF_ALIAS, load_tokenizer

    d = _shared_tokenizer_dir()
    if d is not None:
        return load_tokenizer(str(d), chat_template="chatml"), f"{d} + chatml"
    return load_tokenizer(GGUF_ALIAS, chat_template="chatml"), f"{GGUF_ALIAS} + chatml"


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


# ChatML with Jinja ``{% generation %}`` markers around each assistant message and its
# ``<|im_end|>``: what TRL's ``assistant_only_loss`` needs (TRL cannot patch this template itself).
CHATML_GENERATION = (
    "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}{{ message['content'] + '<|im_end|>' + '\\n' }}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _time_trl(tok: Any, convs: list) -> dict[str, Any]:
    """TRL's SFT tokenisation with assistant masks (``assistant_only_loss=True``) on the same data.

    TRL tokenises each conversation once through ``apply_chat_template(...,
    return_assistant_tokens_mask=True)`` with a ``{% generation %}``-marked template. Its mask
    covers the assistant's content and end-of-turn token but not the ``<|im_start|>assistant``
    header, so its features differ from sftlab's by design; only the speed is compared.
    """
    try:
        import trl
        from trl.data_utils import _tokenize as trl_tokenize
    except ImportError as e:
        return {"trl": f"skipped: trl not importable ({e.__class__.__name__}); pip install 'sftlab[bench]'"}
    try:
        masked = 0
        t0 = time.perf_counter()
        for c in convs:
            out = trl_tokenize(tok, c, return_assistant_tokens_mask=True, chat_template=CHATML_GENERATION)
            masked += sum(out["assistant_masks"])
        seconds = time.perf_counter() - t0
        return {"trl_version": trl.__version__, "trl_conv_per_s": _rate(len(convs), seconds),
                "trl_assistant_tokens": masked}
    except Exception as e:  # an API change in TRL must not sink the rest of the bench
        return {"trl": f"skipped: {e.__class__.__name__}: {e}"}


def run(quick: bool = False, n: int | None = None, batch_size: int = BATCH) -> dict[str, Any]:
    """Measure conversations/s of both masking methods on the same ShareGPT conversations."""
    from sftlab.data import load_conversations
    from sftlab.prep.masking import encode_conversation, encode_conversations_with_info

    n = n or (QUICK_N if quick else FULL_N)
    convs = load_conversations("sharegpt", max_samples=n).conversations
    tok, tok_desc = _load_tokenizer()
    flags = getattr(tok, "deprecation_warnings", None)
    if isinstance(flags, dict):  # long conversations are expected; truncation happens after masking
        flags["sequence-length-is-longer-than-the-specified-maximum"] = True
    for c in convs[:5]:  # warm-up: template compilation, first-call caches
        encode_conversation(c, tok, max_length=MAX_LENGTH, method="fast")
        encode_conversation(c, tok, max_length=MAX_LENGTH, method="prefix")

    # sftlab's fast path as `sftlab preprocess` runs it: batches of conversations, one batched
    # (multi-core, in Rust) tokenisation per batch.
    t0 = time.perf_counter()
    fast: list[dict[str, list[int]]] = []
    for i in range(0, len(convs), batch_size):
        fast += [f for f, _ in encode_conversations_with_info(convs[i : i + batch_size], tok, max_length=MAX_LENGTH)]
    fast_s = time.perf_counter() - t0
    # The same fast path one conversation per call (one core).
    t0 = time.perf_counter()
    single = [encode_conversation(c, tok, max_length=MAX_LENGTH, method="fast") for c in convs]
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [encode_conversation(c, tok, max_length=MAX_LENGTH, method="prefix") for c in convs]
    prefix_s = time.perf_counter() - t0
    # About what any exact method costs on one core: render once, tokenise once, no mask at all.
    t0 = time.perf_counter()
    for c in convs:
        tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)
    floor_s = time.perf_counter() - t0

    result: dict[str, Any] = {
        "n_conversations": len(convs),
        "mean_messages": round(sum(len(c) for c in convs) / len(convs), 2),
        "tokens": sum(len(f["input_ids"]) for f in fast),
        "tokenizer": tok_desc,
        "batch_size": batch_size,
        "fast_conv_per_s": _rate(len(convs), fast_s),
        "fast_one_by_one_conv_per_s": _rate(len(convs), single_s),
        "prefix_conv_per_s": _rate(len(convs), prefix_s),
        "speedup_vs_prefix": round(prefix_s / fast_s, 2) if fast_s > 0 else None,
        "speedup_one_by_one_vs_prefix": round(prefix_s / single_s, 2) if single_s > 0 else None,
        "identical": fast == ref and single == ref,
        "tokenize_only_conv_per_s": _rate(len(convs), floor_s),
        # How much tokenising the reference does, in whole-conversation tokenisations: the most any
        # method that still tokenises each conversation once can gain on one core.
        "prefix_tokenisations_per_conversation": _retokenisation_factor(tok, convs),
        "cores": os.cpu_count(),
    }
    result.update(_time_trl(tok, convs))
    if "trl_conv_per_s" in result:
        result["speedup_vs_trl"] = round(result["fast_conv_per_s"] / result["trl_conv_per_s"], 2)
    return result


def _retokenisation_factor(tok: Any, convs: list) -> float:
    """Tokens the prefix reference encodes (every prefix, then the whole) over the tokens of the whole."""
    from sftlab.prep.masking import prefix_lengths_fast_batch

    done = total = 0
    for i in range(0, len(convs), BATCH):
        for full_ids, lengths, _ in prefix_lengths_fast_batch(tok, convs[i : i + BATCH]):
            done += sum(lengths)
            total += len(full_ids)
    return round(done / total, 2) if total else 0.0


if __name__ == "__main__":  # pragma: no cover - manual use
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
