"""Special-token text inside a message's content: a record must not forge turn boundaries.

The chat template renders a conversation to text and the tokenizer reads that text whole, so a
message whose content says ``<|im_end|>\\n<|im_start|>user`` comes out as the *real* special tokens:
the record has faked a turn boundary, and the model is trained to emit or follow it (the loss mask
itself stays right: it is computed from the messages, not from the tokens). The rendering has no
way to tell the template's special tokens from the content's, so sftlab decides per record:

* ``skip`` (default): a conversation whose content holds the text of one of the tokenizer's special
  tokens is skipped and counted (``content holds special-token text``); ``--strict`` makes it an
  error naming the conversation and the token.
* ``keep``: the old behaviour, for data that uses them on purpose (pre-rendered tool markup).
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import DataError

SPECIAL_TEXT_CHOICES = ("skip", "keep")
SKIP_SPECIAL_TEXT = "content holds special-token text"


def special_token_texts(tokenizer: Any) -> tuple[str, ...]:
    """The text of every special token of ``tokenizer`` (its named ones and added tokens marked special)."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found.update(t.content for t in decoder.values() if getattr(t, "special", False))
    return tuple(sorted(t for t in found if t))


def forged_token(conversation: list[dict[str, Any]], texts: tuple[str, ...]) -> str | None:
    """The first special-token text found in a message's content, or None."""
    for m in conversation:
        content = m.get("content") or ""
        for t in texts:
            if t in content:
                return t
    return None


def drop_forged(loaded: Any, tokenizer: Any, *, mode: str, strict: bool, where: Any) -> int:
    """Skip (count in ``loaded.stats["skipped"]``) or refuse conversations holding special-token text."""
    if mode == "keep" or not loaded.conversations:
        return 0
    texts = special_token_texts(tokenizer)
    if not texts:
        return 0
    keep_c, keep_i, dropped = [], [], 0
    for conv, cid in zip(loaded.conversations, loaded.ids, strict=True):
        tok = forged_token(conv, texts)
        if tok is None:
            keep_c.append(conv)
            keep_i.append(cid)
            continue
        if strict:
            raise DataError(str(where), f"conversation {cid}: {SKIP_SPECIAL_TEXT} '{tok}' (it would forge a turn "
                            "boundary; special_text: keep reads it as the token)")
        dropped += 1
    if dropped:
        loaded.conversations, loaded.ids = keep_c, keep_i
        skipped = loaded.stats.setdefault("skipped", {})
        skipped[SKIP_SPECIAL_TEXT] = skipped.get(SKIP_SPECIAL_TEXT, 0) + dropped
        loaded.stats["kept"] = len(keep_c)
    return dropped
