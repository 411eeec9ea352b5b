"""Loss masks: which tokens of a chat-templated conversation the model is trained on.

Definition (the reference, ``method="prefix"``): ``full_ids`` is the chat template applied to
all messages; ``prefix_lengths[i]`` is the token count of the template applied to
``messages[:i+1]``; message i owns the tokens ``[prefix_lengths[i-1], prefix_lengths[i])``
(from 0 for i = 0), clamped to ``len(full_ids)``. Labels are -100 except on the spans of the
trained roles, where they copy ``full_ids``. Masks are computed on the whole sequence and only
then truncated, so a span cut by ``max_length`` keeps exactly its surviving tokens.

The reference re-tokenises the conversation once per message, quadratic in the number of
turns. The fast path (``method="fast"``) gets the *same* prefix lengths from a single
tokenisation: it renders every prefix as text (Jinja only, cheap), checks that each rendered
prefix is a prefix of the full rendering, and tokenises the full text once with character
offsets. A prefix's token count can be read off the full tokenisation when its end falls right
where an added token (``<|im_start|>`` and friends) begins: fast tokenizers split the text on
added tokens before normalising, pre-tokenising and running the model on each piece separately,
so the pieces before that point tokenise identically whether the text continues or not.

Where that argument does not hold for a boundary (a template whose prefix renderings are not
prefixes of the full rendering, a boundary inside ordinary text, a slow tokenizer without
offsets, added tokens that strip whitespace or match whole words only) the fast path computes
that boundary the reference way, by tokenising the rendered prefix. Output is therefore always
identical to the reference; only the speed changes. The first time a template needs this, a
warning says so (once per template and process), and :func:`encode_conversation_with_info`
reports how many boundaries fell back, so preprocessing stats show it too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sftlab.data import conversation_shape
from sftlab.errors import ConfigError, SftlabError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
REVERSE_SYSTEM_PROMPT = "You are a good state predictor."
STRATEGIES = ("assistant", "reverse")
TRUNCATIONS = ("right", "left")
#: Roles never trained on, whatever the strategy: tool output is what a tool returned, not the model.
NEVER_TRAINED_ROLES = frozenset({"tool"})
METHODS = ("fast", "prefix")

_warned_templates: set[str] = set()


@dataclass
class EncodeInfo:
    """What happened while encoding one conversation (for statistics)."""

    full_length: int  # tokens before truncation
    truncated: bool
    shape: str  # "single_turn" | "multi_turn" of the normalised input
    fallback_boundaries: int = 0  # fast path: boundaries computed the reference way


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def apply_strategy(messages: Sequence[dict[str, str]], strategy: str) -> tuple[list[dict[str, str]], frozenset[str]]:
    """The messages to render and the roles to train on, for a masking strategy.

    ``assistant``: render as is, train on assistant messages.
    ``reverse``: train on user messages (the model learns to predict the user). A single-turn
    conversation is reordered to [system], assistant, user; a multi-turn conversation whose first
    message is not a system message gets :data:`REVERSE_SYSTEM_PROMPT` prepended.
    Tool messages are masked under both (:data:`NEVER_TRAINED_ROLES`): under ``reverse`` the
    model learns to predict the user, and tool output is neither user nor model.
    """
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if strategy == "assistant":
        return msgs, frozenset({"assistant"})
    if strategy == "reverse":
        if conversation_shape(msgs) == "single_turn":
            by_role = {m["role"]: m for m in msgs}
            ordered = [by_role["system"]] if "system" in by_role else []
            ordered += [by_role["assistant"], by_role["user"]]
            return ordered, frozenset({"user"})
        if msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": REVERSE_SYSTEM_PROMPT})
        return msgs, frozenset({"user"})
    raise ConfigError(f"unknown masking strategy '{strategy}': use one of {', '.join(STRATEGIES)}")


# --------------------------------------------------------------------------------------------
# Prefix lengths: reference and fast path
# --------------------------------------------------------------------------------------------


def _as_ids(out: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` output as a plain list of ints, whatever the version returns."""
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):  # batched shape for one conversation
        out = out[0]
    return list(out)


def _template_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    return _as_ids(
        tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=False, return_dict=False)
    )


