"""Verifiable instruction augmentation: add IFEval-style constraints to real prompts, with replies that satisfy them.

Why: fine-tuning a small instruct model on plain ShareGPT rounds makes IFEval *worse*; public recipes
that lift it (Tulu 3's verifiable constraints, SmolTalk's smol-constraints, AutoIF) add checkable format
instructions to ordinary prompts and train on replies that provably follow them. sftlab already holds
the verifiers (the IFEval checkers it scores with), so it can build such data offline, on a CPU, with
no model in the loop.

How: for each chosen conversation, the last user turn gains one to three instructions (IFEval's own
instruction ids and kwargs) and the final assistant reply is made to satisfy them, in one of two
exact ways:

* **relabelling in hindsight** (``relabel`` entries): the reply is left alone and the instruction's
  parameters are read off it with the checkers' own counters (word and sentence counts with a true
  relation, keywords that occur, words that do not, letter counts, the detected language, ...);
* **deterministic transforms** (``transform`` entries): the reply is rewritten mechanically
  (lowercase, no commas, quotation marks, a postscript, ``<<title>>``, JSON, ``SECTION X`` blocks,
  bullets, ``***`` paragraphs, ...).

Transforms run in a fixed ``stage`` order chosen so that later steps keep earlier instructions
satisfied (e.g. the ending phrase after the postscript, case changes after both, quotation marks
last), relabels run after every transform, and pairs that IFEval itself never combines
(``lm_eval``'s ``INSTRUCTION_CONFLICTS``, plus a few this module's transforms cannot serve together)
are never drawn together. Whatever the construction, every emitted example is re-checked with
:func:`sftlab.ifeval.check_instruction`, the very function ``sftlab eval`` scores with (seeded
checkers, kwargs as given), in strict mode; an example that fails is dropped and counted, so
nothing unverified is ever written.

Decontamination: a conversation whose user (or system) text shares an ``ngram``-word sequence
(default 8, as Tulu 3) with any IFEval prompt is dropped, and so is an augmented prompt whose added
wording would; words are lowercased and punctuation is ignored.

Everything is a pure function of (conversations, config): each conversation draws from its own
``random.Random`` seeded by ``(seed, index)``, so the same seed gives byte-identical output.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sftlab.errors import ConfigError

AUGMENT_VERSION = 1
"""Bumped whenever the catalogue or the construction changes, so cached augmented data is rebuilt."""

MAX_ATTEMPTS = 3
"""Instruction sets tried per conversation before it is kept plain (each try is counted per type)."""

MAX_REPEAT_PROMPT_CHARS = 400
"""Longer prompts are not repeated back: a reply that starts by copying a page of text teaches little."""

# Why an instruction was not emitted (stats["types"][id]["dropped"] keys).
DROP_EMPTY = "empty reply"
DROP_EMPTY_PROMPT = "empty prompt"
DROP_FAILED_CHECK = "failed the IFEval checker"
DROP_PARTNER = "another instruction of the example failed"
DROP_OVERLAP = "instruction wording overlaps an IFEval prompt"

# --------------------------------------------------------------------------- small text helpers

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

_FILLER_WORDS = ("basically", "actually", "really", "literally", "obviously", "honestly", "simply",
                 "definitely", "essentially", "totally", "clearly", "extremely")
"""Words a reply rarely needs; forbidding ones it does not use is a natural, checkable style constraint."""

_WORD_RE = re.compile(r"[^\W\d_]+")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")


class Skip(Exception):
    """An instruction cannot be satisfied on this reply; ``reason`` goes to the statistics."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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


def _quoted_list(words: list[str], last: str) -> str:
    q = [f'"{w}"' for w in words]
    if len(q) == 1:
        return f"the word {q[0]}"
    return "the words " + ", ".join(q[:-1]) + f" {last} " + q[-1]


