"""Text helpers shared by the entries: words, paragraphs, code detection, language, and true thresholds.

Why: relabels and transforms must see a reply the way the IFEval checkers do (word tokens, blank-line
paragraphs that never split inside fenced code, langdetect with the scorer's seeding), and numeric
relabels need a (relation, threshold) pair the actual count provably satisfies. These pure helpers
hold no entry logic, so both ``relabel`` and ``transforms`` build on them.
"""

from __future__ import annotations

import random
import re

from sftlab.augment.entry import Skip

_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just let me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your yours
yourself yourselves one two may might must shall use used using like also well get make made many much
way even still yet however therefore thus etc please want need know think thing things something
""".split())

_WORD_RE = re.compile(r"[^\W\d_]+")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")


def words_of(text: str) -> list[str]:
    """Lowercased word tokens, punctuation ignored: the unit of decontamination n-grams."""
    return re.findall(r"\w+", text.lower())


def _content_words(text: str) -> list[str]:
    """Distinct lowercase letter-only words of 4+ letters that are not stopwords, in order of first use."""
    seen: dict[str, None] = {}
    for w in _WORD_RE.findall(text):
        lw = w.lower()
        if len(lw) >= 4 and lw not in _STOPWORDS and lw.isalpha():
            seen.setdefault(lw, None)
    return list(seen)


def has_code(text: str) -> bool:
    """Fenced or inline code: changing its case or punctuation would break it."""
    return "```" in text or "~~~" in text or bool(re.search(r"`[^`\n]+`", text))


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, never splitting inside a fenced code block."""
    out: list[str] = []
    cur: list[str] = []
    in_fence = False
    for line in text.strip().split("\n"):
        if _FENCE_RE.match(line):
            in_fence = not in_fence
        if not in_fence and not line.strip():
            if cur:
                out.append("\n".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


def _group(items: list[str], n: int) -> list[list[str]]:
    """``items`` split into ``n`` consecutive, non-empty, nearly equal groups."""
    size, extra = divmod(len(items), n)
    groups, i = [], 0
    for g in range(n):
        k = size + (1 if g < extra else 0)
        groups.append(items[i:i + k])
        i += k
    return groups


def _outside_code_lines(text: str) -> list[tuple[int, str, bool]]:
    """``(index, line, in_code)`` for every line; fence lines count as code."""
    rows, in_fence = [], False
    for i, line in enumerate(text.split("\n")):
        fence = bool(_FENCE_RE.match(line))
        if fence:
            in_fence = not in_fence
        rows.append((i, line, in_fence or fence))
    return rows


# --------------------------------------------------------------------------- numeric relabelling

_LESS, _AT_LEAST = "less than", "at least"


def _step_for(actual: int) -> int:
    """Round thresholds the way a person would ask: 'under 150 words', 'at least 20 sentences'."""
    if actual < 12:
        return 1
    if actual < 60:
        return 5
    if actual < 300:
        return 10
    if actual < 1000:
        return 50
    return 100


def true_threshold(rng: random.Random, actual: int, *, relation: str | None = None) -> tuple[str, int]:
    """A (relation, threshold) pair that ``actual`` satisfies under IFEval's semantics.

    ``less than N`` holds when ``actual < N``; ``at least N`` when ``actual >= N``. The threshold is
    a round number close to ``actual`` so the instruction is informative, not vacuous.
    """
    if relation is None:
        relation = _LESS if actual < 1 else rng.choice((_LESS, _AT_LEAST))
    step = _step_for(actual)
    slack = rng.choice((0, 0, 1))
    if relation == _LESS:  # "fewer than 1" would mean "none": say "fewer than 2" at least
        return relation, max(2, (actual // step + 1 + slack) * step)
    if actual < 1:
        raise Skip("count is zero")
    n = (actual // step - slack) * step
    if n < 1:
        n = (actual // step) * step
    return relation, n if n >= 1 else actual


def _relation_phrase(rng: random.Random, relation: str, n: int) -> str:
    if relation == _LESS:
        return rng.choice(("fewer than {n}", "less than {n}", "under {n}")).format(n=n)
    return rng.choice(("at least {n}", "no fewer than {n}", "a minimum of {n}")).format(n=n)


# --------------------------------------------------------------------------- language


def detect_language(text: str) -> str | None:
    """langdetect's verdict with the scorer's seeding, or None when it cannot tell."""
    import langdetect

    from sftlab.eval.ifeval import seeded_checkers

    with seeded_checkers(0):
        try:
            return langdetect.detect(text)
        except langdetect.LangDetectException:
            return None


def _language_names() -> dict[str, str]:
    from lm_eval.tasks.ifeval import instructions_util

    return dict(instructions_util.LANGUAGE_CODES)


_FILLER_RE = re.compile(r"(?:sure|certainly|of course|absolutely|great question|i'?d be (?:happy|glad) to|"
                        r"i would be (?:happy|glad) to)\b", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!:](?=\s)|\n")
_HERE_RE = re.compile(r"here(?:'s|\u2019s| is| are)\b", re.IGNORECASE)
_OPENER_MAX_CHARS = 200


def strip_opener(reply: str) -> str | None:
    """The reply without its chatty opening, or None when it has none (or nothing would be left).

    Why: ChatGPT-style replies open with "Sure, here's a rap that doesn't include 'Yo', 'check' and
    'peace':" or "Certainly! I'd be happy to help." A small model trained on them learns to open
    every answer that way, and the opening restates the request: with its words (against "do not
    say X"), its commas (against "no commas"), its capital letters (against "all lowercase"), and
    before anything else (against "repeat the request first"). Removed here: a first sentence that
    starts with a filler word and is short ("Sure!"), announces what follows ("here", "happy to",
    "help", or ends with a colon); then a first line "Here's ...:" that introduces the content.
    Nothing else is touched, so an answer that opens "Sure, the capital is Paris." keeps it.
    """
    text = reply.lstrip()
    changed = False
    for _ in range(3):  # "Certainly! I'd be happy to help. Here is ...:" is three openings in a row
        end = _SENTENCE_END_RE.search(text) if _FILLER_RE.match(text) else None
        if end is None or end.start() >= _OPENER_MAX_CHARS:
            break
        first = text[: end.end()]
        if not (len(first.split()) <= 3 or first.rstrip().endswith(":") or re.search(
                r"\b(?:here|happy to|glad to|help)\b", first, re.IGNORECASE)):
            break
        text, changed = text[end.end():].lstrip(), True
    if _HERE_RE.match(text):
        line_end = text.find("\n")
        first = text if line_end < 0 else text[:line_end]
        if first.rstrip().endswith(":") and len(first) < _OPENER_MAX_CHARS and line_end >= 0:
            text, changed = text[line_end:].lstrip(), True
    if not changed or len(text.strip()) < 20:
        return None
    return text
