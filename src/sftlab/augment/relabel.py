"""Relabelling in hindsight: entries that keep the reply and read the instruction's parameters off it.

Why: keywords that occur, words that do not, word/sentence/letter/capital-word counts with a true
relation, and the detected language are all measured with the checkers' own counters, so the
instruction holds by construction and the reply stays exactly as a person wrote it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from sftlab.augment.binding import BINDING, bound
from sftlab.augment.entry import Job, Result, Skip
from sftlab.augment.text import _content_words, _language_names, detect_language, true_threshold

_FILLER_WORDS = ("basically", "actually", "really", "literally", "obviously", "honestly", "simply",
                 "definitely", "essentially", "totally", "clearly", "extremely")
"""Words a reply rarely needs; forbidding ones it does not use is a natural, checkable style constraint."""


def _existence(job: Job) -> Result:
    # binding: keywords the reply itself uses, not ones only a title or the repeated request adds
    cands = _content_words(job.original if job.on(BINDING) else job.reply)
    if not cands:
        raise Skip("no content word in the reply")
    topical = [w for w in cands if w in set(_content_words(job.prompt))]
    pool = topical if topical and job.rng.random() < 0.7 else cands
    k = min(len(pool), job.rng.choice((1, 2, 2, 3)))
    return job.reply, {"keywords": sorted(job.rng.sample(pool[:40], min(k, len(pool[:40]))))}


def _frequency(job: Job) -> Result:
    if job.on(BINDING):
        return _frequency_binding(job)
    cands = _content_words(job.reply)[:40]
    if not cands:
        raise Skip("no content word in the reply")
    word = job.rng.choice(cands)
    actual = len(re.findall(word, job.reply, flags=re.IGNORECASE))  # the checker's own count
    relation, n = true_threshold(job.rng, actual)
    return job.reply, {"keyword": word, "frequency": n, "relation": relation}


def _forbidden(job: Job) -> Result:
    def absent(w: str) -> bool:
        return not re.search(r"\b" + re.escape(w) + r"\b", job.reply, flags=re.IGNORECASE)

    topical = [w for w in _content_words(job.prompt) if absent(w)][:20]
    filler = [w for w in _FILLER_WORDS if absent(w)]
    k = job.rng.choice((1, 2, 2, 3))
    picked = job.rng.sample(topical, min(len(topical), max(1, k - 1))) if topical else []
    picked += job.rng.sample(filler, min(len(filler), k - len(picked)))
    if not picked:
        raise Skip("every candidate word occurs in the reply")
    return job.reply, {"forbidden_words": sorted(set(picked))}


def _frequency_binding(job: Job) -> Result:
    """A word the reply uses at least twice, with a threshold close to its count."""
    def count(w: str) -> Callable[[str], int]:
        return lambda text: len(re.findall(w, text, flags=re.IGNORECASE))

    cands = [w for w in _content_words(job.original)[:60] if count(w)(job.original) >= 2]
    if not cands:
        raise Skip("no content word used twice")
    word = job.rng.choice(cands)
    relation, n = bound(job, count(word))
    return job.reply, {"keyword": word, "frequency": n, "relation": relation}


def _letter_frequency(job: Job) -> Result:
    if job.on(BINDING):
        letter = job.rng.choice("abcdefghijklmnopqrstuvwxyz")
        relation, n = bound(job, lambda text: Counter(text.lower())[letter])
        return job.reply, {"letter": letter, "let_frequency": n, "let_relation": relation}
    counts = Counter(job.reply.lower())
    letter = job.rng.choice("abcdefghijklmnopqrstuvwxyz")
    relation, n = true_threshold(job.rng, counts[letter])
    return job.reply, {"letter": letter, "let_frequency": n, "let_relation": relation}


def _sentences(job: Job) -> Result:
    from lm_eval.tasks.ifeval import instructions_util

    if job.on(BINDING):
        relation, n = bound(job, instructions_util.count_sentences)
        return job.reply, {"num_sentences": n, "relation": relation}
    relation, n = true_threshold(job.rng, instructions_util.count_sentences(job.reply))
    return job.reply, {"num_sentences": n, "relation": relation}


def _words(job: Job) -> Result:
    from lm_eval.tasks.ifeval import instructions_util

    if job.on(BINDING):
        relation, n = bound(job, instructions_util.count_words)
        return job.reply, {"num_words": n, "relation": relation}
    relation, n = true_threshold(job.rng, instructions_util.count_words(job.reply))
    return job.reply, {"num_words": n, "relation": relation}


def _capital_words(job: Job) -> Result:
    from lm_eval.tasks.ifeval import instructions_util

    def count(text: str) -> int:
        return sum(w.isupper() for w in instructions_util.nltk.word_tokenize(text))

    if job.on(BINDING):
        relation, n = bound(job, count)
        return job.reply, {"capital_frequency": n, "capital_relation": relation}
    actual = count(job.reply)
    relation, n = true_threshold(job.rng, actual)
    return job.reply, {"capital_frequency": n, "capital_relation": relation}


def _language(job: Job) -> Result:
    lang = detect_language(job.reply)
    if lang not in _language_names():
        raise Skip("language not in IFEval's list")
    return job.reply, {"language": lang}