def _plural(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")

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


# --------------------------------------------------------------------------- the catalogue


@dataclass
class Job:
    """What an entry sees: the original request, the reply so far, the other chosen ids, a seeded rng."""

    prompt: str
    reply: str
    ids: tuple[str, ...]
    rng: random.Random


Result = tuple[str, dict[str, Any]]
"""(new reply, IFEval kwargs) returned by every entry's function."""


@dataclass(frozen=True)
class Entry:
    """One supported IFEval instruction id.

    ``fn`` returns the (possibly rewritten) reply and the kwargs, or raises :class:`Skip`.
    ``phrasings`` are ``str.format`` templates over ``fields(kwargs, rng)`` (default: the kwargs).
    ``stage`` orders application; relabels (stage 100) run after every transform.
    """

    id: str
    kind: str  # "relabel" or "transform"
    stage: int
    fn: Callable[[Job], Result]
    phrasings: tuple[str, ...]
    fields: Callable[[dict[str, Any], random.Random], dict[str, Any]] | None = None


# ---- relabel: keywords and counts


def _existence(job: Job) -> Result:
    cands = _content_words(job.reply)
    if not cands:
        raise Skip("no content word in the reply")
    topical = [w for w in cands if w in set(_content_words(job.prompt))]
    pool = topical if topical and job.rng.random() < 0.7 else cands
    k = min(len(pool), job.rng.choice((1, 2, 2, 3)))
    return job.reply, {"keywords": sorted(job.rng.sample(pool[:40], min(k, len(pool[:40]))))}


def _frequency(job: Job) -> Result:
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


def _letter_frequency(job: Job) -> Result:
    counts = Counter(job.reply.lower())
    letter = job.rng.choice("abcdefghijklmnopqrstuvwxyz")
    relation, n = true_threshold(job.rng, counts[letter])
    return job.reply, {"letter": letter, "let_frequency": n, "let_relation": relation}


def _sentences(job: Job) -> Result:
    from lm_eval.tasks.ifeval import instructions_util

    relation, n = true_threshold(job.rng, instructions_util.count_sentences(job.reply))
    return job.reply, {"num_sentences": n, "relation": relation}


def _words(job: Job) -> Result:
    from lm_eval.tasks.ifeval import instructions_util

    relation, n = true_threshold(job.rng, instructions_util.count_words(job.reply))
    return job.reply, {"num_words": n, "relation": relation}


def _capital_words(job: Job) -> Result:
    from lm_eval.tasks.ifeval import instructions_util

    actual = sum(w.isupper() for w in instructions_util.nltk.word_tokenize(job.reply))
    relation, n = true_threshold(job.rng, actual)
    return job.reply, {"capital_frequency": n, "capital_relation": relation}


def detect_language(text: str) -> str | None:
    """langdetect's verdict with the scorer's seeding, or None when it cannot tell."""
    import langdetect

    from sftlab.ifeval import seeded_checkers

    with seeded_checkers(0):
        try:
            return langdetect.detect(text)
        except langdetect.LangDetectException:
            return None


def _language_names() -> dict[str, str]:
    from lm_eval.tasks.ifeval import instructions_util

    return dict(instructions_util.LANGUAGE_CODES)


def _language(job: Job) -> Result:
    lang = detect_language(job.reply)
    if lang not in _language_names():
        raise Skip("language not in IFEval's list")
    return job.reply, {"language": lang}


# ---- transforms: case and punctuation


def _english_text(job: Job) -> None:
    if has_code(job.reply):
        raise Skip("reply has code")
    if detect_language(job.reply) != "en":
        raise Skip("reply is not English")


def _recased(job: Job, text: str) -> Result:
    _english_text(job)
    if detect_language(text) != "en":  # langdetect sees a recased text differently now and then
        raise Skip("recased text not detected as English")
    return text, {}


def _lowercase(job: Job) -> Result:
    return _recased(job, job.reply.lower())


def _uppercase(job: Job) -> Result:
    return _recased(job, job.reply.upper())


def _no_comma(job: Job) -> Result:
    if has_code(job.reply) and "," in job.reply:
        raise Skip("commas in code")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", job.reply)  # 1,000 -> 1000
    text = re.sub(r",(?=\s)", "", text)  # "Yes, it" -> "Yes it"
    text = text.replace(",", " ")  # "a,b" -> "a b"
    return text, {}


def _quotation(job: Job) -> Result:
    text = job.reply.strip()
    if len(text) > 1 and text[0] == '"' and text[-1] == '"':
        return text, {}
    return f'"{text}"', {}


# ---- transforms: things added at the start or the end

_END_PHRASES = (
    "Do you have any other questions?",
    "Let me know if you have any other questions.",
    "I hope this helps.",
    "Feel free to ask if anything is unclear.",
    "That is all for now.",
    "Good luck!",
    "Happy to help further if needed.",
)
_POSTSCRIPTS = (
    "If any part of this is unclear, tell me which one and I will go into more detail.",
    "I can also give a shorter or a longer version of this answer if that would help.",
    "Tell me more about your situation and I can tailor this further.",
    "Double-check the details against your own needs before relying on them.",
    "I am happy to walk through any step again.",
)


def _end_phrase(job: Job) -> Result:
    phrase = job.rng.choice(_END_PHRASES)
    body = job.reply.rstrip()
    if body.lower().endswith(phrase.lower()):
        return body, {"end_phrase": phrase}
    return f"{body}\n\n{phrase}", {"end_phrase": phrase}


def _postscript(job: Job) -> Result:
    marker = job.rng.choice(("P.S.", "P.P.S"))
    written = "P.P.S." if marker == "P.P.S" else marker
    return f"{job.reply.rstrip()}\n\n{written} {job.rng.choice(_POSTSCRIPTS)}", {"postscript_marker": marker}


def title_for(prompt: str, reply: str, *, keep_bold: bool = False) -> tuple[str, str]:
    """A title and the reply without the line it came from (if any).

    In order: a ``Title:`` line, a leading markdown heading or bold line, else the request's first
    most used content words (those of the request first) in title case.
    """
    lines = reply.strip().split("\n")
    first = lines[0].strip() if lines else ""
    rest = "\n".join(lines[1:]).lstrip("\n")
    patterns = [r"^(?:\*\*)?title:?(?:\*\*)?:?\s*(.+?)(?:\*\*)?$", r"^#{1,6}\s+(.+?)#*$"]
    if not keep_bold:  # a bold line may be one of the highlights another instruction counts on
        patterns.append(r"^\*\*([^*]{3,80})\*\*$")
    for pattern in patterns:
        m = re.match(pattern, first, flags=re.IGNORECASE)
        if m and rest.strip():
            text = m.group(1).strip().strip('"*').strip().rstrip(":").strip()
            if 0 < len(text) <= 80 and "<" not in text and ">" not in text:
                return text, rest
    counts = Counter(w.lower() for w in _WORD_RE.findall(reply))
    in_reply = [w for w in _content_words(prompt) if counts[w]]
    pool = in_reply if len(in_reply) >= 2 else _content_words(reply)
    words = sorted(pool, key=lambda w: -counts[w])[:3]  # stable: ties keep first-use order
    if not words:
        raise Skip("no words for a title")
    as_written = {}  # keep the reply's own spelling of each word ("CascadeType", "JSON")
    for w in _WORD_RE.findall(reply):
        as_written.setdefault(w.lower(), w)
    shown = [as_written.get(w, w) for w in words]
    return " ".join(w[:1].upper() + w[1:] for w in shown), reply.strip()


def _title(job: Job) -> Result:
    title, body = title_for(job.prompt, job.reply,
                            keep_bold="detectable_format:number_highlighted_sections" in job.ids)
    return f"<<{title}>>\n\n{body}", {}


def _repeat_prompt(job: Job) -> Result:
    request = job.prompt.strip()
    if not request:
        raise Skip("empty prompt")
    if len(request) > MAX_REPEAT_PROMPT_CHARS:
        raise Skip("prompt too long to repeat")
    if "punctuation:no_comma" in job.ids and "," in request:
        raise Skip("prompt has commas (with no_comma)")
    return f"{request}\n\n{job.reply.strip()}", {"prompt_to_repeat": request}


# ---- transforms: structure


def _two_responses(job: Job) -> Result:
    if "******" in job.reply:
        raise Skip("reply already holds ******")
    # The short answer: the opening paragraph, or the first two sentences of a one-paragraph reply,
    # but never a lead-in ("Here is an example:") that promises what only the full answer holds.
    paras = paragraphs(job.reply)
    if has_code(job.reply.split("\n\n")[0]):
        raise Skip("reply too short for two versions")
    if len(paras) > 1:
        short = paras[0]
    else:
        from lm_eval.tasks.ifeval import instructions_util

        sentences = instructions_util.split_into_sentences(paras[0]) if paras and "\n" not in paras[0] else []
        short = " ".join(sentences[:2]) if len(sentences) > 2 else ""
    if len(short.split()) < 5 or short.rstrip().endswith(":") or short.strip() == job.reply.strip():
        raise Skip("reply too short for two versions")
    return f"{short.strip()}\n\n******\n\n{job.reply.strip()}", {}


def _json(job: Job) -> Result:
    paras = paragraphs(job.reply)
    key = job.rng.choice(("answer", "response"))
    obj: dict[str, Any] = {key: job.reply.strip()}
    if len(paras) > 1 and not has_code(job.reply) and job.rng.random() < 0.5:
        obj = {"paragraphs": paras}
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    if job.rng.random() < 0.5:
        text = f"```json\n{text}\n```"
    return text, {}


def _constrained(job: Job) -> Result:
    m = re.match(r"\s*(yes|no)\b[\s,.!:;\-]*", job.reply, flags=re.IGNORECASE)
    if not m:
        raise Skip("reply does not open with yes or no")
    rest = job.reply[m.end():].strip()
    head = f"My answer is {m.group(1).lower()}."
    return (f"{head} {rest[:1].upper()}{rest[1:]}" if rest else head), {}


_BULLET_LINE = re.compile(r"^\s*[-*]\s+\S")
_CHECKER_BULLET = re.compile(r"^\s*(\*[^*]|-)")
_NUMBERED = re.compile(r"^(\s*)\d{1,2}[.)]\s+(?=\S)")


def _bullets(job: Job) -> Result:
    rows = _outside_code_lines(job.reply)
    counted = [(i, line, code) for i, line, code in rows if _CHECKER_BULLET.match(line)]
    if any(code or not _BULLET_LINE.match(line) for _, line, code in counted):
        raise Skip("dash or star lines that are not list items")
    if counted:  # relabel: the existing list items, counted exactly as the checker does
        return job.reply, {"num_bullets": len(counted)}
    lines = job.reply.split("\n")
    numbered = [i for i, line, code in rows if not code and _NUMBERED.match(line)]
    if len(numbered) >= 2:
        for i in numbered:
            lines[i] = _NUMBERED.sub(r"\1* ", lines[i], count=1)
        return "\n".join(lines), {"num_bullets": len(numbered)}
    paras = paragraphs(job.reply)
    if has_code(job.reply) or not 2 <= len(paras) <= 8 or any(p.lstrip().startswith(("#", "|", ">")) for p in paras):
        raise Skip("no list to count and no paragraphs to bullet")
    intro = [paras[0]] if paras[0].rstrip().endswith(":") and len(paras) > 2 else []
    items = paras[len(intro):]
    return "\n\n".join(intro + ["* " + p.replace("\n", " ") for p in items]), {"num_bullets": len(items)}


def _count_highlights(text: str) -> int:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h[2:-2].strip()]
    return len(single) + len(double)


