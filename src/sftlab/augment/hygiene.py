"""Data hygiene before augmentation: drop conversations a model should not learn from, counted by reason.

Why: ShareGPT holds replies that are a lone zero-width space (``str.strip`` keeps U+200B), replies
cut off mid-sentence when the export stopped, error artifacts the web UI wrote into the reply
("network error"), and prompts whose context the record lacks: a later part of a conversation that
ShareGPT split into pieces (``abc_3``), or a bare "continue". A model trained on them learns to
stop mid-sentence, to print error messages and to answer questions it never saw; an instruction
added to them is satisfied by nothing worth learning. Each rule is a switch
(:data:`HYGIENE_RULES`, ``augment.hygiene``) so a run can say what each one buys.

Every rule is a pure function of one conversation (and its id); duplicates are collapsed by the
pipeline, which sees them all. Only the last round matters: it is the one augmentation changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

INVISIBLE_EMPTY = "invisible_empty"
CUT_OFF = "cut_off"
ERROR_ARTIFACT = "error_artifact"
SPLIT_PART = "split_part"
CONTINUATION = "continuation"
DUPLICATE_PROMPT = "duplicate_prompt"

HYGIENE_RULES = (INVISIBLE_EMPTY, CUT_OFF, ERROR_ARTIFACT, SPLIT_PART, CONTINUATION, DUPLICATE_PROMPT)
"""The rules ``augment.hygiene`` may name (``all`` names every one), in the order they are tried."""

REASONS = {
    INVISIBLE_EMPTY: "reply empty once invisible characters are removed",
    CUT_OFF: "reply cut off mid-sentence",
    ERROR_ARTIFACT: "reply is an error artifact",
    SPLIT_PART: "later part of a split conversation (its context is missing)",
    CONTINUATION: "prompt depends on missing context (\"continue\", \"that's wrong\")",
    DUPLICATE_PROMPT: "duplicate prompt (collapsed to its first conversation)",
}
"""The counted reason of each rule (keys of the ``hygiene`` statistics)."""

# Zero-width space/joiners, word joiner, BOM, soft hyphen, no-break spaces and the other Unicode
# spaces: what a reply can hold while showing nothing.
_INVISIBLE = re.compile(r"[\s\u00a0\u00ad\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff]+")


def visible(text: str) -> str:
    """``text`` without any invisible or space character: empty when nothing would show."""
    return _INVISIBLE.sub("", text)


def _invisible_empty(cid: str, messages: list[dict[str, str]]) -> bool:
    return bool(messages) and messages[-1]["role"] == "assistant" and not visible(messages[-1]["content"])


_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_STRUCTURED_LINE = re.compile(r"^\s*(?:[-*+•]\s|\d{1,3}[.)]\s|#|\||>|```|~~~)")
_TERMINAL = tuple(".!?。！？…\"'”’)]}>*`|:;~") + ("\u061f",)
_DANGLING = re.compile(r"(?:[,\-–(/&]|\b(?:and|or|the|a|an|of|to|with|for|in|on|that|is|are|but|by|as))\s*$",
                       re.IGNORECASE)


def is_cut_off(reply: str) -> bool:
    """Whether the reply stops mid-sentence (or inside a code block).

    Why these tests: an unclosed code fence, or a last word that cannot end a sentence ("and", a
    comma), is cut off whatever the layout; a long prose line without final punctuation is too. A
    list item, table row or heading may end without punctuation, and so may a short sign-off
    ("Best regards\\nAnna"), an emoji or a non-Latin script without a period: those are kept.
    """
    text = reply.rstrip()
    if not visible(text):
        return False
    if len(_FENCE.findall(text)) % 2 == 1:
        return True
    last = text.split("\n")[-1].strip()
    if _DANGLING.search(last):
        return True
    if _STRUCTURED_LINE.match(last) or last.endswith(_TERMINAL) or last.split()[-1].startswith("#"):
        return False
    if not last[-1:].isascii():  # emoji, CJK and other scripts without a Latin full stop
        return False
    return len(last.split()) >= 8


def _cut_off(cid: str, messages: list[dict[str, str]]) -> bool:
    return bool(messages) and messages[-1]["role"] == "assistant" and is_cut_off(messages[-1]["content"])


_ERRORS = re.compile(
    r"^\W*(?:network error|error in body stream|an error occurred|something went wrong|there was an error "
    r"generating a response|load failed|request timed out|too many requests in 1 hour|only one message at a time"
    r"|!?\s*(?:this content|contents?) may violate our content polic)", re.IGNORECASE)
_ERROR_MAX_CHARS = 400  # a long reply that mentions "network error" is about networks, not broken


def is_error_artifact(reply: str) -> bool:
    """Whether the reply is a message the chat UI wrote (``network error``), not an answer."""
    return len(reply) <= _ERROR_MAX_CHARS and bool(_ERRORS.match(reply.strip()))


def _error_artifact(cid: str, messages: list[dict[str, str]]) -> bool:
    return bool(messages) and messages[-1]["role"] == "assistant" and is_error_artifact(messages[-1]["content"])


_SPLIT_ID = re.compile(r"^[A-Za-z0-9]{4,}_(\d+)$")


def _split_part(cid: str, messages: list[dict[str, str]]) -> bool:
    """ShareGPT's split ids: ``abc_0`` is a conversation's first part, ``abc_3`` its fourth."""
    m = _SPLIT_ID.match(cid)
    return bool(m) and int(m.group(1)) > 0


_CONTINUE = re.compile(
    r"^\W*(?:please\s+|pls\s+|ok(?:ay)?[,.!]?\s+|now\s+)?(?:continue|go on|keep going|keep writing|finish it|"
    r"try again|regenerate|繼續|继续|계속|続けて|続き|продолжай|continua|continúa|weiter)(?!\w)", re.IGNORECASE)
# Bare words that ask for more of an answer the record lacks, when they are the whole prompt.
_BARE = re.compile(r"^\W*(?:please\s+)?(?:more|next|and|again|same|rewrite it|another(?: one)?|shorter|longer)"
                   r"(?:\s+please)?\W*$", re.IGNORECASE)
_REFERS_BACK = re.compile(
    r"\b(?:i don'?t think (?:that|this|it)'?s? (?:is )?(?:right|correct)|(?:your|the) (?:previous|last) "
    r"(?:answer|response|message|reply|code|output)|(?:from|in) the (?:answers?|list|code) you (?:provided|gave|wrote)"
    r"|you were (?:saying|writing))\b", re.IGNORECASE)
# Weaker references: in a long or multi-line prompt "the above" usually points at text the prompt itself holds.
_REFERS_BACK_SHORT = re.compile(
    r"^\W*(?:(?:that|this|it)(?:'s| is)? (?:not (?:right|correct)|wrong|incorrect)\b)|\b(?:the above|as above|you "
    r"(?:just )?(?:said|wrote|forgot|missed|stopped)|(?:do|make|write) (?:it|that|this) (?:again|shorter|longer))\b",
    re.IGNORECASE)
_CONTINUE_MAX_WORDS = 12
_SHORT_MAX_WORDS = 25


def depends_on_missing_context(prompt: str) -> bool:
    """Whether a first-round prompt only makes sense after an earlier answer ("continue", "that's wrong").

    Why a word limit for "continue": "Continue the story of Ana, a pilot who ..." is a full request;
    "continue please" or "continue from where you stopped" is not. References back to an answer the
    record does not hold ("your previous answer", "the above") count at any length.
    """
    text = prompt.strip()
    if not text:
        return False
    if (_CONTINUE.match(text) and len(text.split()) <= _CONTINUE_MAX_WORDS) or _BARE.match(text):
        return True
    if len(text.split()) <= _SHORT_MAX_WORDS and "\n" not in text and _REFERS_BACK_SHORT.search(text):
        return True
    return bool(_REFERS_BACK.search(text))


def _continuation(cid: str, messages: list[dict[str, str]]) -> bool:
    users = [m for m in messages if m["role"] == "user"]
    return len(users) == 1 and depends_on_missing_context(users[0]["content"])


CHECKS: dict[str, Callable[[str, list[dict[str, str]]], bool]] = {
    INVISIBLE_EMPTY: _invisible_empty,
    CUT_OFF: _cut_off,
    ERROR_ARTIFACT: _error_artifact,
    SPLIT_PART: _split_part,
    CONTINUATION: _continuation,
}
"""Per-conversation rules; :data:`DUPLICATE_PROMPT` needs every conversation and lives in the pipeline."""


def hygiene_reason(cid: str, messages: list[dict[str, str]], rules: tuple[str, ...]) -> str | None:
    """The first rule of ``rules`` (in :data:`HYGIENE_RULES` order) the conversation breaks, or None."""
    for rule in HYGIENE_RULES:
        if rule in rules and rule in CHECKS and CHECKS[rule](cid, messages):
            return rule
    return None


def prompt_key(messages: list[dict[str, str]]) -> str:
    """What makes two prompts duplicates: the user (and system) text, case, spacing and punctuation aside."""
    text = " ".join(m["content"] for m in messages[:-1] if m["role"] in ("user", "system"))
    return " ".join(re.findall(r"\w+", visible_words(text).lower()))


def visible_words(text: str) -> str:
    """``text`` with invisible characters turned into plain spaces."""
    return _INVISIBLE.sub(" ", text)
