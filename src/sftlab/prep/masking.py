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
from typing import TYPE_CHECKING, Any

from sftlab.data import conversation_shape
from sftlab.errors import ConfigError, SftlabError, check_choice
from sftlab.prep.choices import CUT_SIDES, MASKING_METHODS, MASKING_STRATEGIES
from sftlab.prep.masking_parts import (
    IGNORE_INDEX,
    content_bounds,
    cuts_fast,
    cuts_reference,
    labels_and_weights,
    message_flag_problem,
    token_starting_at,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

logger = logging.getLogger(__name__)

REVERSE_SYSTEM_PROMPT = "You are a good state predictor."
#: The masking strategies (their one home is :mod:`sftlab.prep.choices`; the short name is for callers).
STRATEGIES = MASKING_STRATEGIES
#: Roles never trained on, whatever the strategy: tool output is what a tool returned, not the model.
NEVER_TRAINED_ROLES = frozenset({"tool"})

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


def _arrange(messages: Sequence[dict[str, Any]], strategy: str) -> tuple[list[int | None], frozenset[str]]:
    """The order in which a strategy renders the messages (indices into ``messages``; ``None`` is the
    inserted :data:`REVERSE_SYSTEM_PROMPT`) and the roles it trains on."""
    order: list[int | None] = list(range(len(messages)))
    if strategy == "reverse":
        if conversation_shape(list(messages)) == "single_turn":
            by_role = {m["role"]: i for i, m in enumerate(messages)}
            order = [by_role["system"]] if "system" in by_role else []
            order += [by_role["assistant"], by_role["user"]]
        elif messages[0]["role"] != "system":
            order.insert(0, None)
        return order, frozenset({"user"})
    check_choice("masking", strategy, STRATEGIES)  # what is left of them: assistant, last_assistant
    return order, frozenset({"assistant"})


def apply_strategy(messages: Sequence[dict[str, Any]], strategy: str) -> tuple[list[dict[str, str]], frozenset[str]]:
    """The messages to render and the roles to train on, for a masking strategy.

    ``assistant``: render as is, train on assistant messages.
    ``last_assistant``: render as is, train on the final assistant message only (the roles
    returned are ``{"assistant"}``; :func:`message_plan` says which message).
    ``reverse``: train on user messages (the model learns to predict the user). A single-turn
    conversation is reordered to [system], assistant, user; a multi-turn conversation whose first
    message is not a system message gets :data:`REVERSE_SYSTEM_PROMPT` prepended.
    Tool messages are masked under all of them (:data:`NEVER_TRAINED_ROLES`): under ``reverse`` the
    model learns to predict the user, and tool output is neither user nor model.
    """
    order, roles = _arrange(messages, strategy)
    return [_plain(messages, i) for i in order], roles


def _plain(messages: Sequence[dict[str, Any]], i: int | None) -> dict[str, str]:
    if i is None:
        return {"role": "system", "content": REVERSE_SYSTEM_PROMPT}
    return {"role": messages[i]["role"], "content": messages[i]["content"]}


def message_plan(
    messages: Sequence[dict[str, Any]], strategy: str
) -> tuple[list[dict[str, str]], list[bool], list[float]]:
    """``(rendered, trained, weights)``: the messages to render (``role``/``content`` only), whether
    each one is trained, and each one's loss weight.

    The strategy decides first; a message's own ``train`` flag then overrides it both ways
    (``train: false`` masks a message the strategy trains, ``train: true`` trains one it masks,
    a tool message included). ``weight`` (default 1.0) scales the loss of that message's tokens;
    ``weight: 0`` masks the message like ``train: false``.
    """
    order, roles = _arrange(messages, strategy)
    last = None
    if strategy == "last_assistant":
        last = max((k for k, i in enumerate(order) if i is not None and messages[i]["role"] == "assistant"), default=-1)
    rendered, trained, weights = [], [], []
    for k, i in enumerate(order):
        rendered.append(_plain(messages, i))
        m = messages[i] if i is not None else {}
        role = rendered[-1]["role"]
        on = role in roles and role not in NEVER_TRAINED_ROLES and (last is None or k == last)
        if m.get("train") is not None:
            on = bool(m["train"])
        weight = float(m.get("weight", 1.0))
        trained.append(on and weight > 0)
        weights.append(weight)
    return rendered, trained, weights


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


def _template_ids(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> list[int]:
    return _as_ids(
        tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=False, return_dict=False)
    )


def prefix_lengths_reference(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
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


def _tokenizer_facts(tokenizer: Tokenizer) -> _TokenizerFacts:
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


def _render_prefixes(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> list[str]:
    """The template's text for ``messages[:1]``, ``messages[:2]``, ..., ``messages`` (one batched call)."""
    batch = [list(messages[: i + 1]) for i in range(len(messages))]
    out = tokenizer.apply_chat_template(batch, tokenize=False, add_generation_prompt=False)
    if isinstance(out, str):  # one message: some versions unwrap a batch of one
        out = [out]
    return list(out)


def prefix_lengths_fast(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int], int]:
    """``(full_ids, prefix_lengths, fallback_boundaries)``, equal to :func:`prefix_lengths_reference`.

    Renders every prefix once, tokenises the full text once, and reads each prefix's token count
    off the character offsets where that is provably the same; other boundaries are tokenised
    directly (counted in ``fallback_boundaries``).
    """
    return prefix_lengths_fast_batch(tokenizer, [messages])[0]


def prefix_lengths_fast_batch(
    tokenizer: Tokenizer, conversations: Sequence[Sequence[dict[str, str]]]
) -> list[tuple[list[int], list[int], int]]:
    """:func:`prefix_lengths_fast` for many conversations with one batched tokenizer call.

    Why batch: a fast tokenizer encodes a batch on all cores in Rust, while one call per
    conversation runs on one core and pays the Python round trip each time. The result for each
    conversation is the same as encoding it alone.
    """
    return _fast_batch(tokenizer, conversations)[0]


def _fast_batch(
    tokenizer: Tokenizer, conversations: Sequence[Sequence[dict[str, str]]]
) -> tuple[list[tuple[list[int], list[int], int]], list[list[str]] | None, Any]:
    """:func:`prefix_lengths_fast_batch` plus the rendered prefix texts and the batch encoding
    (``None, None`` when the tokenizer cannot take the fast path at all)."""
    facts = _tokenizer_facts(tokenizer)
    if not facts.usable:
        _warn_fallback(tokenizer, facts.reason)
        out = []
        for messages in conversations:
            full_ids, lengths = prefix_lengths_reference(tokenizer, messages)
            out.append((full_ids, lengths, len(messages) - 1))
        return out, None, None
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
            k = token_starting_at(enc, b, len(text), full_ids, facts.added_ids) if full_text.startswith(text) else None
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
    return results, rendered, enc


def _warn_unlocated(tokenizer: Tokenizer) -> None:
    template = getattr(tokenizer, "chat_template", None) or ""
    key = "unlocated\0" + hashlib.sha256(template.encode()).hexdigest()
    if key not in _warned_templates:
        _warned_templates.add(key)
        logger.warning("masking: the chat template does not render some messages as header + content + end of "
                       "turn; train_on_role_header/train_on_eos leave those messages' spans whole")


def _warn_fallback(tokenizer: Tokenizer, reason: str) -> None:
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


def truncate(features: dict[str, list[int]], max_length: int, side: str) -> dict[str, list[int]]:
    """Keep the first (``right``) or last (``left``) ``max_length`` tokens of every field alike.

    ``side`` was checked with the other options before encoding (:func:`_validate`).
    """
    if side == "right":
        return {k: v[:max_length] for k, v in features.items()}
    return {k: v[-max_length:] if len(v) > max_length else v for k, v in features.items()}


def _validate(messages: Any, max_length: int, truncation: str, method: str) -> None:
    # The strategy is checked where it is used (:func:`_arrange`), before any conversation is encoded.
    check_choice("truncation", truncation, CUT_SIDES)
    check_choice("method", method, MASKING_METHODS)
    if not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise SftlabError("a conversation must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise SftlabError(f"message {i} must have string 'role' and 'content'")
        problem = message_flag_problem(m)
        if problem:
            raise SftlabError(f"message {i}: {problem}")


def encode_conversation_with_info(
    messages: Sequence[dict[str, Any]],
    tokenizer: Tokenizer,
    *,
    strategy: str = "assistant",
    max_length: int = 2048,
    truncation: str = "right",
    method: str = "fast",
    train_on_eos: bool = True,
    train_on_role_header: bool = True,
) -> tuple[dict[str, list], EncodeInfo]:
    """:func:`encode_conversation` plus an :class:`EncodeInfo` for statistics."""
    return encode_conversations_with_info(
        [messages], tokenizer, strategy=strategy, max_length=max_length, truncation=truncation, method=method,
        train_on_eos=train_on_eos, train_on_role_header=train_on_role_header,
    )[0]


def encode_conversations_with_info(
    conversations: Sequence[Sequence[dict[str, Any]]],
    tokenizer: Tokenizer,
    *,
    strategy: str = "assistant",
    max_length: int = 2048,
    truncation: str = "right",
    method: str = "fast",
    train_on_eos: bool = True,
    train_on_role_header: bool = True,
) -> list[tuple[dict[str, list], EncodeInfo]]:
    """:func:`encode_conversation_with_info` for a batch (one batched tokenisation on the fast path).

    Every conversation is validated before any is encoded, so a bad one fails the batch at once.
    """
    for messages in conversations:
        _validate(messages, max_length, truncation, method)
    shapes = [conversation_shape(list(m)) for m in conversations]
    plans = [message_plan(m, strategy) for m in conversations]
    rendered_all = [p[0] for p in plans]
    texts_all: list[list[str]] | None = None
    enc = None
    if method == "fast":
        spans, texts_all, enc = _fast_batch(tokenizer, rendered_all)
    else:
        spans = [(*prefix_lengths_reference(tokenizer, rendered), 0) for rendered in rendered_all]
    split = not (train_on_eos and train_on_role_header)
    out = []
    for b, ((rendered, trained, weights), shape, (full_ids, lengths, fallbacks)) in enumerate(
        zip(plans, shapes, spans, strict=True)
    ):
        cuts: dict[int, tuple[int, int]] = {}
        if split:
            texts = texts_all[b] if texts_all is not None else _render_prefixes(tokenizer, rendered)
            bounds = content_bounds(tokenizer, rendered, texts, [i for i, on in enumerate(trained) if on])
            if any(v is None for v in bounds.values()):
                _warn_unlocated(tokenizer)
            if enc is not None:
                cuts, extra = cuts_fast(tokenizer, texts, bounds, enc, b, full_ids, lengths,
                                          _tokenizer_facts(tokenizer).added_ids)
                fallbacks += extra
            else:
                cuts = cuts_reference(tokenizer, texts, bounds)
        labels, token_weights = labels_and_weights(full_ids, lengths, trained, weights, cuts,
                                                   train_on_eos=train_on_eos, train_on_role_header=train_on_role_header)
        feats: dict[str, list] = {"input_ids": list(full_ids), "labels": labels, "attention_mask": [1] * len(full_ids)}
        if token_weights is not None:
            feats["weights"] = token_weights
        truncated = len(full_ids) > max_length
        if truncated:
            feats = truncate(feats, max_length, truncation)
        out.append((feats, EncodeInfo(len(full_ids), truncated, shape, fallbacks)))
    return out


def encode_conversation(
    messages: Sequence[dict[str, Any]],
    tokenizer: Tokenizer,
    *,
    strategy: str = "assistant",
    max_length: int = 2048,
    truncation: str = "right",
    method: str = "fast",
    train_on_eos: bool = True,
    train_on_role_header: bool = True,
) -> dict[str, list]:
    """Unpadded ``{"input_ids", "labels", "attention_mask"}`` for one normalised conversation,
    plus ``"weights"`` (one float per token, 0.0 where not trained) when a trained message has a
    ``weight`` other than 1.0.

    ``tokenizer.chat_template`` must already be the template to use (see
    :func:`sftlab.models.loading.load_tokenizer`). ``method`` is ``"fast"`` (default) or ``"prefix"``, the
    reference; both return identical features. ``train_on_role_header=False`` leaves the tokens
    the template puts before a trained message's content (``<|im_start|>assistant\\n``) out of
    the loss; ``train_on_eos=False`` leaves out those it puts after the content (the end-of-turn
    token and what follows it in the message, ``<|im_end|>\\n``). See :func:`content_bounds`.
    """
    feats, _ = encode_conversation_with_info(
        messages, tokenizer, strategy=strategy, max_length=max_length, truncation=truncation, method=method,
        train_on_eos=train_on_eos, train_on_role_header=train_on_role_header,
    )
    return feats


def pad_features(features: dict[str, list[int]], length: int, pad_token_id: int) -> dict[str, list[int]]:
    """Right-pad features to ``length``: pad id, label -100, attention 0 (golden-file layout)."""
    n = len(features["input_ids"])
    extra = max(0, length - n)
    out = {
        "input_ids": list(features["input_ids"]) + [pad_token_id] * extra,
        "labels": list(features["labels"]) + [IGNORE_INDEX] * extra,
        "attention_mask": list(features["attention_mask"]) + [0] * extra,
    }
    if "weights" in features:
        out["weights"] = list(features["weights"]) + [0.0] * extra
    return out


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The tokenizer's pad token id, else its eos token id."""
    pid = getattr(tokenizer, "pad_token_id", None)
    if pid is None:
        pid = getattr(tokenizer, "eos_token_id", None)
    if pid is None:
        raise SftlabError("the tokenizer has neither a pad token nor an eos token; cannot pad")
    return int(pid)
