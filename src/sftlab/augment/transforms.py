"""Deterministic transforms: entries that rewrite the reply mechanically so it satisfies the instruction.

Why: case and punctuation (lowercase, capitals, no commas, quotation marks), additions at the start
or end (a title, the repeated request, a postscript, an ending phrase) and structure (two responses,
JSON, ``My answer is``, bullets, highlights, sections, ``***`` paragraphs, the nth paragraph's first
word, placeholders) are exact string operations; the catalogue's stage order keeps earlier ones
satisfied when later ones run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from sftlab.augment.binding import (
    BINDING,
    fitting_end,
    fitting_postscript,
    subject_phrase,
    title_case,
    two_different_responses,
)
from sftlab.augment.entry import Job, Result, Skip
from sftlab.augment.protect import (
    has_fence,
    keep_heads,
    link_and_code_spans,
    map_outside,
    overlaps,
    protected_spans,
    without_protected,
)
from sftlab.augment.text import (
    _STOPWORDS,
    _WORD_RE,
    _content_words,
    _group,
    _outside_code_lines,
    detect_language,
    has_code,
    paragraphs,
)

MAX_REPEAT_PROMPT_CHARS = 400
"""Longer prompts are not repeated back: a reply that starts by copying a page of text teaches little."""


# ---- case and punctuation


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


PRESERVE = "preserve_content"


def _recased_around_code(job: Job, fn: str) -> Result:
    """``preserve_content``: recase the prose only; code, URLs, identifiers and formulas stay as written.

    The checker reads the whole reply, so when a protected span has letters of the other case the
    instruction could not be met without changing it: the record is skipped for this type instead.
    """
    prose = without_protected(job.reply)
    if detect_language(prose) != "en":
        raise Skip("reply is not English")
    text = map_outside(job.reply, getattr(str, fn))
    if text != getattr(text, fn)():
        raise Skip("protected text (code, table, URL, identifier) has letters of the other case")
    if detect_language(without_protected(text)) != "en":
        raise Skip("recased text not detected as English")
    if detect_language(text) != "en":  # the checker runs langdetect on the whole reply
        raise Skip("recased text not detected as English")
    return text, {}


def _lowercase(job: Job) -> Result:
    if job.on(PRESERVE):
        return _recased_around_code(job, "lower")
    return _recased(job, job.reply.lower())


def _uppercase(job: Job) -> Result:
    if job.on(PRESERVE):
        return _recased_around_code(job, "upper")
    return _recased(job, job.reply.upper())


def _no_comma(job: Job) -> Result:
    if has_code(job.reply) and "," in job.reply:
        raise Skip("commas in code")
    if job.on(PRESERVE) and any("," in job.reply[s:e] for s, e in protected_spans(job.reply)):
        raise Skip("commas in a URL, identifier or formula")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", job.reply)  # 1,000 -> 1000
    text = re.sub(r",(?=\s)", "", text)  # "Yes, it" -> "Yes it"
    text = text.replace(",", " ")  # "a,b" -> "a b"
    return text, {}


def _quotation(job: Job) -> Result:
    if job.on(PRESERVE) and has_fence(job.reply):
        raise Skip("quotation marks would wrap a code fence")
    text = job.reply.strip()
    if len(text) > 1 and text[0] == '"' and text[-1] == '"':
        return text, {}
    return f'"{text}"', {}


# ---- things added at the start or the end

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
    phrase = fitting_end(job.prompt, job.rng) if job.on(BINDING) else job.rng.choice(_END_PHRASES)
    body = job.reply.rstrip()
    if body.lower().endswith(phrase.lower()):
        return body, {"end_phrase": phrase}
    return f"{body}\n\n{phrase}", {"end_phrase": phrase}


def _postscript(job: Job) -> Result:
    marker = job.rng.choice(("P.S.", "P.P.S"))
    written = "P.P.S." if marker == "P.P.S" else marker
    note = fitting_postscript(job.prompt, job.rng) if job.on(BINDING) else job.rng.choice(_POSTSCRIPTS)
    return f"{job.reply.rstrip()}\n\n{written} {note}", {"postscript_marker": marker}


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
    if job.on(BINDING):
        return _subject_title(job)
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


# ---- structure


def _subject_title(job: Job) -> Result:
    """binding: the reply's own title line or heading, else a phrase naming the request's subject."""
    lines = job.reply.strip().split("\n")
    m = re.match(r"^(?:\*\*)?title:?(?:\*\*)?:?\s*(.+?)(?:\*\*)?$|^#{1,6}\s+(.+?)#*$", lines[0].strip(), re.IGNORECASE)
    rest = "\n".join(lines[1:]).strip()
    if m and rest:
        text = (m.group(1) or m.group(2)).strip().strip('"*').strip().rstrip(":").strip()
        if 0 < len(text) <= 80 and "<" not in text and ">" not in text:
            return f"<<{text}>>\n\n{rest}", {}
    return f"<<{title_case(subject_phrase(job.prompt))}>>\n\n{job.reply.strip()}", {}


def _two_responses(job: Job) -> Result:
    if "******" in job.reply:
        raise Skip("reply already holds ******")
    if job.on(BINDING):
        return f"{two_different_responses(job.reply)}\n\n******\n\n{job.reply.strip()}", {}
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
    if job.on(PRESERVE):
        return _highlights_preserving(job)
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


def _units(job: Job) -> list[str]:
    """Paragraphs, or with ``preserve_content`` blocks that keep each heading with what follows it."""
    paras = paragraphs(job.reply)
    if job.on(PRESERVE):
        paras = ["\n\n".join(u) for u in keep_heads(paras)]
    return paras


def _sections(job: Job) -> Result:
    paras = _units(job)
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
    paras = _units(job)
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
        if job.on(PRESERVE):
            text, k = _substitute_keeping(pattern, slot, text, job.prompt)
        else:
            text, k = pattern.subn(slot, text)
        made += k
    if not made:
        raise Skip("no placeholder slot")
    return text, {"num_placeholders": job.rng.randint(1, min(made, 8))}


def _substitute_keeping(pattern: re.Pattern[str], slot: str, text: str, prompt: str) -> tuple[str, int]:
    """Placeholders that keep content: never for a link, never for what the prompt itself names
    (the date or address the user asked about is the answer, not a slot)."""
    if slot == "[link]":
        return text, 0
    asked = prompt.lower()
    made = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal made
        core = m.group(0).split(" ", 1)[-1].rstrip(",") if slot.startswith("\\1") else m.group(0)
        if core.lower() in asked:
            return m.group(0)
        made += 1
        return m.expand(slot)

    return pattern.sub(sub, text), made


def _key_terms(job: Job) -> list[tuple[int, str, str, str]]:
    out, taken = [], set()
    rows = [(i, line) for i, line, code in _outside_code_lines(job.reply)
            if not code and "*" not in line and line.count("|") < 2]  # table cells are data
    for word in _content_words(job.prompt)[:20]:
        for i, line in rows:
            m = re.search(r"\b" + re.escape(word) + r"\b", line, flags=re.IGNORECASE)
            if m and i not in taken and m.start() > 0 and not overlaps(link_and_code_spans(line), m.start(), m.end()):
                out.append((i, line[:m.start()], m.group(0), line[m.end():]))
                taken.add(i)
                break
        if len(out) >= 4:
            break
    return out


def _highlights_preserving(job: Job) -> Result:
    """Highlights that never touch code or a URL: existing emphasis counted outside them, new bold
    only on a label or a short opening sentence that no protected span overlaps."""
    have = _count_highlights(without_protected(job.reply))
    if have >= 1:
        return job.reply, {"num_highlights": job.rng.randint(max(1, have // 2), have)}
    lines = job.reply.split("\n")
    cands = []
    for i, line, code in _outside_code_lines(job.reply):
        m = _LINE_PREFIX.match(line)
        body = m.group(2) if m else ""
        if code or "*" in line or line.count("|") >= 2 or len(body.split()) < 2:
            continue
        label = re.match(r"([^.!?:]{2,60}):\s", body)
        span = label.group(1) if label and len(label.group(1).split()) <= 6 else \
            re.match(r"[^.!?:]*[.!?]?", body).group(0).rstrip()
        if not 2 <= len(span.split()) <= 15:
            continue
        start = len(m.group(1))
        if overlaps(link_and_code_spans(line), start, start + len(span)):
            continue
        cands.append((i, m.group(1), span, body[len(span):]))
    if not cands:  # else a term of the request, bolded where the reply first uses it in prose
        cands = _key_terms(job)
    if not cands:
        raise Skip("no line to highlight outside code and links")
    n = min(len(cands), job.rng.choice((1, 2, 2, 3, 3, 4)))
    for i, prefix, span, tail in sorted(job.rng.sample(cands, n)):
        lines[i] = f"{prefix}**{span}**{tail}"
    return "\n".join(lines), {"num_highlights": n}
