"""Spans of a reply that a transform must leave exactly as written: code, tables, URLs, identifiers, formulas.

Why: lowercasing ``ConcurrentModificationException``, a URL or ``f = (γ / 2π)`` changes what the
reply says; so does bolding half a link or quoting a code fence. With ``preserve_content`` the
transforms work around these spans (:func:`map_outside`), refuse positions inside them
(:func:`overlaps`), and skip the record when the instruction could then not be met, so the
skip is counted instead of the content broken.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`[^`\n]+`")
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.MULTILINE)  # a table is data: its cells stay as written
_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>()\[\]\"'`]+|<https?://[^>\s]+>|\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_LINK = re.compile(r"\[[^\]\n]*\]\([^)\s]+\)")
_LATEX = re.compile(r"\$\$.+?\$\$|\$[^$\n]+\$|\\\(.+?\\\)|\\\[.+?\\\]", re.DOTALL)
# Identifiers: camelCase/PascalCase with an inner capital, snake_case, dotted calls, words with digits
# (H2O, utf8). Acronyms (AI, API) are prose: "all lowercase" means them too, and "ai" still reads.
_IDENT = re.compile(r"\b(?:[A-Za-z]+[a-z][A-Z]\w*|[A-Z]{2,}[a-z]+[A-Z]\w*|\w*_\w+|\w+(?:\.\w+)+\(?\)?|"
                    r"[A-Za-z]+\d\w*|\d+[A-Za-z]\w*)\b")
# Formulas: a run of non-space text holding an operator or a Greek/math letter, with its neighbours
# when they are joined by operators ("f = (γ / 2π)").
_MATH_CHARS = "=<>≤≥≠≈±×÷∑∏∫√∞∂∆∇πΠαβγδεθλμσφωΩΣΓΔ^"
_FORMULA = re.compile(r"[^\s]*[" + re.escape(_MATH_CHARS) + r"][^\s]*(?:\s+[^\s]*[" + re.escape(_MATH_CHARS)
                      + r"()+\-*/][^\s]*)*")


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, merged ``(start, end)`` spans of code, table rows, links, URLs, LaTeX, formulas and identifiers."""
    spans: list[tuple[int, int]] = []
    for pattern in (_FENCED, _INLINE, _TABLE_ROW, _LINK, _URL, _LATEX, _FORMULA, _IDENT):
        spans += [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def link_and_code_spans(text: str) -> list[tuple[int, int]]:
    """Only code, links and URLs: the spans markup must never cut (bold around a word is fine, inside a URL not)."""
    return sorted((m.start(), m.end()) for pattern in (_FENCED, _INLINE, _LINK, _URL) for m in pattern.finditer(text))


def map_outside(text: str, fn: Callable[[str], str], spans: list[tuple[int, int]] | None = None) -> str:
    """``text`` with ``fn`` applied to everything outside the protected spans (they stay byte for byte)."""
    spans = protected_spans(text) if spans is None else spans
    out, pos = [], 0
    for s, e in spans:
        out += [fn(text[pos:s]), text[s:e]]
        pos = e
    out.append(fn(text[pos:]))
    return "".join(out)


def protected_text(text: str) -> str:
    """The protected spans alone, joined by newlines (what a case change would have to leave as is)."""
    return "\n".join(text[s:e] for s, e in protected_spans(text))


def overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` touches any span (a highlight or placeholder there would break it)."""
    return any(s < end and start < e for s, e in spans)


def has_fence(text: str) -> bool:
    return bool(re.search(r"^[ \t]*(```|~~~)", text, flags=re.MULTILINE))


def without_protected(text: str) -> str:
    """``text`` with every protected span replaced by a space (for counting what prose holds)."""
    out, pos = [], 0
    for s, e in protected_spans(text):
        out += [text[pos:s], " "]
        pos = e
    out.append(text[pos:])
    return "".join(out)


_HEADING = re.compile(r"^\s*(?:#{1,6}\s+\S.*|\*\*[^*\n]+\*\*:?|__[^_\n]+__:?|[^\n]{1,80}:)\s*$")


def is_heading(paragraph: str) -> bool:
    """A one-line paragraph that introduces what follows: ``## Steps``, ``**Pros**``, ``Ingredients:``."""
    return "\n" not in paragraph.strip() and bool(_HEADING.match(paragraph))


def keep_heads(paragraphs: list[str]) -> list[list[str]]:
    """Paragraphs bundled so each heading travels with the paragraph after it (one unit per bundle)."""
    units: list[list[str]] = []
    pending: list[str] = []
    for p in paragraphs:
        pending.append(p)
        if not is_heading(p):
            units.append(pending)
            pending = []
    if pending:
        if units:
            units[-1] += pending
        else:
            units.append(pending)
    return units