_LINE_PREFIX = re.compile(r"^(\s*(?:[-*+]\s+|\d{1,2}[.)]\s+|#{1,6}\s+)?)(.*)$")


def _highlights(job: Job) -> Result:
    have = _count_highlights(job.reply)
    if have >= 1:  # relabel: markdown emphasis already there
        return job.reply, {"num_highlights": job.rng.randint(max(1, have // 2), have)}
    # What a person would emphasise: a list item's or a line's label ("Cost: ..."), else a short
    # opening sentence of a line. Labels first, so a list gets its labels bolded rather than prose.
    labels, sentences = [], []
    for i, line, code in _outside_code_lines(job.reply):
        m = _LINE_PREFIX.match(line)
        body = m.group(2) if m else ""
        if code or "*" in line or "`" in line or len(body.split()) < 2:
            continue
        label = re.match(r"([^.!?:]{2,60}):\s", body)
        if label and len(label.group(1).split()) <= 6:
            labels.append((i, m.group(1), label.group(1), body[len(label.group(1)):]))
            continue
        sentence = re.match(r"[^.!?:]*[.!?]?", body).group(0).rstrip()
        if 2 <= len(sentence.split()) <= 15:
            sentences.append((i, m.group(1), sentence, body[len(sentence):]))
    cands = labels if len(labels) >= 2 else labels + sentences
    lines = job.reply.split("\n")
    want = job.rng.choice((1, 2, 2, 3, 3, 4))
    if len(cands) < want:  # else key terms: the request's words, bolded where the reply first uses them
        taken = {c[0] for c in cands}
        for word in _content_words(job.prompt):
            for i, line, code in _outside_code_lines(job.reply):
                m = re.search(r"\b" + re.escape(word) + r"\b", line, flags=re.IGNORECASE)
                if m and i not in taken and not code and "*" not in line and "`" not in line and m.start() > 0:
                    cands.append((i, line[:m.start()], m.group(0), line[m.end():]))
                    taken.add(i)
                    break
            if len(cands) >= want:
                break
    if not cands:
        raise Skip("no line to highlight")
    n = min(len(cands), want)
    for i, prefix, span, tail in sorted(job.rng.sample(cands, n)):
        lines[i] = f"{prefix}**{span}**{tail}"  # bold: never mistaken for a '*' bullet
    return "\n".join(lines), {"num_highlights": n}


def _sections(job: Job) -> Result:
    paras = paragraphs(job.reply)
    if len(paras) < 2:
        raise Skip("fewer than two paragraphs")
    # An all-caps reply turns 'Section' into 'SECTION', which the checker then no longer counts.
    splitter = "SECTION" if "change_case:english_capital" in job.ids else job.rng.choice(("SECTION", "Section"))
    if re.search(splitter + r"\s?\d", job.reply):
        raise Skip("reply already numbers sections")
    n = job.rng.randint(2, min(5, len(paras)))
    blocks = [f"{splitter} {k}\n" + "\n\n".join(g) for k, g in enumerate(_group(paras, n), 1)]
    return "\n\n".join(blocks), {"section_spliter": splitter, "num_sections": n}


def _paragraph_dividers(job: Job) -> Result:
    if "***" in job.reply:
        raise Skip("reply already holds ***")
    paras = paragraphs(job.reply)
    if len(paras) < 2:
        raise Skip("fewer than two paragraphs")
    n = job.rng.randint(2, min(6, len(paras)))
    return "\n\n***\n\n".join("\n\n".join(g) for g in _group(paras, n)), {"num_paragraphs": n}


def _first_word_of(paragraph: str) -> str:
    """The nth-paragraph checker's notion of a paragraph's first word (quotes stripped, cut at punctuation)."""
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"') if paragraph.split() else ""
    return re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()


def _nth_paragraph(job: Job) -> Result:
    if "```" in job.reply or "~~~" in job.reply:
        raise Skip("reply has code")  # blank lines inside code would count as paragraph breaks
    text = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)*", "\n\n", job.reply.strip())  # exactly one blank line between
    paras = text.split("\n\n")
    if not 2 <= len(paras) <= 10:
        raise Skip("not 2 to 10 paragraphs")
    cands = [k for k, p in enumerate(paras, 1) if (w := _first_word_of(p)).isalpha() and len(w) > 1]
    if not cands:
        raise Skip("no paragraph starts with a word")
    telling = [k for k in cands if _first_word_of(paras[k - 1]) not in _STOPWORDS]
    nth = job.rng.choice(telling or cands)
    return text, {"num_paragraphs": len(paras), "nth_paragraph": nth, "first_word": _first_word_of(paras[nth - 1])}


# "[Your Name]", "[company]", "[date of birth]": capitalised or lowercase words, not "[SimpleJob]"
# (code), "[1]" (a citation) or "[text](url)" (a link).
_NATURAL_PLACEHOLDER = re.compile(r"\[(?:[A-Z][a-z]+|[a-z]+)(?:[ /-][A-Za-z'’]+){0,5}\](?!\()")
_SUBSTITUTIONS = (
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "[email address]"),
    (re.compile(r"https?://[^\s)>\]]+"), "[link]"),
    (re.compile(r"(?<![\w\[])\+?\d[\d -]{7,}\d\b"), "[phone number]"),
    (re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)"
                r" \d{1,2}(?:st|nd|rd|th)?,? \d{4}\b"), "[date]"),
    (re.compile(r"^(Dear|Hi|Hello) [A-Z][a-z]+(?: [A-Z][a-z]+)?,", flags=re.MULTILINE), r"\1 [name],"),
)


