"""The parts of one message's span: role header, content, end of turn; and per-message flags.

A message's span (see :mod:`sftlab.prep.masking`) holds what the chat template renders for it: in
ChatML ``<|im_start|>assistant\\n`` (the role header), the content, then ``<|im_end|>\\n``
(the end of turn: the end-of-turn token and the newline after it). The two cuts between these
parts are found from the template itself (:func:`content_bounds`) and turned into token
positions by the same prefix construction as the message boundaries: the position of a cut is
the token count of the rendered text up to it (:func:`cuts_reference`, the definition);
:func:`cuts_fast` reads the same counts off the full tokenisation where that is provably equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

#: The label of a token the model is not trained on: what ``torch.nn.functional.cross_entropy`` skips
#: by default. The one definition; masking, batching, the loss and the reports all import it.
IGNORE_INDEX = -100


_SENTINEL = "sftlab-content-sentinel-7f3a9c"


def content_bounds(
    tokenizer: Tokenizer, rendered: Sequence[dict[str, str]], texts: Sequence[str], wanted: Sequence[int]
) -> dict[int, tuple[int, int] | None]:
    """Where each wanted message's content starts and ends, in characters of ``texts[i]``.

    ``texts[i]`` is the template rendered on ``rendered[:i+1]``. The template itself says what
    surrounds a message's content: it is rendered once more with the content replaced by a
    sentinel, and the text before the sentinel (the role header, ``<|im_start|>assistant\\n`` in
    ChatML) and after it (the end of turn, ``<|im_end|>\\n``) are located at the two ends of the
    message's text. ``None`` when the template does not render the message that way.
    """
    out: dict[int, tuple[int, int] | None] = {}
    if not wanted:
        return out
    probes = [[*rendered[:i], {"role": rendered[i]["role"], "content": _SENTINEL}] for i in wanted]
    probed = tokenizer.apply_chat_template(probes, tokenize=False, add_generation_prompt=False)
    if isinstance(probed, str):
        probed = [probed]
    for i, probe in zip(wanted, probed, strict=True):
        prev, cur = (texts[i - 1] if i else ""), texts[i]
        out[i] = None
        if not (cur.startswith(prev) and probe.startswith(prev)) or probe.count(_SENTINEL) != 1:
            continue
        head, tail = probe[len(prev):].split(_SENTINEL)
        body = cur[len(prev):]
        if len(head) + len(tail) <= len(body) and body.startswith(head) and body.endswith(tail):
            out[i] = (len(prev) + len(head), len(cur) - len(tail))
    return out


def cuts_reference(tokenizer: Tokenizer, texts: Sequence[str], bounds: dict[int, tuple[int, int] | None]):
    """Token positions of the content's start and end: the token count of the text up to there."""
    cuts: dict[int, tuple[int, int]] = {}
    for i, b in bounds.items():
        if b is not None:
            h, t = (len(tokenizer(texts[i][:c], add_special_tokens=False)["input_ids"]) for c in b)
            cuts[i] = (h, t)
    return cuts


def cuts_fast(tokenizer, texts, bounds, enc, row, full_ids, lengths, added) -> tuple[dict[int, tuple[int, int]], int]:
    """:func:`cuts_reference` read off the full tokenisation (``(cuts, fallbacks)``).

    A cut where a splittable added token starts is that token's index (the prefix-length argument).
    Otherwise, when the message itself starts on a splittable added token, the text before it
    tokenises on its own, so the count is the message's start plus the tokens of the short piece
    from there to the cut (the header, typically). Else the text up to the cut is tokenised.
    """
    added = added
    full_text = texts[-1]
    cuts: dict[int, tuple[int, int]] = {}
    pending: list[tuple[int, int, int, str]] = []  # (message, which cut, base count, text to tokenise)
    fallbacks = 0
    for i, b in bounds.items():
        if b is None:
            continue
        start = len(texts[i - 1]) if i else 0
        found = [0, 0]
        for which, c in enumerate(b):
            same = full_text.startswith(texts[i][:c])
            k = token_starting_at(enc, row, c, full_ids, added) if same and c < len(full_text) else None
            if k is not None:
                found[which] = k
                continue
            anchor = token_starting_at(enc, row, start, full_ids, added) if same and i and start < c else None
            if anchor is not None and _token_end(enc, row, anchor) <= c:
                pending.append((i, which, lengths[i - 1], texts[i][start:c]))
            else:
                fallbacks += 1
                pending.append((i, which, 0, texts[i][:c]))
        cuts[i] = (found[0], found[1])
    if pending:
        ids = tokenizer([p[3] for p in pending], add_special_tokens=False)["input_ids"]
        for (i, which, base, _), piece in zip(pending, ids, strict=True):
            pair = list(cuts[i])
            pair[which] = base + len(piece)
            cuts[i] = (pair[0], pair[1])
    return cuts, fallbacks


def _token_end(enc: Any, row: int, k: int) -> int:
    span = enc.token_to_chars(row, k)
    return span[1] if isinstance(span, tuple) else span.end


def labels_and_weights(
    full_ids: Sequence[int],
    prefix_lengths: Sequence[int],
    trained: Sequence[bool],
    weights: Sequence[float],
    cuts: dict[int, tuple[int, int]],
    *,
    train_on_eos: bool = True,
    train_on_role_header: bool = True,
) -> tuple[list[int], list[float] | None]:
    """Labels (and per-token weights, ``None`` when every trained message weighs 1.0) from the
    message spans: a trained message's span minus its header ``[start, cuts[i][0])`` unless
    ``train_on_role_header`` and minus its end of turn ``[cuts[i][1], end)`` unless ``train_on_eos``."""
    n = len(full_ids)
    labels = [IGNORE_INDEX] * n
    weighted = any(on and w != 1.0 for on, w in zip(trained, weights, strict=True))
    token_weights = [0.0] * n if weighted else None
    start = 0
    for i, end in enumerate(prefix_lengths):
        lo, hi = start, end
        start = end
        if not trained[i]:
            continue
        if i in cuts:
            h = min(max(cuts[i][0], lo), hi)
            t = min(max(cuts[i][1], h), hi)
            lo, hi = (lo if train_on_role_header else h), (hi if train_on_eos else t)
        lo, hi = min(lo, n), min(hi, n)
        if hi > lo:
            labels[lo:hi] = full_ids[lo:hi]
            if token_weights is not None:
                token_weights[lo:hi] = [float(weights[i])] * (hi - lo)
    return labels, token_weights


def token_starting_at(enc: Any, b: int, end: int, ids: Sequence[int], added_ids: frozenset[int]) -> int | None:
    """Index of the token of batch row ``b`` that starts exactly at character ``end`` and is a
    splittable added token, else ``None`` (the boundary is then computed the reference way)."""
    k = enc.char_to_token(b, end)
    if k is None or ids[k] not in added_ids:
        return None
    span = enc.token_to_chars(b, k)
    if span is None:
        return None
    start = span[0] if isinstance(span, tuple) else span.start
    return k if start == end else None


def message_flag_problem(message: dict[str, Any]) -> str | None:
    """Why a message's ``train``/``weight`` keys are invalid, or ``None`` (absent keys are fine)."""
    train = message.get("train")
    if train is not None and not isinstance(train, bool):
        return f"'train' must be true or false, got {train!r}"
    weight = message.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            return f"'weight' must be a finite number >= 0, got {weight!r}"
    return None
