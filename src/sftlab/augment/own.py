"""Entries of sftlab's own constraint types (``sftlab:*``): relabels and transforms, checked by
:mod:`sftlab.augment.checkers`.

Why here and not in ``relabel``/``transforms``: these types exist to widen what training asks for
beyond IFEval's formats (issue #24); each entry counts with the checker's own helpers, so what an
entry claims is exactly what the checker verifies. The phrasings given to :class:`Entry` are the
``v1`` ones; :mod:`sftlab.augment.phrasing` holds the varied ``v2`` ones for every type.
"""

from __future__ import annotations

import re
from typing import Any

from sftlab.augment import checkers as C
from sftlab.augment.binding import BINDING, subject_phrase
from sftlab.augment.entry import Entry, Job, Result, Skip
from sftlab.augment.text import _step_for, has_code, paragraphs

P = C.PREFIX


def _ceil_round(actual: int) -> int:
    """The round number at or just above ``actual``: "at most 25 words a sentence" for a 23-word longest."""
    step = _step_for(actual)
    return -(-actual // step) * step


def _numbered(job: Job) -> Result:
    nums = C.numbered_items(job.reply)
    if nums:
        if nums != list(range(1, len(nums) + 1)) or len(nums) < 2:
            raise Skip("numbering is not one list from 1")
        return job.reply, {"num_items": len(nums)}
    lines = job.reply.split("\n")
    rows = [i for i, line in enumerate(lines) if C.BULLET.match(line) and not line.startswith((" ", "\t"))]
    if len(rows) < 2 or has_code(job.reply) or any(re.match(r"^\s+[-*+•]\s", x) for x in lines):
        raise Skip("no list to number")
    for k, i in enumerate(rows, 1):
        lines[i] = re.sub(r"^[-*+•]\s+", f"{k}. ", lines[i], count=1)
    return "\n".join(lines), {"num_items": len(rows)}


def _table(job: Job) -> Result:
    cols = C.table_columns(job.reply)
    if not cols or len(set(cols)) != 1:
        raise Skip("no markdown table (or tables of different widths)")
    return job.reply, {"num_columns": cols[0]}


_LANGS = ("python", "javascript", "typescript", "java", "sql", "bash", "html", "css", "c++", "c#", "go", "rust",
          "ruby", "php", "kotlin", "swift", "r", "json", "yaml")
_LANG_FENCE = {"c++": "cpp", "c#": "csharp"}


def _code_language(job: Job) -> Result:
    labels = C.fence_labels(job.reply)
    if not labels:
        raise Skip("no code block")
    named = {x for x in labels if x}
    if len(named) == 1 and all(labels):
        return job.reply, {"language": named.pop()}
    if named:
        raise Skip("code blocks in several or unlabelled languages")
    asked = [lang for lang in _LANGS if re.search(r"(?<![\w+#])" + re.escape(lang) + r"(?![\w+#])", job.prompt,
                                                  re.IGNORECASE)]
    if len(asked) != 1:
        raise Skip("the language of the code is not known")
    lang = _LANG_FENCE.get(asked[0], asked[0])
    out, in_fence = [], False
    for line in job.reply.split("\n"):
        m = re.match(r"^(\s*)(```|~~~)\s*$", line)
        if m and not in_fence:
            line = f"{m.group(1)}{m.group(2)}{lang}"
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
        out.append(line)
    return "\n".join(out), {"language": lang}


_BOLD_LINE = re.compile(r"^\*\*([^*\n]{2,60})\*\*:?\s*$")
_LABEL_LINE = re.compile(r"^([A-Z][^.!?:*#|\n]{1,50}):$")


def _headings(job: Job) -> Result:
    n = C.headings(job.reply)
    if n:
        return job.reply, {"num_headings": n}
    lines = job.reply.split("\n")
    if has_code(job.reply):
        raise Skip("no headings and no bold lines to turn into headings")
    # A line that is only a bold phrase, or a short capitalised label ending in a colon ("Pros:"),
    # followed by content: a heading in all but markup.
    rows = [(i, m.group(1)) for i, x in enumerate(lines) if (m := _BOLD_LINE.match(x.strip()) or
            _LABEL_LINE.match(x.strip())) and i + 1 < len(lines) and any(y.strip() for y in lines[i + 1:i + 3])]
    if len(rows) < 2:
        raise Skip("no headings and no bold lines to turn into headings")
    for i, label in rows:
        lines[i] = "## " + label.strip().rstrip(":")
    return "\n".join(lines), {"num_headings": len(rows)}


def _relabel_if(check: str, why: str) -> Any:
    def fn(job: Job) -> Result:
        if not C.OWN_CHECKERS[P + check](job.reply):
            raise Skip(why)
        return job.reply, {}
    return fn


def _opening_word(job: Job) -> Result:
    word = C.first_word(job.reply)
    if job.source and C.first_word(job.source) != word:
        raise Skip("another instruction changes the opening")
    if not word.isalpha() or len(word) < 2:
        raise Skip("reply does not open with a word")
    return job.reply, {"first_word": word}


def _max_sentence_words(job: Job) -> Result:
    sents = C.sentences(job.reply)
    if len(sents) < 2:
        raise Skip("fewer than two sentences")
    longest = max(len(C.words(s)) for s in sents)
    if longest < 4:
        raise Skip("sentences too short to limit")
    return job.reply, {"max_words": _ceil_round(longest) if not job.on(BINDING) else longest + job.rng.randint(0, 2)}


def _max_paragraph_words(job: Job) -> Result:
    paras = C.text_paragraphs(job.reply)
    if len(paras) < 2:
        raise Skip("fewer than two paragraphs")
    longest = max(len(C.words(p)) for p in paras)
    if longest < 5:
        raise Skip("paragraphs too short to limit")
    return job.reply, {"max_words": _ceil_round(longest)}


def _max_lines(job: Job) -> Result:
    n = sum(1 for x in job.reply.split("\n") if x.strip())
    if n < 2:
        raise Skip("fewer than two lines")
    return job.reply, {"max_lines": _ceil_round(n) if not job.on(BINDING) else n + job.rng.randint(0, 1)}


def _max_chars(job: Job) -> Result:
    n = len(job.reply.strip())
    if n < 40:
        raise Skip("reply too short to limit")
    step = 50 if n < 1000 else 100
    return job.reply, {"max_chars": -(-n // step) * step}


_MD_LIST = re.compile(r"^(\s*)[-*+]\s+(?=\S)")


def _plain_text(job: Job) -> Result:
    if has_code(job.reply) or "|" in job.reply or re.search(r"\[[^\]\n]+\]\(", job.reply):
        raise Skip("reply has code, tables or links")
    lines = []
    for line in job.reply.split("\n"):
        line = re.sub(r"^\s{0,3}#{1,6}\s+", "", line)
        line = _MD_LIST.sub(r"\1• ", line)
        line = line.replace("**", "").replace("__", "")
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*\n]*)\*(?![\w*])", r"\1", text)
    if not C.is_plain(text):
        raise Skip("markup left that cannot be removed safely")
    return text, {}


_NOT_PROSE = re.compile(r"^\s*(?:#|\||```|~~~|<<|>|[-*+•]\s|\d+[.)]\s|subject\b|dear\b|to\b:|tl;dr|section\s*\d|"
                        r"p\.s|\[|\*\*[^*]+\*\*\s*$)", re.IGNORECASE)
_SIGN_OFF = re.compile(r"^\s*(?:sincerely|best(?: regards)?|kind regards|regards|yours|cheers|thanks|thank you)\b[^\n]{0,20}$",
                       re.IGNORECASE | re.MULTILINE)


def opening_sentences(text: str, max_words: int = 30) -> list[str]:
    """The first sentence of each prose paragraph (not a heading, list, table, code, salutation or
    subject line), when it is a whole sentence of 4 to ``max_words`` words: what a summary may reuse."""
    from lm_eval.tasks.ifeval import instructions_util

    out = []
    for p in paragraphs(text):
        if _NOT_PROSE.match(p) or "\n" in p.strip() and p.strip().split("\n")[0].rstrip().endswith(":"):
            continue
        sents = instructions_util.split_into_sentences(p.replace("\n", " "))
        first = sents[0].strip() if sents else ""
        if 4 <= len(first.split()) <= max_words and first[-1:] in ".!?" and first[:1].isupper():
            out.append(first)
    return out


def _first_sentence(job: Job) -> str:
    """The reply's opening sentence, read on the reply as written (not on a title or a repeated request)."""
    if _SIGN_OFF.search(job.original):
        raise Skip("reply is a letter: nothing goes after its sign-off")
    sents = opening_sentences(job.original)
    if not sents:
        raise Skip("no short opening sentence")
    return sents[0]


def _lower_first(sentence: str) -> str:
    w = sentence.split(" ", 1)
    keep = w[0] == "I" or any(c.isupper() for c in w[0][1:])
    return sentence if keep else sentence[:1].lower() + sentence[1:]


def _tldr(job: Job) -> Result:
    if len(paragraphs(job.reply)) < 2:
        raise Skip("reply too short for a TL;DR")
    summary = _first_sentence(job)
    return f"TL;DR: {summary}\n\n{job.reply.strip()}", {}


_FOLLOW_UPS = ("Would you like me to go into more detail on {s}?", "Should I expand on any part of {s}?",
               "Is there a part of {s} you want to look at more closely?", "Does this cover what you needed?",
               "Would an example help?", "Do you want a shorter version?", "What would you like to explore next?",
               "Shall I put this into a different format?")


def _ends_with_question(job: Job) -> Result:
    if job.reply.rstrip().endswith("?"):
        return job.reply, {}
    if _SIGN_OFF.search(job.original):
        raise Skip("reply is a letter: nothing goes after its sign-off")
    try:
        subject = subject_phrase(job.prompt)
    except Skip:
        subject = ""
    pool = _FOLLOW_UPS if subject and len(subject.split()) <= 6 else _FOLLOW_UPS[3:]
    question = job.rng.choice(pool).format(s=subject[:1].lower() + subject[1:] if subject else "")
    return f"{job.reply.rstrip()}\n\n{question}", {}


def _quote_request(job: Job) -> Result:
    first = re.split(r"(?<=[.?!])\s|\n", job.prompt.strip(), maxsplit=1)[0].strip()
    if not 3 <= len(first.split()) <= 30 or first.startswith(">"):
        raise Skip("no short request to quote")
    return f"> {first}\n\n{job.reply.strip()}", {"quoted": first}


_TAKEAWAY_HEADINGS = ("Key takeaways", "In brief", "Main points", "Summary", "To remember")


def _takeaways(job: Job) -> Result:
    if _SIGN_OFF.search(job.original):
        raise Skip("reply is a letter: nothing goes after its sign-off")
    points = opening_sentences(job.original, max_words=25)
    if len(points) < 2:
        raise Skip("fewer than two points to take away")
    n = job.rng.randint(2, min(4, len(points)))
    heading = job.rng.choice(_TAKEAWAY_HEADINGS)
    bullets = "\n".join(f"- {x}" for x in points[:n])
    return f"{job.reply.rstrip()}\n\n{heading}:\n{bullets}", {"heading": heading, "num_items": n}


_CLOSERS = ("In short", "In summary", "Overall", "To sum up", "All in all", "Bottom line")


def _closing_paragraph(job: Job) -> Result:
    paras = C.text_paragraphs(job.reply)
    if len(paras) < 2:
        raise Skip("fewer than two paragraphs")
    last = paras[-1].strip().lower()
    for opener in _CLOSERS:
        if last.startswith(opener.lower()):
            return job.reply, {"opener": opener}
    if not job.on(BINDING):
        raise Skip("last paragraph does not open with a closing phrase")
    opener = job.rng.choice(_CLOSERS)
    summary = _first_sentence(job)
    return f"{job.reply.rstrip()}\n\n{opener}: {_lower_first(summary)}", {"opener": opener}


OWN_ENTRIES: tuple[Entry, ...] = (
    Entry(P + "numbered_items", "transform", 30, _numbered, (
        "Present it as a numbered list of exactly {num_items} items.",
        "Number the points 1 to {num_items}, one per line.",
        "Give exactly {num_items} numbered points.",
    )),
    Entry(P + "table_columns", "relabel", 100, _table, (
        "Put the information in a markdown table with {num_columns} columns.",
        "Lay it out as a table, {num_columns} columns wide, in markdown.",
        "A markdown table with exactly {num_columns} columns, please.",
    )),
    Entry(P + "code_language", "transform", 20, _code_language, (
        "Tag every code block with its language ({language}).",
        "Label each fenced code block as {language}.",
        "Fenced code only, marked ```{language}.",
    )),
    Entry(P + "heading_count", "transform", 45, _headings, (
        "Organise the reply under exactly {num_headings} markdown headings (lines starting with #).",
        "Use {num_headings} '#' headings, no more and no fewer.",
        "Give it {num_headings} markdown headings.",
    )),
    Entry(P + "no_first_person", "relabel", 100, _relabel_if("no_first_person", "reply speaks in the first person"), (
        "Keep yourself out of it: no I, me or my.",
        "Do not refer to yourself (no first-person words).",
        "Write impersonally, without I, me, my or mine.",
    )),
    Entry(P + "opening_word", "relabel", 100, _opening_word, (
        'The first word of the reply should be "{first_word}".',
        'Open with the word "{first_word}".',
        'Let "{first_word}" be the very first word.',
    )),
    Entry(P + "max_sentence_words", "relabel", 100, _max_sentence_words, (
        "Keep every sentence to {max_words} words or fewer.",
        "No sentence longer than {max_words} words.",
        "Short sentences: {max_words} words at most each.",
    )),
    Entry(P + "plain_text", "transform", 15, _plain_text, (
        "Plain text only, no markdown formatting.",
        "Do not use markdown (no headings, bold, bullets or code formatting).",
        "Answer without any markdown markup.",
    )),
    Entry(P + "tldr_first", "transform", 62, _tldr, (
        'Start with a one-line summary beginning "TL;DR:", then a blank line, then the details.',
        "Lead with a TL;DR: line, and give the full answer after it.",
        "First a line that starts with TL;DR:, then the rest.",
    )),
    Entry(P + "ends_with_question", "transform", 68, _ends_with_question, (
        "End the reply with a question to me.",
        "Finish by asking me a follow-up question.",
        "Your last sentence should be a question.",
    )),
    Entry(P + "max_paragraph_words", "relabel", 100, _max_paragraph_words, (
        "No paragraph may run past {max_words} words.",
        "Keep each paragraph within {max_words} words.",
        "Paragraphs of at most {max_words} words each.",
    )),
    Entry(P + "quote_request_first", "transform", 82, _quote_request, (
        "Quote my opening sentence as a markdown blockquote (> ...) before you answer.",
        "First cite my first sentence as a > blockquote, then reply.",
        "Begin with my question as a blockquote line, then the answer.",
    )),
    Entry(P + "takeaways_end", "transform", 66, _takeaways, (
        'Finish with a "{heading}" line followed by {num_items} bullet points, and nothing after them.',
        'Close with the heading "{heading}" and exactly {num_items} bullets under it.',
        'End on "{heading}:" plus {num_items} short bullet points.',
    )),
    Entry(P + "no_parentheses", "relabel", 100, _relabel_if("no_parentheses", "reply has parentheses"), (
        "Avoid parentheses altogether.",
        "Do not put anything in round brackets.",
        "No parenthetical remarks: leave out ( and ).",
    )),
    Entry(P + "max_lines", "relabel", 100, _max_lines, (
        "Keep the reply within {max_lines} lines.",
        "No more than {max_lines} non-empty lines, please.",
        "Fit the answer into {max_lines} lines at most.",
    )),
    Entry(P + "closing_paragraph", "transform", 67, _closing_paragraph, (
        'Start the final paragraph with "{opener}".',
        'The last paragraph has to open with "{opener}".',
        'Wrap up with a closing paragraph that begins "{opener}".',
    )),
    Entry(P + "max_chars", "relabel", 100, _max_chars, (
        "Stay within {max_chars} characters.",
        "The reply must not exceed {max_chars} characters.",
        "Keep it under {max_chars} characters, spaces included.",
    )),
    Entry(P + "no_questions", "relabel", 100, _relabel_if("no_questions", "reply asks a question"), (
        "Do not ask any questions in your reply.",
        "No question marks anywhere.",
        "State things; ask nothing back.",
    )),
)

OWN_CONFLICTS: tuple[tuple[str, str], ...] = tuple(
    (P + a, b if ":" in b else P + b) for a, bs in {
        "numbered_items": ("detectable_format:number_bullet_lists", "plain_text", "takeaways_end",
                           "detectable_format:json_format", "startend:quotation"),
        "table_columns": ("plain_text", "detectable_format:json_format", "punctuation:no_comma",
                          "change_case:english_lowercase", "change_case:english_capital"),
        "code_language": ("plain_text", "detectable_format:json_format", "startend:quotation",
                          "combination:two_responses"),
        "heading_count": ("plain_text", "detectable_format:number_highlighted_sections", "detectable_format:title",
                          "detectable_format:json_format", "detectable_format:multiple_sections"),
        "opening_word": ("tldr_first", "quote_request_first", "detectable_format:title", "combination:repeat_prompt",
                         "detectable_format:constrained_response", "startend:quotation", "detectable_format:json_format",
                         "combination:two_responses", "change_case:english_capital"),
        "plain_text": ("combination:two_responses",
                       "detectable_format:number_bullet_lists", "detectable_format:number_highlighted_sections",
                       "detectable_format:json_format", "length_constraints:number_paragraphs", "takeaways_end",
                       "quote_request_first"),
        "tldr_first": ("change_case:english_lowercase", "change_case:english_capital", "detectable_format:title", "combination:repeat_prompt", "detectable_format:constrained_response",
                       "startend:quotation", "detectable_format:json_format", "quote_request_first",
                       "detectable_format:multiple_sections", "length_constraints:nth_paragraph_first_word"),
        "ends_with_question": ("startend:end_checker", "detectable_content:postscript", "startend:quotation",
                               "detectable_format:json_format", "takeaways_end", "closing_paragraph", "no_questions"),
        "quote_request_first": ("change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma",
                                "combination:repeat_prompt", "detectable_format:title", "startend:quotation",
                                "detectable_format:json_format", "detectable_format:constrained_response",
                                "length_constraints:nth_paragraph_first_word", "detectable_format:multiple_sections"),
        "takeaways_end": ("startend:end_checker", "detectable_content:postscript", "closing_paragraph",
                          "startend:quotation", "detectable_format:json_format", "detectable_format:number_bullet_lists",
                          "max_lines", "max_chars"),
        "closing_paragraph": ("startend:end_checker", "detectable_content:postscript", "startend:quotation",
                              "detectable_format:json_format", "max_lines", "max_chars"),
    }.items() for b in bs)
"""Pairs never drawn together: one would undo the other (a TL;DR line is not a title) or add what the other forbids."""
