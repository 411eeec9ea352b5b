"""``phrasing: v2``: instruction wording far from IFEval's, in varied styles and positions.

Why: ``v1`` words every type after the request in three or four ways, each within a word or two of
IFEval's own ("Put double quotation marks around your entire reply"). A model trained on that
learns a benchmark's sentences, not what the constraint means. Here each type has at least four
clauses (an imperative, written for sftlab), each said tersely ("Keep every letter lowercase.") or
politely ("Could you keep every letter lowercase?"): eight phrasings or more per type. The
instructions go after the request, before it, or into a system message; two or three of them are
sometimes given as a numbered list of requirements. A test holds every phrasing to at most five
consecutive words in common with any IFEval or IFBench prompt.

Fields are those of the catalogue (:attr:`sftlab.augment.entry.Entry.fields`, else the kwargs).
"""

from __future__ import annotations

import random
from typing import Any

PHRASINGS = ("v1", "v2")
"""``phrasing``: the original wording (after the request, 3-4 per type) or this module's."""

CLAUSES: dict[str, tuple[str, ...]] = {
    # -- IFEval's types, in sftlab's words
    "keywords:existence": (
        "work {words} into the text", "make {words} part of what you write", "bring up {words} at some point",
        "weave {words} into the answer"),
    "keywords:frequency": (
        'say "{keyword}" {rel_n}', 'let "{keyword}" come up {rel_n}', 'have the term "{keyword}" show {rel_n}',
        'write "{keyword}" {rel_n} overall'),
    "keywords:forbidden_words": (
        "leave out {words}", "steer clear of {words}", "keep {words} out of the text",
        "manage without {words}"),
    "keywords:letter_frequency": (
        'let the letter "{letter}" turn up {rel_n}', 'keep the count of the letter "{letter}" at {rel_n}',
        'type the character "{letter}" {rel_n} overall', 'make sure "{letter}" as a letter shows {rel_n}'),
    "language:response_language": (
        "answer in {language}", "write it all in {language}", "stick to {language} throughout",
        "use {language} and no other tongue"),
    "length_constraints:number_sentences": (
        "keep the count of sentences to {rel_n}", "aim for {rel_n}", "write {rel_n} overall",
        "let the text run to {rel_n}"),
    "length_constraints:number_words": (
        "come in at {rel_n}", "keep the length to {rel_n}", "use {rel_n} overall", "stay at {rel_n}"),
    "change_case:capital_word_frequency": (
        "write {rel_n}", "include {rel_n} (in caps)", "let there be {rel_n}", "set {rel_n} in caps lock"),
    "length_constraints:nth_paragraph_first_word": (
        'give me {n_items} split by blank lines, paragraph {nth_paragraph} opening with "{first_word}"',
        'lay it out as {n_items} with empty lines between, and start the {nth} with "{first_word}"',
        'write {n_items}, blank line between each; the {nth} begins "{first_word}"',
        'use {n_items} set apart by blank lines, with "{first_word}" as the first word of the {nth}'),
    "detectable_format:constrained_response": (
        'lead with one verdict sentence: "My answer is" plus yes, no or maybe, then a period',
        'begin with the verdict "My answer is" plus yes, no or maybe and a period',
        'put "My answer is" and then yes, no or maybe (with a full stop) first',
        'open on the words "My answer is" and a one-word verdict: yes, no or maybe'),
    "combination:two_responses": (
        "write a brief answer and a fuller one, with a line of six asterisks (******) between",
        "offer two takes, a short one then a long one, split by ******",
        "give a quick version and a complete version, divided by ******",
        "draft two distinct answers and set ****** between them"),
    "detectable_format:json_format": (
        "return valid JSON only", "reply with a JSON object and nothing else",
        "send the answer back as JSON", "make the output parse as JSON"),
    "detectable_content:number_placeholders": (
        "leave {n_items} for me to fill in, in square brackets like [name]",
        "include {n_items} such as [date] that I can complete",
        "put in {n_items} written as [like this]", "keep {n_items} in square brackets open"),
    "detectable_format:number_bullet_lists": (
        "give {n_items} as markdown bullets (* or -)", "lay the content out as {n_items} using * or -",
        "make it {n_items}, each line starting with * or -", "list it in {n_items} with markdown dashes or stars"),
    "detectable_format:number_highlighted_sections": (
        "bold or italicise {n_items} with asterisks", "mark {n_items} with *asterisks*",
        "emphasise {n_items} in markdown", "make {n_items} stand out with *markdown*"),
    "detectable_format:multiple_sections": (
        "break it into {num_sections} parts headed {section_spliter} 1, {section_spliter} 2 and so on",
        "use {num_sections} numbered parts, each opened by a {section_spliter} line with its number",
        "label {num_sections} blocks as {section_spliter} 1 onward",
        "divide it into {num_sections} pieces, every one headed {section_spliter} and a number"),
    "length_constraints:number_paragraphs": (
        "write {n_items} with a *** line between neighbours", "give {n_items}, set apart by ***",
        "split it into {n_items} and put *** on a line between them",
        "use {n_items}, divided by the *** rule"),
    "detectable_format:title": (
        "start with a title inside << and >>", "give it a heading of the form <<Title>>",
        "put a title in double angle brackets on top", "head it with a <<title>>"),
    "detectable_content:postscript": (
        'add a closing note that opens with "{postscript_marker}"', 'sign off with a "{postscript_marker}" note',
        'tack on a "{postscript_marker}" line after the main text', 'finish with a {postscript_marker} aside'),
    "startend:end_checker": (
        'make "{end_phrase}" the final words', 'stop right after the words "{end_phrase}"',
        'let "{end_phrase}" close it, with nothing after', 'wrap up with exactly "{end_phrase}"'),
    "change_case:english_lowercase": (
        "keep every letter lowercase, in English", "write in English with no uppercase at all",
        "stick to small letters only, in English", "use English and lowercase throughout"),
    "change_case:english_capital": (
        "write in English and in block capitals", "put all of it in English uppercase",
        "use caps lock English for every word", "shout it: English, all uppercase"),
    "punctuation:no_comma": (
        "skip commas entirely", "manage without a single comma", "use no commas at all", "keep commas out"),
    "combination:repeat_prompt": (
        "restate my request word for word (leave these requirements out) and then answer",
        "echo my request exactly, minus these requirements, before the answer",
        "copy the request as it stands, not these requirements, and answer after it",
        "open by quoting my request verbatim (without the requirements) and then reply"),
    "startend:quotation": (
        "wrap it all in double quotes", "enclose the full text in a pair of double quotes",
        "set the whole thing inside double quotation marks", "begin and finish with a double quote"),
    # -- sftlab's own types
    "sftlab:numbered_items": (
        "number the points 1 to {num_items}, one per line", "give exactly {num_items} numbered points",
        "make it a numbered list with {num_items} entries", "list {num_items} items as 1., 2. and so on"),
    "sftlab:table_columns": (
        "show it as a markdown table with {num_columns} columns", "lay the data out in {num_columns} table columns",
        "use a markdown table, {num_columns} columns wide", "present a table that has exactly {num_columns} columns"),
    "sftlab:code_language": (
        "tag every code block as {language}", "label each fenced block ```{language}",
        "mark the language ({language}) on each code fence", "put {language} after every opening ```"),
    "sftlab:heading_count": (
        "organise it under {num_headings} markdown headings", "use exactly {num_headings} # headings",
        "give it {num_headings} headings that start with #", "structure it with {num_headings} markdown headers"),
    "sftlab:no_first_person": (
        "keep yourself out of it: no I, me or my", "avoid first-person words", "write impersonally, without I or my",
        "never refer to yourself"),
    "sftlab:opening_word": (
        'open with the word "{first_word}"', 'let "{first_word}" come first', 'begin on "{first_word}"',
        'make "{first_word}" the first word'),
    "sftlab:max_sentence_words": (
        "keep each sentence to {max_words} words or fewer", "cap sentences at {max_words} words",
        "write no sentence over {max_words} words", "hold every sentence within {max_words} words"),
    "sftlab:plain_text": (
        "write plain text with no markdown", "skip markdown formatting", "leave out bold, headings and bullets",
        "keep it free of markdown markup"),
    "sftlab:tldr_first": (
        'lead with a "TL;DR:" line, then a blank line and the details', "put a one-line TL;DR: first",
        "begin with TL;DR: and a one-sentence summary", "start on a TL;DR: line before the full answer"),
    "sftlab:ends_with_question": (
        "end by asking me a question", "finish on a follow-up question", "close with a question for me",
        "make the last sentence a question"),
    "sftlab:max_paragraph_words": (
        "keep each paragraph within {max_words} words", "cap paragraphs at {max_words} words",
        "write no paragraph over {max_words} words", "hold paragraphs to {max_words} words apiece"),
    "sftlab:quote_request_first": (
        "quote my first sentence as a > blockquote before you answer",
        "cite my opening sentence in a markdown blockquote first",
        "begin with my first sentence quoted on a > line", "put my opening line in a blockquote on top"),
    "sftlab:takeaways_end": (
        'close with a "{heading}" line and {num_items} bullet points under it',
        'finish on "{heading}:" followed by {num_items} bullets',
        'end with {num_items} bullets headed "{heading}"', 'add "{heading}" and {num_items} bullets at the very end'),
    "sftlab:no_parentheses": (
        "avoid parentheses", "put nothing in round brackets", "leave out ( and ) entirely", "skip parenthetical asides"),
    "sftlab:max_lines": (
        "fit it into {max_lines} lines", "keep it to {max_lines} non-empty lines at most",
        "use no more than {max_lines} lines", "stay within {max_lines} lines"),
    "sftlab:closing_paragraph": (
        'start the last paragraph with "{opener}"', 'open the final paragraph on "{opener}"',
        'round off with a paragraph that begins "{opener}"', 'let the closing paragraph begin with "{opener}"'),
    "sftlab:max_chars": (
        "stay within {max_chars} characters", "keep it to {max_chars} characters or fewer",
        "use at most {max_chars} characters", "hold the length to {max_chars} characters"),
    "sftlab:no_questions": (
        "ask no questions", "leave out question marks", "state things without asking anything back",
        "do not put any question to me"),
}
"""Per type, imperative clauses (no capital, no final stop) that :data:`STYLES` turn into sentences."""

