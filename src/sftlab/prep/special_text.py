"""Special-token text inside a message's content: a record must not forge turn boundaries.

The chat template renders a conversation to text and the tokenizer reads that text whole, so a
message whose content says ``<|im_end|>\n<|im_start|>user\n...`` comes out as the *real* special
tokens: the record has faked a turn, and the model is trained to emit or follow it (the loss mask
itself stays right: it is computed from the messages, not from the tokens). The rendering has no
way to tell the template's special tokens from the content's, so sftlab decides per record:

* ``skip`` (default): a conversation with a message whose content holds one of the template's own
  *turn headers* (``<|im_start|>user\n`` in ChatML: what the template writes before a message, when
  it contains a special token) is skipped and counted (``content forges a turn header``);
  ``--strict`` makes it an error naming the conversation and the header. Content that only
  mentions a special token (``what does <|im_end|> mean?``) forges no turn and is kept as it is.
* ``keep``: the old behaviour, for data that holds pre-rendered turns on purpose.

The headers are read off the template itself (each role rendered around a sentinel), so any
template with special-token headers is covered, not ChatML alone.
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import DataError

SPECIAL_TEXT_CHOICES = ("skip", "keep")
SKIP_SPECIAL_TEXT = "content forges a turn header"
_SENTINEL = "\x1esftlab-probe\x1e"
ROLES = ("system", "user", "assistant", "tool")


def special_token_texts(tokenizer: Any) -> tuple[str, ...]:
    """The text of every special token of ``tokenizer`` (its named ones and added tokens marked special)."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found.update(t.content for t in decoder.values() if getattr(t, "special", False))
    return tuple(sorted(t for t in found if t))


def turn_headers(tokenizer: Any) -> tuple[str, ...]:
    """What the chat template writes before a message of each role, from its last special token on
    (``<|im_start|>user\n``); roles the template refuses, or headers without a special token, are left out."""
    specials = special_token_texts(tokenizer)
    heads = set()
    for role in ROLES:
        try:
            text = tokenizer.apply_chat_template([{"role": role, "content": _SENTINEL}], tokenize=False)
        except Exception:  # a template that refuses a lone message of this role
            continue
        if not isinstance(text, str) or _SENTINEL not in text:
            continue
        head = text.split(_SENTINEL)[0]
        starts = [head.rfind(t) for t in specials if t in head]
        if starts and head[max(starts):]:
            heads.add(head[max(starts):])
    return tuple(sorted(heads))


def forged_header(conversation: list[dict[str, Any]], headers: tuple[str, ...]) -> str | None:
    """The first turn header found inside a message's content, or None."""
    for m in conversation:
        content = m.get("content") or ""
        for h in headers:
            if h in content:
                return h
    return None


def drop_forged(loaded: Any, tokenizer: Any, *, mode: str, strict: bool, where: Any) -> int:
    """Skip (count in ``loaded.stats["skipped"]``) or refuse conversations whose content forges a turn."""
    if mode == "keep" or not loaded.conversations:
        return 0
    headers = turn_headers(tokenizer)
    if not headers:
        return 0
    keep_c, keep_i, dropped = [], [], 0
    for conv, cid in zip(loaded.conversations, loaded.ids, strict=True):
        head = forged_header(conv, headers)
        if head is None:
            keep_c.append(conv)
            keep_i.append(cid)
            continue
        if strict:
            raise DataError(str(where), f"conversation {cid}: {SKIP_SPECIAL_TEXT} {head!r} (special_text: keep "
                            "reads it as the template's own)")
        dropped += 1
    if dropped:
        loaded.conversations, loaded.ids = keep_c, keep_i
        skipped = loaded.stats.setdefault("skipped", {})
        skipped[SKIP_SPECIAL_TEXT] = skipped.get(SKIP_SPECIAL_TEXT, 0) + dropped
        loaded.stats["kept"] = len(keep_c)
    return dropped