def prefix_lengths_reference(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
    """``(full_ids, prefix_lengths)`` by the definition: one template tokenisation per prefix."""
    full_ids = _template_ids(tokenizer, messages)
    lengths = [len(_template_ids(tokenizer, messages[: i + 1])) for i in range(len(messages) - 1)]
    lengths.append(len(full_ids))
    return full_ids, lengths


@dataclass
class _TokenizerFacts:
    """Per-tokenizer facts the fast path needs, computed once."""

    added_ids: frozenset[int]  # added tokens safe to split on (literal, no lstrip)
    usable: bool  # fast tokenizer with offsets, no single_word added tokens
    reason: str = ""


def _tokenizer_facts(tokenizer: Any) -> _TokenizerFacts:
    cached = getattr(tokenizer, "_sftlab_fast_facts", None)
    if cached is not None:
        return cached
    facts: _TokenizerFacts
    if not getattr(tokenizer, "is_fast", False):
        facts = _TokenizerFacts(frozenset(), False, "the tokenizer is not a fast tokenizer (no character offsets)")
    else:
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        if any(getattr(t, "single_word", False) for t in decoder.values()):
            facts = _TokenizerFacts(frozenset(), False, "the tokenizer has single-word added tokens")
        else:
            has_normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None) is not None
            ids = frozenset(
                i
                for i, t in decoder.items()
                if not getattr(t, "lstrip", False) and not (has_normalizer and getattr(t, "normalized", False))
            )
            facts = _TokenizerFacts(ids, True)
    try:
        tokenizer._sftlab_fast_facts = facts
    except AttributeError:  # pragma: no cover - exotic tokenizer objects
        pass
    return facts


def _render_prefixes(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[str]:
    """The template's text for ``messages[:1]``, ``messages[:2]``, ..., ``messages`` (one batched call)."""
    batch = [list(messages[: i + 1]) for i in range(len(messages))]
    out = tokenizer.apply_chat_template(batch, tokenize=False, add_generation_prompt=False)
    if isinstance(out, str):  # one message: some versions unwrap a batch of one
        out = [out]
    return list(out)


def prefix_lengths_fast(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int], int]:
    """``(full_ids, prefix_lengths, fallback_boundaries)``, equal to :func:`prefix_lengths_reference`.

    Renders every prefix once, tokenises the full text once, and reads each prefix's token count
    off the character offsets where that is provably the same; other boundaries are tokenised
    directly (counted in ``fallback_boundaries``).
    """
    return prefix_lengths_fast_batch(tokenizer, [messages])[0]


def prefix_lengths_fast_batch(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]]
) -> list[tuple[list[int], list[int], int]]:
    """:func:`prefix_lengths_fast` for many conversations with one batched tokenizer call.

    Why batch: a fast tokenizer encodes a batch on all cores in Rust, while one call per
    conversation runs on one core and pays the Python round trip each time. The result for each
    conversation is the same as encoding it alone.
    """
    facts = _tokenizer_facts(tokenizer)
    if not facts.usable:
        _warn_fallback(tokenizer, facts.reason)
        out = []
        for messages in conversations:
            full_ids, lengths = prefix_lengths_reference(tokenizer, messages)
            out.append((full_ids, lengths, len(messages) - 1))
        return out
    rendered = [_render_prefixes(tokenizer, messages) for messages in conversations]
    enc = tokenizer([texts[-1] for texts in rendered], add_special_tokens=False)
    results = []
    any_fallback = False
    for b, texts in enumerate(rendered):
        full_text = texts[-1]
        full_ids = list(enc["input_ids"][b])
        lengths: list[int] = []
        fallbacks = 0
        for text in texts[:-1]:
            if text == full_text:  # the remaining messages render to nothing
                lengths.append(len(full_ids))
                continue
            k = _token_starting_at(enc, b, len(text), full_ids, facts.added_ids) if full_text.startswith(text) else None
            if k is None:
                fallbacks += 1
                lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
            else:
                lengths.append(k)
        lengths.append(len(full_ids))
        any_fallback = any_fallback or fallbacks > 0
        results.append((full_ids, lengths, fallbacks))
    if any_fallback:
        _warn_fallback(tokenizer, "some message boundaries do not fall on an added token in the rendered text")
    return results


def _token_starting_at(enc: Any, b: int, end: int, ids: Sequence[int], added_ids: frozenset[int]) -> int | None:
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


def _warn_fallback(tokenizer: Any, reason: str) -> None:
    template = getattr(tokenizer, "chat_template", None) or ""
    key = hashlib.sha256(f"{type(tokenizer).__name__}\0{template}".encode()).hexdigest()
    if key in _warned_templates:
        return
    _warned_templates.add(key)
    logger.warning(
        "masking fast path: %s for this tokenizer/template; those boundaries are tokenised the reference "
        "(prefix) way, so outputs stay identical but preprocessing is slower",
        reason,
    )


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def labels_from_spans(
    full_ids: Sequence[int], prefix_lengths: Sequence[int], roles: Sequence[str], trained_roles: frozenset[str]
) -> list[int]:
    """-100 everywhere except the spans of trained roles, which copy ``full_ids``."""
    n = len(full_ids)
    labels = [IGNORE_INDEX] * n
    start = 0
    for end, role in zip(prefix_lengths, roles, strict=True):
        s, e = min(start, n), min(end, n)
        if role in trained_roles and role not in NEVER_TRAINED_ROLES and e > s:
            labels[s:e] = full_ids[s:e]
        start = end
    return labels