TERSE = "{C}."
POLITE = ("Please {c}.", "Could you {c}?", "Kindly {c}.", "I'd like you to {c}.")
STYLES = (TERSE, *POLITE)
"""Sentence frames: ``{C}`` is the clause capitalised, ``{c}`` as written."""

LIST_HEADERS = ("Requirements:", "A few rules for this:", "Conditions:", "Things to observe:", "Keep to these points:")
SYSTEM_FRAMES = ("For every answer in this chat: {rules}", "{rules}", "House rules: {rules}")
POSITIONS = ("after", "after", "before", "system")
"""Where the instructions go; after the request is the most common place people put them."""


def sentence(style: str, clause: str) -> str:
    """The clause in a frame; a quoted phrase that ends the clause keeps its own stop ('... "Good luck."')."""
    text = style.format(C=clause[:1].upper() + clause[1:], c=clause)
    for end in ('.".', '!".', '?".', '."?', '!"?', '?"?'):
        if text.endswith(end):
            return text[:-1]
    return text


def phrasings(iid: str) -> list[str]:
    """Every phrasing template of a type: each clause in each style."""
    return [sentence(style, clause) for clause in CLAUSES[iid] for style in STYLES]


def _clause(iid: str, kwargs: dict[str, Any], rng: random.Random) -> str:
    from sftlab.augment.catalogue import ALL_TYPES

    entry = ALL_TYPES[iid]
    values = entry.fields(kwargs, rng) if entry.fields else dict(kwargs)
    return rng.choice(CLAUSES[iid]).format(**values)