def _placeholders(job: Job) -> Result:
    rows = _outside_code_lines(job.reply)
    natural = sum(len(_NATURAL_PLACEHOLDER.findall(re.sub(r"`[^`]*`", "", line))) for _, line, code in rows
                  if not code)
    if natural >= 1:  # relabel: a template reply that already has slots
        return job.reply, {"num_placeholders": job.rng.randint(1, min(natural, 8))}
    if has_code(job.reply):
        raise Skip("no placeholder slot")
    text, made = job.reply, 0
    for pattern, slot in _SUBSTITUTIONS:
        text, k = pattern.subn(slot, text)
        made += k
    if not made:
        raise Skip("no placeholder slot")
    return text, {"num_placeholders": job.rng.randint(1, min(made, 8))}


# ---- the phrasing fields


def _f_words(last: str) -> Callable[[dict[str, Any], random.Random], dict[str, Any]]:
    def fields(kw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        key = "keywords" if "keywords" in kw else "forbidden_words"
        return {"words": _quoted_list(kw[key], last)}
    return fields


def _f_relation(num: str, rel: str, noun: str) -> Callable[[dict[str, Any], random.Random], dict[str, Any]]:
    """``{rel_n}``: relation, number and ``noun`` in the right number ("at least 1 time", "under 5 times")."""
    def fields(kw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        n = kw[num]
        return {**kw, "rel_n": f"{_relation_phrase(rng, kw[rel], n)} {noun if n == 1 else noun + 's'}"}
    return fields


def _f_language(kw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {"language": _language_names()[kw["language"]]}


def _f_count(key: str, noun: str) -> Callable[[dict[str, Any], random.Random], dict[str, Any]]:
    def fields(kw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        return {**kw, "n_items": _plural(kw[key], noun)}
    return fields


def _f_nth(kw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**kw, "n_items": _plural(kw["num_paragraphs"], "paragraph"), "nth": _ORDINALS[kw["nth_paragraph"] - 1]}


CATALOGUE: dict[str, Entry] = {e.id: e for e in (
    # -- relabelled in hindsight: the reply is kept, the parameters are read off it
    Entry("keywords:existence", "relabel", 100, _existence, (
        "Make sure your answer mentions {words}.",
        "Work {words} into your reply.",
        "Somewhere in what you write, use {words}.",
        "Be sure {words} appear in the text.",
    ), _f_words("and")),
    Entry("keywords:frequency", "relabel", 100, _frequency, (
        'Use the word "{keyword}" {rel_n}.',
        'The word "{keyword}" should show up {rel_n} in your reply.',
        'Mention "{keyword}" {rel_n} in total.',
    ), _f_relation("frequency", "relation", "time")),
    Entry("keywords:forbidden_words", "relabel", 100, _forbidden, (
        "Do not use {words} anywhere in your reply.",
        "Avoid {words} entirely.",
        "Write your answer without ever using {words}.",
    ), _f_words("or")),
    Entry("keywords:letter_frequency", "relabel", 100, _letter_frequency, (
        'The letter "{letter}" should occur {rel_n} in your reply.',
        "Use the letter {letter} {rel_n} in total.",
        'Mind your letters: "{letter}" has to appear {rel_n}.',
    ), _f_relation("let_frequency", "let_relation", "time")),
    Entry("language:response_language", "relabel", 100, _language, (
        "Reply only in {language}.",
        "Write the whole answer in {language} and in no other language.",
        "Use {language} for every word of your answer.",
    ), _f_language),
    Entry("length_constraints:number_sentences", "relabel", 100, _sentences, (
        "Write {rel_n} in total.",
        "Your reply should be made up of {rel_n}.",
        "Use {rel_n} for the whole answer.",
    ), _f_relation("num_sentences", "relation", "sentence")),
    Entry("length_constraints:number_words", "relabel", 100, _words, (
        "Answer in {rel_n}.",
        "Use {rel_n} in your reply.",
        "The length of your reply should be {rel_n}.",
    ), _f_relation("num_words", "relation", "word")),
    Entry("change_case:capital_word_frequency", "relabel", 100, _capital_words, (
        "Use {rel_n} in your reply.",
        "Your reply should hold {rel_n}.",
        "Include {rel_n} (written in ALL CAPS).",
    ), _f_relation("capital_frequency", "capital_relation", "fully capitalized word")),
    Entry("length_constraints:nth_paragraph_first_word", "relabel", 95, _nth_paragraph, (
        'Write {n_items} separated by one blank line; the {nth} one has to begin with the word "{first_word}".',
        'Use {n_items}, each separated from the next by an empty line, and open paragraph {nth_paragraph} '
        'with "{first_word}".',
        'Structure the answer as {n_items} divided by blank lines, where the {nth} paragraph starts with '
        '"{first_word}".',
    ), _f_nth),
    # -- deterministic transforms of the reply, in stage order
    Entry("detectable_format:constrained_response", "transform", 10, _constrained, (
        'Open your reply with "My answer is" and then yes, no or maybe, followed by a period.',
        'Begin with the sentence "My answer is ___." filled in with yes, no or maybe.',
        'Give your verdict first: write "My answer is" plus yes, no or maybe, ending with a full stop.',
    )),
    Entry("combination:two_responses", "transform", 10, _two_responses, (
        "Give two different answers, a short one and a detailed one, separated by six asterisks: ******.",
        "Write two distinct responses and put ****** between them.",
        "Provide two versions of your answer, a brief one first and then the full one, divided by ******.",
    )),
    Entry("detectable_format:json_format", "transform", 10, _json, (
        "Format your entire output as JSON.",
        "Return your reply as valid JSON; markdown code fences around it are fine.",
        "Wrap the whole reply in a JSON object.",
    )),
    Entry("detectable_content:number_placeholders", "transform", 20, _placeholders, (
        "Include at least {n_items} in square brackets, such as [name].",
        "Leave at least {n_items} written in square brackets, like [date].",
        "Your reply needs at least {n_items} in square brackets, for instance [city].",
    ), _f_count("num_placeholders", "placeholder")),
    Entry("detectable_format:number_bullet_lists", "transform", 30, _bullets, (
        "Use exactly {n_items}, written as markdown bullets like '* point'.",
        "Include exactly {n_items} in markdown (* or -) in your reply.",
        "Structure the answer around exactly {n_items} using markdown.",
    ), _f_count("num_bullets", "bullet point")),
    Entry("detectable_format:number_highlighted_sections", "transform", 40, _highlights, (
        "Highlight at least {n_items} of your answer with markdown emphasis, e.g. *key idea*.",
        "Use asterisks to make at least {n_items} stand out.",
        "Mark at least {n_items} with markdown highlighting such as *this*.",
    ), _f_count("num_highlights", "part")),
    Entry("detectable_format:multiple_sections", "transform", 50, _sections, (
        "Split your answer into {num_sections} sections, starting each with '{section_spliter} X' where X "
        "is its number.",
        "Organize the reply in {num_sections} parts labelled {section_spliter} 1, {section_spliter} 2 and so on.",
        "Divide what you write into {num_sections} numbered sections, each headed '{section_spliter}' plus "
        "its number.",
    )),
    Entry("length_constraints:number_paragraphs", "transform", 50, _paragraph_dividers, (
        "Write {n_items} and separate them with the markdown divider ***.",
        "Your reply needs {n_items}, with *** between consecutive ones.",
        "Put the markdown divider *** between paragraphs; there must be {n_items} in all.",
    ), _f_count("num_paragraphs", "paragraph")),
    Entry("detectable_format:title", "transform", 60, _title, (
        "Give your reply a title in double angular brackets, like <<my title>>.",
        "Start with a title wrapped in << and >>.",
        "Include a title enclosed in double angle brackets, for example <<A Good Title>>.",
    )),
    Entry("detectable_content:postscript", "transform", 65, _postscript, (
        'Add a postscript at the end that starts with "{postscript_marker}".',
        'Close with a note beginning with "{postscript_marker}".',
        'After your answer, include a postscript marked "{postscript_marker}".',
    )),
    Entry("startend:end_checker", "transform", 70, _end_phrase, (
        'Close your reply with the words "{end_phrase}" and nothing after them.',
        'The last words of your answer must be "{end_phrase}"',
        'Finish with "{end_phrase}" and add nothing after that.',
    )),
    Entry("change_case:english_lowercase", "transform", 75, _lowercase, (
        "Write your whole reply in English using only lowercase letters.",
        "Reply in English, and do not use a single capital letter.",
        "Everything you write must be lowercase English text.",
    )),
    Entry("change_case:english_capital", "transform", 75, _uppercase, (
        "Write your whole reply in English, in capital letters only.",
        "Respond in English and put every letter in uppercase.",
        "Your answer must be in English and entirely in CAPITALS.",
    )),
    Entry("punctuation:no_comma", "transform", 78, _no_comma, (
        "Write without a single comma.",
        "Commas are not allowed anywhere in your answer.",
        "Avoid commas completely.",
        "Leave out every comma.",
    )),
    Entry("combination:repeat_prompt", "transform", 80, _repeat_prompt, (
        "Before you answer, repeat my request above word for word (without these instructions), then "
        "give your answer.",
        "Begin by copying my request exactly as written, leaving out these instructions, and then respond.",
        "Restate the request verbatim first, not including the instructions after it, and only then answer.",
    )),
    Entry("startend:quotation", "transform", 85, _quotation, (
        "Put double quotation marks around your entire reply.",
        "Enclose the whole answer in double quotes.",
        "Start and end your reply with a double quotation mark.",
    )),
)}

LEFT_OUT: dict[str, str] = {}
"""IFEval instruction ids the catalogue does not cover, with the reason (none at present)."""

EXTRA_CONFLICTS: tuple[tuple[str, str], ...] = (
    # 'SECTION'/'Section' headers can never be all lowercase.
    ("detectable_format:multiple_sections", "change_case:english_lowercase"),
    # Both regroup the same paragraphs.
    ("detectable_format:multiple_sections", "length_constraints:number_paragraphs"),
    ("detectable_format:multiple_sections", "length_constraints:nth_paragraph_first_word"),
    # An opening quotation mark glued to a first '* item' line hides that bullet from the checker.
    ("startend:quotation", "detectable_format:number_bullet_lists"),
    # Bulleting paragraphs and then dividing them with *** leaves nothing natural.
    ("detectable_format:number_bullet_lists", "length_constraints:number_paragraphs"),
)


def conflicts() -> dict[str, set[str]]:
    """Symmetric conflict sets: lm_eval's ``INSTRUCTION_CONFLICTS`` (not mutated) plus :data:`EXTRA_CONFLICTS`."""
    from sftlab.ifeval import ensure_punkt

    ensure_punkt()
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    out: dict[str, set[str]] = {k: set(v) | {k} for k, v in INSTRUCTION_CONFLICTS.items()}
    pairs = [(a, b) for a, bs in INSTRUCTION_CONFLICTS.items() for b in bs] + list(EXTRA_CONFLICTS)
    for a, b in pairs:
        out.setdefault(a, {a}).add(b)
        out.setdefault(b, {b}).add(a)
    return out


# --------------------------------------------------------------------------- configuration


@dataclass
class AugmentConfig:
    """Settings of ``sftlab augment`` and of a training config's ``augment:`` block.

    ``types``: instruction ids to draw from (None = the whole catalogue); full ids, the part after
    the colon (``no_comma``) or a category (``change_case``). ``holdout_types``: never used, so an
    evaluation can tell transfer to unseen constraint types from learning trained ones.
    ``ratio``: fraction of (decontaminated) conversations that get instructions; the rest stay plain.
    ``ngram``: decontamination n-gram length in words. ``decontaminate``: on by default; effective
    whenever ``ifeval_data`` (or ``ifeval_prompts``) is given.
    """

    types: list[str] | None = None
    holdout_types: list[str] = field(default_factory=list)
    max_instructions: int = 3
    ratio: float = 1.0
    seed: int = 0
    ngram: int = 8
    decontaminate: bool = True
    ifeval_data: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.types, str):
            self.types = [t for t in self.types.split(",") if t.strip()]
        if isinstance(self.holdout_types, str):
            self.holdout_types = [t for t in self.holdout_types.split(",") if t.strip()]
        self.holdout_types = list(self.holdout_types or [])
        if not isinstance(self.max_instructions, int) or not 1 <= self.max_instructions <= 3:
            raise ConfigError(f"augment max_instructions must be 1, 2 or 3, got {self.max_instructions!r}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, int | float) or not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"augment ratio must be a number from 0 to 1 (fraction augmented), got {self.ratio!r}")
        if not isinstance(self.ngram, int) or isinstance(self.ngram, bool) or self.ngram < 3:
            raise ConfigError(f"augment ngram must be an integer of at least 3, got {self.ngram!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"augment seed must be an integer, got {self.seed!r}")
        # Validate names now: a typo must fail before any work is done.
        self.active_types()

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None) -> AugmentConfig:
        """Build from a config file's ``augment:`` mapping; unknown keys are one-line errors."""
        if block is None:
            return cls()
        if not isinstance(block, dict):
            raise ConfigError(f"augment must be a mapping of settings, got {type(block).__name__}")
        valid = [f for f in cls.__dataclass_fields__]
        for key in block:
            if key not in valid:
                raise ConfigError(f"unknown augment key '{key}'{suggest(str(key), valid)}")
        return cls(**block)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for cache keys and stats); includes :data:`AUGMENT_VERSION`."""
        return {**asdict(self), "version": AUGMENT_VERSION}

    def cache_info(self) -> dict[str, Any]:
        """What identifies the augmented data for a preprocessing cache key: the settings, the
        catalogue version, and the IFEval file's identity (its prompts decide what is dropped)."""
        from pathlib import Path

        from sftlab.utils import file_fingerprint

        info = self.to_dict()
        if self.ifeval_data and Path(self.ifeval_data).expanduser().is_file():
            info["ifeval_file"] = file_fingerprint(Path(self.ifeval_data).expanduser())
        return info

    def active_types(self) -> list[str]:
        """The instruction ids drawn from: ``types`` (or all) minus ``holdout_types``, catalogue order."""
        chosen = resolve_types(self.types, what="types") if self.types is not None else list(CATALOGUE)
        held = resolve_types(self.holdout_types, what="holdout_types")
        both = [t for t in chosen if t in held and self.types is not None]
        if both:
            raise ConfigError(f"instruction type '{both[0]}' is in both types and holdout_types")
        out = [t for t in chosen if t not in held]
        if not out and self.ratio > 0:
            raise ConfigError("no instruction types left to augment with (check types and holdout_types)")
        return out


def suggest(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name, or ``""``."""
    import difflib

    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def resolve_types(names: Iterable[str], *, what: str = "types") -> list[str]:
    """Full instruction ids for ``names`` (full ids, short names after the colon, or categories)."""
    by_short: dict[str, list[str]] = {}
    for iid in CATALOGUE:
        category, short = iid.split(":", 1)
        by_short.setdefault(short, []).append(iid)
        by_short.setdefault(category, []).append(iid)
    out: list[str] = []
    for raw in names:
        name = str(raw).strip()
        if name in CATALOGUE:
            hits = [name]
        elif name in by_short:
            hits = by_short[name]
        else:
            hint = f" ({LEFT_OUT[name]})" if name in LEFT_OUT else suggest(name, [*CATALOGUE, *by_short])
            raise ConfigError(f"unknown instruction type '{name}' in {what}{hint}")
        out.extend(h for h in hits if h not in out)
    return out


# --------------------------------------------------------------------------- decontamination


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of ``text`` (lowercased, punctuation-insensitive); a text shorter than n has none."""
    w = words_of(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


class Decontaminator:
    """Flags text that shares an n-gram with any IFEval prompt."""

    def __init__(self, prompts: Iterable[str], n: int = 8):
        self.n = n
        self.index: set[tuple[str, ...]] = set()
        for p in prompts:
            self.index |= ngrams(p, n)

    def hits(self, text: str) -> bool:
        w = words_of(text)
        return any(tuple(w[i:i + self.n]) in self.index for i in range(len(w) - self.n + 1))

    def conversation_hits(self, messages: list[dict[str, str]]) -> bool:
        """User and system text only: that is what the prompt side of training sees."""
        return any(self.hits(m["content"]) for m in messages if m["role"] in ("user", "system"))


# --------------------------------------------------------------------------- verification


def verify(prompt: str, response: str, ids: list[str], kwargs: list[dict[str, Any]]) -> list[bool]:
    """Strict verdict per instruction, through :func:`sftlab.ifeval.check_instruction` (what ``sftlab eval`` uses)."""
    from sftlab.ifeval import check_instruction, instruction_registry

    registry = instruction_registry()
    inp = {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}
    return [check_instruction(registry, inp, i, response, [])[0] for i in range(len(ids))]


# --------------------------------------------------------------------------- statistics


@dataclass
class AugmentStats:
    """What happened: per type attempted/emitted/dropped by reason, and per conversation outcome."""

    conversations_in: int = 0
    decontaminated: int = 0
    decontamination: str = "off"
    chosen_plain: int = 0
    augmented: int = 0
    kept_plain_after_failure: int = 0
    written: int = 0
    instructions_per_example: dict[int, int] = field(default_factory=dict)
    types: dict[str, dict[str, Any]] = field(default_factory=dict)

    def type_row(self, iid: str) -> dict[str, Any]:
        return self.types.setdefault(iid, {"attempted": 0, "emitted": 0, "dropped": {}})

    def drop(self, iid: str, reason: str) -> None:
        row = self.type_row(iid)
        row["dropped"][reason] = row["dropped"].get(reason, 0) + 1

    @property
    def plain(self) -> int:
        return self.chosen_plain + self.kept_plain_after_failure

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plain"] = self.plain
        d["instructions_per_example"] = {str(k): v for k, v in sorted(self.instructions_per_example.items())}
        d["types"] = {k: {**v, "dropped": dict(sorted(v["dropped"].items(), key=lambda kv: -kv[1]))}
                      for k, v in sorted(self.types.items())}
        return d

    def format(self) -> str:
        """The printed summary: conversation counts, then one row per type."""
        lines = [
            f"conversations: {self.conversations_in} in, {self.decontaminated} dropped by decontamination "
            f"({self.decontamination}), {self.written} written: {self.augmented} augmented, {self.plain} plain "
            f"({self.chosen_plain} by the ratio, {self.kept_plain_after_failure} after every attempt failed)",
            "instructions per augmented example: " + (", ".join(
                f"{k}: {v}" for k, v in sorted(self.instructions_per_example.items())) or "none"),
            "",
            f"{'instruction type':<46}{'attempted':>10}{'emitted':>9}  dropped by reason",
        ]
        for iid, row in sorted(self.types.items()):
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(row["dropped"].items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(f"{iid:<46}{row['attempted']:>10}{row['emitted']:>9}  {reasons or '-'}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the augmentation


def _draw_types(rng: random.Random, pool: list[str], k_max: int, conflict: dict[str, set[str]]) -> list[str]:
    """1..k_max mutually compatible ids (fewer when conflicts leave no room)."""
    k = rng.choices(range(1, k_max + 1), weights=(5, 4, 2)[:k_max])[0]
    picked: list[str] = []
    cands = list(pool)
    while cands and len(picked) < k:
        iid = rng.choice(cands)
        picked.append(iid)
        cands = [c for c in cands if c not in conflict.get(iid, {iid}) and iid not in conflict.get(c, {c})]
    return picked


def _render(entry: Entry, kwargs: dict[str, Any], rng: random.Random) -> str:
    values = entry.fields(kwargs, rng) if entry.fields else dict(kwargs)
    return rng.choice(entry.phrasings).format(**values)


def augment_one(messages: list[dict[str, str]], ids: list[str], rng: random.Random,
                stats: AugmentStats | None = None, decon: Decontaminator | None = None) -> dict[str, Any] | None:
    """Try one instruction set on one conversation; the augmented record, or None (reasons in ``stats``).

    Instructions an entry cannot serve are dropped with their reason and the rest go on; the
    example is then verified as a whole by the IFEval checker, and dropped if any instruction fails.
    """
    stats = stats or AugmentStats()
    prompt = messages[-2]["content"]
    reply = messages[-1]["content"]
    for iid in ids:
        stats.type_row(iid)["attempted"] += 1
    empty = DROP_EMPTY if not reply.strip() else DROP_EMPTY_PROMPT if not prompt.strip() else None
    if empty:  # nothing to satisfy, or nothing to attach instructions to
        for iid in ids:
            stats.drop(iid, empty)
        return None
    order = sorted(ids, key=lambda i: CATALOGUE[i].stage)
    used: list[tuple[str, dict[str, Any]]] = []
    text = reply
    for iid in order:
        try:
            text, kw = CATALOGUE[iid].fn(Job(prompt=prompt, reply=text, ids=tuple(ids), rng=rng))
        except Skip as s:
            stats.drop(iid, s.reason)
            continue
        used.append((iid, kw))
    if not used:
        return None
    # Instructions are listed in the drawn (random) order, not the application order.
    used.sort(key=lambda u: ids.index(u[0]))
    sentences = [_render(CATALOGUE[iid], kw, rng) for iid, kw in used]
    # A request without final punctuation ("Java foreach") reads as a run-on before a same-line instruction.
    ends_sentence = prompt.rstrip()[-1:] in tuple(".?!:;)\"'")
    sep = rng.choice((" ", "\n\n", "\n") if ends_sentence else ("\n\n", "\n"))
    new_prompt = prompt.rstrip() + sep + " ".join(sentences)
    if decon is not None and decon.hits(new_prompt):
        for iid, _ in used:
            stats.drop(iid, DROP_OVERLAP)
        return None
    out_ids = [iid for iid, _ in used]
    out_kwargs = [kw for _, kw in used]
    verdicts = verify(new_prompt, text, out_ids, out_kwargs)
    if not all(verdicts):
        for iid, ok in zip(out_ids, verdicts, strict=True):
            stats.drop(iid, DROP_PARTNER if ok else DROP_FAILED_CHECK)
        return None
    for iid in out_ids:
        stats.type_row(iid)["emitted"] += 1
    new_messages = [dict(m) for m in messages]
    new_messages[-2]["content"] = new_prompt
    new_messages[-1]["content"] = text
    return {"messages": new_messages, "augment": {"instruction_id_list": out_ids, "kwargs": out_kwargs}}


def load_ifeval_prompts(spec: str) -> list[str]:
    """The prompt texts of an IFEval inputs file (or hub id), for decontamination."""
    from sftlab.ifeval import load_ifeval_inputs

    return [inp["prompt"] for inp in load_ifeval_inputs(spec)]


def augment_conversations(
    conversations: list[list[dict[str, str]]],
    cfg: AugmentConfig,
    ifeval_prompts: list[str] | None = None,
    *,
    ids: list[str] | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], AugmentStats]:
    """Augment normalised conversations (``sftlab.data`` shape); returns ``(records, stats)``.

    Each record is ``{"id", "messages"}`` for a plain conversation, plus ``"augment":
    {"instruction_id_list", "kwargs"}`` for an augmented one, in input order. Decontamination uses
    ``ifeval_prompts`` when given, else the prompts of ``cfg.ifeval_data`` when set (and
    ``cfg.decontaminate``). The output depends only on the inputs and ``cfg``.
    """
    from sftlab.ifeval import ensure_punkt

    ensure_punkt()
    pool = cfg.active_types()
    conflict = conflicts()
    stats = AugmentStats(conversations_in=len(conversations))
    decon = None
    if cfg.decontaminate:
        if ifeval_prompts is None and cfg.ifeval_data:
            ifeval_prompts = load_ifeval_prompts(cfg.ifeval_data)
        if ifeval_prompts:
            decon = Decontaminator(ifeval_prompts, cfg.ngram)
            stats.decontamination = f"{cfg.ngram}-gram overlap with {len(ifeval_prompts)} IFEval prompts"
        else:
            stats.decontamination = "no IFEval prompts given"
    ids = ids if ids is not None else [f"conv-{i}" for i in range(len(conversations))]
    if len(ids) != len(conversations):
        raise ConfigError(f"{len(ids)} ids for {len(conversations)} conversations")

    from tqdm.auto import tqdm

    records: list[dict[str, Any]] = []
    for i, messages in enumerate(tqdm(conversations, desc="augment", unit="conv", disable=not progress,
                                      dynamic_ncols=True)):
        if decon is not None and decon.conversation_hits(messages):
            stats.decontaminated += 1
            continue
        rng = random.Random(f"sftlab-augment/{cfg.seed}/{i}")
        record = None
        if pool and rng.random() < cfg.ratio:
            for _ in range(MAX_ATTEMPTS):
                record = augment_one(messages, _draw_types(rng, pool, cfg.max_instructions, conflict), rng,
                                     stats, decon)
                if record is not None:
                    break
            if record is None:
                stats.kept_plain_after_failure += 1
            else:
                stats.augmented += 1
                n = len(record["augment"]["instruction_id_list"])
                stats.instructions_per_example[n] = stats.instructions_per_example.get(n, 0) + 1
        else:
            stats.chosen_plain += 1
        records.append({"id": ids[i], **(record or {"messages": [dict(m) for m in messages]})})
    stats.written = len(records)
    return records, stats


def augment_loaded(loaded: Any, cfg: AugmentConfig, *, progress: bool = False) -> AugmentStats:
    """Augment a :class:`sftlab.data.LoadResult` in place: the one call the training pipeline needs.

    Replaces ``loaded.conversations`` and ``loaded.ids`` by the augmented and plain conversations
    (decontaminated ones removed) and records the statistics under ``loaded.stats["augment"]``.
    """
    records, stats = augment_conversations(loaded.conversations, cfg, ids=loaded.ids, progress=progress)
    loaded.conversations = [r["messages"] for r in records]
    loaded.ids = [r["id"] for r in records]
    loaded.stats["augment"] = {"config": cfg.to_dict(), **stats.to_dict()}
    return stats


def records_to_jsonl(records: list[dict[str, Any]]) -> str:
    """The output file's text: one JSON object per line, key order fixed.

    U+2028/U+2029 are escaped: valid JSON either way, but line-splitting readers (``str.splitlines``)
    would cut a record in two at a raw one.
    """
    return "".join(json.dumps(r, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
                   + "\n" for r in records)