def truncate(features: dict[str, list[int]], max_length: int, side: str) -> dict[str, list[int]]:
    """Keep the first (``right``) or last (``left``) ``max_length`` tokens of every field alike."""
    if side not in TRUNCATIONS:
        raise ConfigError(f"unknown truncation '{side}': use right or left")
    if side == "right":
        return {k: v[:max_length] for k, v in features.items()}
    return {k: v[-max_length:] if len(v) > max_length else v for k, v in features.items()}


def _validate(messages: Any, strategy: str, max_length: int, truncation: str, method: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown masking strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    if truncation not in TRUNCATIONS:
        raise ConfigError(f"unknown truncation '{truncation}': use right or left")
    if method not in METHODS:
        raise ConfigError(f"unknown masking method '{method}': use fast or prefix")
    if not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise SftlabError("a conversation must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise SftlabError(f"message {i} must have string 'role' and 'content'")


def encode_conversation_with_info(
    messages: Sequence[dict[str, str]],
    tokenizer: Any,
    *,
    strategy: str = "assistant",
    max_length: int = 2048,
    truncation: str = "right",
    method: str = "fast",
) -> tuple[dict[str, list[int]], EncodeInfo]:
    """:func:`encode_conversation` plus an :class:`EncodeInfo` for statistics."""
    return encode_conversations_with_info(
        [messages], tokenizer, strategy=strategy, max_length=max_length, truncation=truncation, method=method
    )[0]


def encode_conversations_with_info(
    conversations: Sequence[Sequence[dict[str, str]]],
    tokenizer: Any,
    *,
    strategy: str = "assistant",
    max_length: int = 2048,
    truncation: str = "right",
    method: str = "fast",
) -> list[tuple[dict[str, list[int]], EncodeInfo]]:
    """:func:`encode_conversation_with_info` for a batch (one batched tokenisation on the fast path).

    Every conversation is validated before any is encoded, so a bad one fails the batch at once.
    """
    for messages in conversations:
        _validate(messages, strategy, max_length, truncation, method)
    shapes = [conversation_shape(list(m)) for m in conversations]
    prepared = [apply_strategy(m, strategy) for m in conversations]
    if method == "fast":
        spans = prefix_lengths_fast_batch(tokenizer, [rendered for rendered, _ in prepared])
    else:
        spans = [(*prefix_lengths_reference(tokenizer, rendered), 0) for rendered, _ in prepared]
    out = []
    for (rendered, trained), shape, (full_ids, lengths, fallbacks) in zip(prepared, shapes, spans, strict=True):
        labels = labels_from_spans(full_ids, lengths, [m["role"] for m in rendered], trained)
        feats = {"input_ids": list(full_ids), "labels": labels, "attention_mask": [1] * len(full_ids)}
        truncated = len(full_ids) > max_length
        if truncated:
            feats = truncate(feats, max_length, truncation)
        out.append((feats, EncodeInfo(len(full_ids), truncated, shape, fallbacks)))
    return out


def encode_conversation(
    messages: Sequence[dict[str, str]],
    tokenizer: Any,
    *,
    strategy: str = "assistant",
    max_length: int = 2048,
    truncation: str = "right",
    method: str = "fast",
) -> dict[str, list[int]]:
    """Unpadded ``{"input_ids", "labels", "attention_mask"}`` for one normalised conversation.

    ``tokenizer.chat_template`` must already be the template to use (see
    :func:`sftlab.models.load_tokenizer`). ``method`` is ``"fast"`` (default) or ``"prefix"``, the
    reference; both return identical features.
    """
    feats, _ = encode_conversation_with_info(
        messages, tokenizer, strategy=strategy, max_length=max_length, truncation=truncation, method=method
    )
    return feats


def pad_features(features: dict[str, list[int]], length: int, pad_token_id: int) -> dict[str, list[int]]:
    """Right-pad features to ``length``: pad id, label -100, attention 0 (golden-file layout)."""
    n = len(features["input_ids"])
    extra = max(0, length - n)
    return {
        "input_ids": list(features["input_ids"]) + [pad_token_id] * extra,
        "labels": list(features["labels"]) + [IGNORE_INDEX] * extra,
        "attention_mask": list(features["attention_mask"]) + [0] * extra,
    }


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id, else its eos token id."""
    pid = getattr(tokenizer, "pad_token_id", None)
    if pid is None:
        pid = getattr(tokenizer, "eos_token_id", None)
    if pid is None:
        raise SftlabError("the tokenizer has neither a pad token nor an eos token; cannot pad")
    return int(pid)
