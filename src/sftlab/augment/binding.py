"""Constraints that bind (``binding``): thresholds that constrain, counts on the reply itself, two
different responses, titles that name the subject, endings and postscripts that fit.

Why: a constraint the reply meets by accident teaches nothing. "Use 'data' at least 1 time" on a
reply that says it once, "fewer than 2 capital words" on a reply with none, a keyword that only the
repeated request supplies, a "short answer" that is the first paragraph of the long one, a title
"Sorry Understand Mean", the same five postscripts on every topic: the model learns that
instructions cost nothing. These helpers replace those choices when ``binding`` is on; everything
stays exact, since the pipeline re-checks every example with the scorer.
"""

from __future__ import annotations

import random
import re

from sftlab.augment.entry import Job, Skip
from sftlab.augment.text import _AT_LEAST, _LESS, _step_for, paragraphs

BINDING = "binding"

MIN_BINDING_COUNT = 2
"""Below this a count cannot bind: "at least 1" of a word used once, "less than 2" of one never used."""


def binding_threshold(rng: random.Random, actual: int) -> tuple[str, int]:
    """A (relation, threshold) pair ``actual`` satisfies with little room: the reply only just meets it.

    ``at least N`` with N a round number in ``[0.75 * actual, actual]`` (and N >= 2); ``less than N``
    with N the next round number above ``actual`` (at most ``1.33 * actual + 1``). A count under
    :data:`MIN_BINDING_COUNT` raises :class:`Skip`: nothing there can bind.
    """
    if actual < MIN_BINDING_COUNT:
        raise Skip("count too small to bind")
    step = _step_for(actual)
    if rng.random() < 0.5:
        n = (actual // step) * step
        if n < max(MIN_BINDING_COUNT, 0.75 * actual):
            n = actual
        return _AT_LEAST, n
    n = (actual // step + 1) * step
    if n > 1.34 * actual + 1:
        n = actual + 1
    return _LESS, n


def holds(relation: str, actual: int, n: int) -> bool:
    return actual < n if relation == _LESS else actual >= n


def bound(job: Job, count: callable) -> tuple[str, int]:
    """Threshold from the reply as written (``job.original``), valid on the reply as it now stands.

    Why both: the count must describe the content, not what other instructions added (a title, the
    repeated request, a JSON key); and the example must still pass, so when the additions move the
    count across the threshold the instruction is skipped, not claimed.
    """
    relation, n = binding_threshold(job.rng, count(job.original))
    if not holds(relation, count(job.reply), n):
        raise Skip("other instructions' additions change the count")
    return relation, n


# ---- two responses

def two_different_responses(reply: str) -> str:
    """A short answer written from the reply's content that is not a prefix of it: the first
    sentence of each of its first three prose paragraphs, or its first and last sentence."""
    from lm_eval.tasks.ifeval import instructions_util

    prose = [p for p in paragraphs(reply) if not p.lstrip().startswith(("```", "~~~", "|", "#")) and "```" not in p]
    firsts = []
    for p in prose[:4]:
        sents = instructions_util.split_into_sentences(p.replace("\n", " "))
        if sents and not sents[0].rstrip().endswith(":"):
            firsts.append(sents[0].strip())
    if len(firsts) >= 2:
        short = " ".join(firsts[:3])
    else:
        sents = instructions_util.split_into_sentences(" ".join(prose).replace("\n", " ")) if prose else []
        if len(sents) < 4:
            raise Skip("reply too short for two different versions")
        short = f"{sents[0].strip()} {sents[-1].strip()}"
    norm_short, norm_full = " ".join(short.split()), " ".join(reply.split())
    if len(norm_short.split()) < 8 or norm_full.startswith(norm_short) or len(norm_short) > 0.7 * len(norm_full):
        raise Skip("reply too short for two different versions")
    return short


# ---- titles

_LEAD = re.compile(
    r"^(?:(?:hi|hello|hey)\b[,!.]?\s*)?(?:(?:please|kindly|now|ok(?:ay)?)[,]?\s+)?"
    r"(?:(?:can|could|would|will) you(?: please)?\s+|i (?:want|need|would like|'d like) you to\s+|"
    r"i (?:want|need) (?:to\s+)?|help me(?: to)?\s+|let'?s\s+)?(?:please\s+)?"
    r"(?:write|create|generate|give me|give|tell me about|tell me|explain(?: to me)?|describe|summari[sz]e|draft|"
    r"compose|make|list|provide|suggest|show me|design|plan|outline|compare|recommend|propose|prepare|build|"
    r"develop|translate|rewrite|summari[sz]e|analy[sz]e|review|convert|implement|teach me|help me with|find)\s+"
    r"(?:me\s+|us\s+)?", re.IGNORECASE)
_ASKS = re.compile(r"^(?:why|how|what|when|where|which|who)\b", re.IGNORECASE)
_NOT_A_TITLE = re.compile(r"^(?:hi|hello|hey|thanks|thank you|ok|okay|yes|no|act as|you are|i am|i'm|i have|i had|"
                          r"my|we|it|this|that|there|here|continue|please|you|your|lemme|let me|is it|are you|do you|"
                          r"can i|and|or|but|so|then|web search|paper)\b", re.IGNORECASE)
_DANGLING_END = re.compile(r"\b(?:was|were|is|are|of|to|the|a|an|would|could|in|on|for|with|and|or|this|these|that|"
                           r"following|below|above|me|my|it)$", re.IGNORECASE)
_QUESTION = re.compile(r"^(?:what|who|which)\s+(?:is|are|was|were)\s+(?:the\s+|a\s+|an\s+)?", re.IGNORECASE)
_HOW = re.compile(r"^how\s+(?:do|can|should|could|would)\s+(?:i|we|you|one)\s+", re.IGNORECASE)
_SMALL = frozenset("a an the and or of for to in on at by with from about vs as".split())
_MAX_TITLE_WORDS = 9


def subject_phrase(prompt: str) -> str:
    """The request's subject as a short phrase ("a cover letter for a data analyst job"), or Skip.

    Read off the first sentence of the request: the object of its verb ("Write a poem about X" ->
    "a poem about X"), what a question asks about ("What is X?" -> "X", "How do I X?" -> "how to X").
    Requests without such a phrase (too long, no verb we know) raise :class:`Skip`: no title beats a
    bag of frequent words.
    """
    first = re.split(r"[.?!\n:;]", prompt.strip(), maxsplit=1)[0].strip()
    m = _LEAD.match(first)
    if m:
        phrase = first[m.end():]
    elif (q := _QUESTION.match(first)):
        phrase = first[q.end():]
    elif (h := _HOW.match(first)):
        phrase = "how to " + first[h.end():]
    elif len(first.split()) <= 8 and (_ASKS.match(first) or not _NOT_A_TITLE.match(first)):
        phrase = first  # "Why is the sky blue", "Java foreach loop": the request is its own subject
    else:
        raise Skip("no subject phrase for a title")
    phrase = re.split(r",|\s+(?:and then|so that|because|which|that will|in order to)\s+", phrase, maxsplit=1)[0]
    words = phrase.strip().strip("\"'").split()
    if words and (_DANGLING_END.search(words[-1]) or _NOT_A_TITLE.match(phrase.strip()) or not words[0][:1].isalpha()):
        raise Skip("no subject phrase for a title")
    if not 2 <= len(words) <= _MAX_TITLE_WORDS or not all(re.match(r"^[\w'’\-+#&/]+$", w) for w in words):
        raise Skip("no subject phrase for a title")
    return " ".join(words)


def title_case(phrase: str) -> str:
    out = []
    for i, w in enumerate(phrase.split()):
        keep = any(c.isupper() for c in w[1:]) or w.isupper()  # JSON, iPhone, CascadeType
        out.append(w if keep else (w.lower() if i and w.lower() in _SMALL else w[:1].upper() + w[1:]))
    return " ".join(out)


# ---- endings and postscripts

_END_POOL = (
    "That should get you started.", "I hope that answers your question.", "Those are the main points.",
    "Good luck with it.", "Let me know how it goes.", "That is the short version.", "Happy writing.",
    "Hope this is useful.", "Enjoy.", "That wraps it up.", "Have fun with it.", "Best of luck.",
    "Tell me if you need changes.", "Thanks for asking.", "Take care.", "Feel free to adapt it.",
    "That is everything you need.", "All the best.", "Adjust the details as needed.", "Cheers.",
    "Ask again any time.", "Hope it helps you decide.", "That is my suggestion.", "Stay curious.",
    "Have a great day.", "Try it and see.", "Keep at it.", "Let me know what you think.",
)
_TOPIC_ENDS = (
    "That covers {subject}.", "That is my take on {subject}.", "I hope this helps with {subject}.",
    "Good luck with {subject}.", "Those are the essentials of {subject}.",
)
_PS_POOL = (
    "If a step is unclear, ask and I will expand it.", "A second opinion on the details never hurts.",
    "Sources change over time, so check anything critical.", "I kept this brief; ask for more depth.",
    "Tell me your constraints and I can adjust this.", "An example of your own would help me refine it.",
    "Save a copy before you change anything.", "Shorter or longer versions are easy to make.",
    "Try the simplest option first.", "Your context may change the best choice.",
    "Questions are welcome.", "I can turn this into a checklist.", "A table version is possible too.",
)
_TOPIC_PS = (
    "I can go deeper into {subject} if you like.", "Ask me for another take on {subject}.",
    "If {subject} changes, tell me and I will update this.", "There is more to say about {subject}.",
)


def fitting_end(prompt: str, rng: random.Random) -> str:
    """An ending phrase: about the request's subject when it has one, else from a large varied pool."""
    try:
        subject = subject_phrase(prompt)
    except Skip:
        subject = ""
    if subject and len(subject.split()) <= 6 and rng.random() < 0.5:
        return rng.choice(_TOPIC_ENDS).format(subject=_lower_first(subject))
    return rng.choice(_END_POOL)


def fitting_postscript(prompt: str, rng: random.Random) -> str:
    try:
        subject = subject_phrase(prompt)
    except Skip:
        subject = ""
    if subject and len(subject.split()) <= 6 and rng.random() < 0.5:
        return rng.choice(_TOPIC_PS).format(subject=_lower_first(subject))
    return rng.choice(_PS_POOL)


def _lower_first(phrase: str) -> str:
    w = phrase.split()
    if w and not any(c.isupper() for c in w[0][1:]) and not w[0].isupper():
        w[0] = w[0].lower()
    return " ".join(w)
