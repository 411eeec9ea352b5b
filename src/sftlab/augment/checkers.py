"""sftlab's own verifiable constraints: one checker per ``sftlab:*`` instruction id.

Why: IFEval's 25 types are what the model is tested on; training only on them teaches IFEval's
formats. These are formats, counts, positions and structure real users ask for (a numbered list of
N steps, a table of N columns, code blocks labelled with their language, a TL;DR first, no more
than N words a sentence, ...), designed for sftlab and checked here, in plain Python, with no
model in the loop. None is one of IFBench's 58 test types (a test asserts it): IFBench stays an
untouched out-of-distribution test.

Each checker is a pure function ``(response, **kwargs) -> bool``; :data:`OWN_CHECKERS` maps ids to
them and :func:`sftlab.augment.pipeline.verify` sends ``sftlab:*`` ids here, IFEval ids to lm_eval.
The counting helpers are public because the entries that build the replies must count exactly the
same way the checkers do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

PREFIX = "sftlab:"
"""Every own type's id starts with this: never an IFEval or IFBench category."""

_FENCE = re.compile(r"^\s*(```|~~~)")
NUMBERED = re.compile(r"^\s*(\d{1,3})[.)]\s+\S")
BULLET = re.compile(r"^\s*[-*+•]\s+\S")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
FIRST_PERSON = frozenset("i me my mine myself i'm i've i'll i'd im ive".split())


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (fence lines excluded)."""
    out, in_fence = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append(line)
    return out


def numbered_items(text: str) -> list[int]:
    """The numbers of the numbered list items outside code, in order."""
    return [int(m.group(1)) for line in prose_lines(text) if (m := NUMBERED.match(line))]


def table_columns(text: str) -> list[int]:
    """Column counts of the markdown tables (a header row followed by a ``---|---`` row)."""
    lines = prose_lines(text)
    cols = []
    for i in range(1, len(lines)):
        if _TABLE_SEP.match(lines[i]) and "|" in lines[i - 1] and "-" in lines[i]:
            cols.append(len([c for c in lines[i - 1].strip().strip("|").split("|")]))
    return cols


def fence_labels(text: str) -> list[str]:
    """The info string (language) of every opening code fence, "" when unlabelled."""
    labels, in_fence = [], False
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            if not in_fence:
                labels.append(line.strip()[3:].strip().split(" ")[0].lower())
            in_fence = not in_fence
    return labels


def headings(text: str) -> int:
    return sum(bool(HEADING.match(line)) for line in prose_lines(text))


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:['’][^\W_]+)?", text)


def sentences(text: str) -> list[str]:
    """Prose sentences: split at . ! ? followed by space or end, and at line breaks; code left out."""
    body = "\n".join(prose_lines(text))
    parts = re.split(r"(?<=[.!?])\s+|\n+", body)
    return [p for p in parts if words(p)]


def text_paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def first_word(text: str) -> str:
    w = words(text)
    return w[0].lower() if w else ""


def _numbered(response: str, num_items: int) -> bool:
    return numbered_items(response) == list(range(1, num_items + 1))


def _table(response: str, num_columns: int) -> bool:
    cols = table_columns(response)
    return bool(cols) and all(c == num_columns for c in cols)


def _code_language(response: str, language: str) -> bool:
    labels = fence_labels(response)
    return bool(labels) and all(label == language.lower() for label in labels)


def _heading_count(response: str, num_headings: int) -> bool:
    return headings(response) == num_headings


def _no_first_person(response: str) -> bool:
    return not any(w.lower().replace("’", "'") in FIRST_PERSON for w in words(response))


def _first_word(response: str, first_word: str) -> bool:
    return globals()["first_word"](response) == first_word.lower()


def _max_sentence_words(response: str, max_words: int) -> bool:
    sents = sentences(response)
    return bool(sents) and all(len(words(s)) <= max_words for s in sents)


_MARKUP = re.compile(r"\*\*|__|`|^\s*\|.*\|\s*$|\[[^\]\n]+\]\([^)\n]+\)", re.MULTILINE)


def is_plain(response: str) -> bool:
    """No markdown: no headings, bullets, bold/italic markers, code, tables or links."""
    if _MARKUP.search(response):
        return False
    return not any(HEADING.match(line) or re.match(r"^\s*[-*+]\s+\S", line) or
                   re.search(r"(?<![\w*])\*[^*\s][^*\n]*\*(?![\w*])", line) for line in response.split("\n"))


def _plain_text(response: str) -> bool:
    return is_plain(response)


TLDR = re.compile(r"^TL;DR:\s+(.+)$")


def _tldr_first(response: str) -> bool:
    lines = response.strip().split("\n")
    m = TLDR.match(lines[0].strip()) if lines else None
    return bool(m) and len(words(m.group(1))) >= 3 and len(lines) > 2 and not lines[1].strip() and any(
        x.strip() for x in lines[2:])


def _ends_with_question(response: str) -> bool:
    return response.rstrip().endswith("?")


def _max_paragraph_words(response: str, max_words: int) -> bool:
    paras = text_paragraphs(response)
    return bool(paras) and all(len(words(p)) <= max_words for p in paras)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _quote_request_first(response: str, quoted: str) -> bool:
    lines = response.strip().split("\n")
    head = []
    for line in lines:
        if not line.startswith(">"):
            break
        head.append(line[1:].strip())
    rest = "\n".join(lines[len(head):]).strip()
    return bool(head) and _norm(" ".join(head)) == _norm(quoted) and bool(rest)


def _takeaways_end(response: str, heading: str, num_items: int) -> bool:
    """The reply ends with the heading line, then exactly ``num_items`` bullets, with content above."""
    lines = [x for x in response.strip().split("\n") if x.strip()]
    if len(lines) < num_items + 2:
        return False
    tail, head = lines[-num_items:], lines[-num_items - 1]
    if not all(BULLET.match(x) for x in tail):
        return False
    name = re.sub(r"^#{1,6}\s+", "", head.strip()).strip("*").strip().rstrip(":").strip()
    return name.lower() == heading.lower()


def _no_parentheses(response: str) -> bool:
    return "(" not in response and ")" not in response


def _max_lines(response: str, max_lines: int) -> bool:
    return 1 <= sum(1 for x in response.split("\n") if x.strip()) <= max_lines


def _final_paragraph_opener(response: str, opener: str) -> bool:
    paras = text_paragraphs(response)
    return len(paras) >= 2 and paras[-1].strip().lower().startswith(opener.lower())


def _max_chars(response: str, max_chars: int) -> bool:
    return 0 < len(response.strip()) <= max_chars


def _no_questions(response: str) -> bool:
    return "?" not in response and "？" not in response


OWN_CHECKERS: dict[str, Callable[..., bool]] = {
    f"{PREFIX}numbered_items": _numbered,
    f"{PREFIX}table_columns": _table,
    f"{PREFIX}code_language": _code_language,
    f"{PREFIX}heading_count": _heading_count,
    f"{PREFIX}no_first_person": _no_first_person,
    f"{PREFIX}opening_word": _first_word,
    f"{PREFIX}max_sentence_words": _max_sentence_words,
    f"{PREFIX}plain_text": _plain_text,
    f"{PREFIX}tldr_first": _tldr_first,
    f"{PREFIX}ends_with_question": _ends_with_question,
    f"{PREFIX}max_paragraph_words": _max_paragraph_words,
    f"{PREFIX}quote_request_first": _quote_request_first,
    f"{PREFIX}takeaways_end": _takeaways_end,
    f"{PREFIX}no_parentheses": _no_parentheses,
    f"{PREFIX}max_lines": _max_lines,
    f"{PREFIX}closing_paragraph": _final_paragraph_opener,
    f"{PREFIX}max_chars": _max_chars,
    f"{PREFIX}no_questions": _no_questions,
}
"""Instruction id -> checker ``(response, **kwargs) -> bool``."""


def check_own(instruction_id: str, kwargs: dict[str, Any], response: str) -> bool:
    """Strict verdict of one ``sftlab:*`` instruction on a response (an empty response never passes)."""
    if not response.strip():
        return False
    return bool(OWN_CHECKERS[instruction_id](response, **(kwargs or {})))
