"""The catalogue: every supported IFEval instruction id, its entry function, stage and phrasings.

Why: one table says which instruction ids exist, how each is served (``relabel`` or ``transform``),
in which order they are applied (``stage``), how the instruction is worded (phrasings and their
fields), and which pairs are never drawn together (:func:`conflicts`). Changing it changes the data:
bump :data:`sftlab.augment.config.AUGMENT_VERSION`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sftlab.augment.entry import Entry
from sftlab.augment.own import OWN_CONFLICTS, OWN_ENTRIES
from sftlab.augment.relabel import (
    _capital_words,
    _existence,
    _forbidden,
    _frequency,
    _language,
    _letter_frequency,
    _sentences,
    _words,
)
from sftlab.augment.text import _language_names, _relation_phrase
from sftlab.augment.transforms import (
    _bullets,
    _constrained,
    _end_phrase,
    _highlights,
    _json,
    _lowercase,
    _no_comma,
    _nth_paragraph,
    _paragraph_dividers,
    _placeholders,
    _postscript,
    _quotation,
    _repeat_prompt,
    _sections,
    _title,
    _two_responses,
    _uppercase,
)
from sftlab.utils import plural

# ---- the phrasing fields


def _quoted_list(words: list[str], last: str) -> str:
    q = [f'"{w}"' for w in words]
    if len(q) == 1:
        return f"the word {q[0]}"
    return "the words " + ", ".join(q[:-1]) + f" {last} " + q[-1]


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


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
        return {**kw, "n_items": plural(kw[key], noun)}
    return fields


def _f_nth(kw: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**kw, "n_items": plural(kw["num_paragraphs"], "paragraph"), "nth": _ORDINALS[kw["nth_paragraph"] - 1]}


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

OWN_CATALOGUE: dict[str, Entry] = {e.id: e for e in OWN_ENTRIES}
"""sftlab's own constraint types (``sftlab:*``, :mod:`sftlab.augment.own`), checked by :mod:`sftlab.augment.checkers`.
Not in the default pool unless ``own_types`` is on; ``types`` may name them either way."""

ALL_TYPES: dict[str, Entry] = {**CATALOGUE, **OWN_CATALOGUE}
"""Every type an augmentation can draw: IFEval's (:data:`CATALOGUE`) and sftlab's own (:data:`OWN_CATALOGUE`)."""

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
    from sftlab.eval.ifeval import ensure_punkt

    ensure_punkt()
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    out: dict[str, set[str]] = {k: set(v) | {k} for k, v in INSTRUCTION_CONFLICTS.items()}
    pairs = [(a, b) for a, bs in INSTRUCTION_CONFLICTS.items() for b in bs] + list(EXTRA_CONFLICTS) + list(OWN_CONFLICTS)
    for a, b in pairs:
        out.setdefault(a, {a}).add(b)
        out.setdefault(b, {b}).add(a)
    return out