def wording(used: list[tuple[str, dict[str, Any]]], rng: random.Random) -> str:
    """The instructions as text: one sentence each in one style, or a numbered list for two or more."""
    clauses = [_clause(iid, kw, rng) for iid, kw in used]
    if len(clauses) >= 2 and rng.random() < 0.4:
        items = "\n".join(f"{k}. {c[:1].upper()}{c[1:]}." for k, c in enumerate(clauses, 1))
        return f"{rng.choice(LIST_HEADERS)}\n{items}"
    style = rng.choice(STYLES)
    return " ".join(sentence(style if k == 0 else TERSE, c) for k, c in enumerate(clauses))


def place(prompt: str, used: list[tuple[str, dict[str, Any]]], rng: random.Random) -> tuple[str, str | None]:
    """(new user prompt, system text or None): the instructions after the request, before it, or as a system message."""
    text = wording(used, rng)
    where = rng.choice(POSITIONS)
    request = prompt.strip()
    if where == "system":
        return prompt, rng.choice(SYSTEM_FRAMES).format(rules=text)
    if where == "before":
        return f"{text}\n\n{request}", None
    ends_sentence = request[-1:] in tuple(".?!:;)\"'")
    sep = rng.choice((" ", "\n\n") if ends_sentence and "\n" not in text else ("\n\n",))
    return request + sep + text, None
