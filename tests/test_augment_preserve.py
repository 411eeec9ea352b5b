"""``preserve_content``: transforms keep code, URLs, tables, identifiers and non-Latin text intact,
or skip the record and count why; never force a change that breaks the reply.

Records of each kind (code, tables, links, non-Latin text) come from the bundled ShareGPT V3, plus
small cases that show what the old construction did (and still does with the switch off).
"""

from __future__ import annotations

import json
import random
import re

import pytest
from helpers import U

from sftlab import augment as A
from sftlab.augment.protect import protected_spans
from sftlab.data import load_conversations

PRESERVE = frozenset({"preserve_content"})
PER_KIND = 6
TRANSFORMS = [i for i, e in A.CATALOGUE.items() if e.kind == "transform"]

_URL = re.compile(r"https?://[^\s<>()\[\]\"'`]+")
_FENCE_BLOCK = re.compile(r"^```[^\n]*\n.*?^```", re.MULTILINE | re.DOTALL)
_NON_LATIN = re.compile(r"[\u0400-\u04ff\u0600-\u06ff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]+")


def _asst(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _kind(reply: str) -> str | None:
    if _FENCE_BLOCK.search(reply):
        return "code"
    if re.search(r"^\s*\|?\s*:?-{3,}", reply, re.MULTILINE) and "|" in reply:
        return "table"
    if _URL.search(reply):
        return "link"
    if _NON_LATIN.search(reply):
        return "non-latin"
    return None


@pytest.fixture(scope="module")
def kinds() -> dict[str, list[list[dict[str, str]]]]:
    out: dict[str, list] = {"code": [], "table": [], "link": [], "non-latin": []}
    for m in load_conversations("sharegpt", max_samples=6000, max_rounds=1).conversations:
        k = _kind(m[-1]["content"])
        if k and len(out[k]) < PER_KIND and len(m[-1]["content"]) < 3000:
            out[k].append(m)
    assert all(len(v) == PER_KIND for v in out.values()), {k: len(v) for k, v in out.items()}
    return out


def _pieces(reply: str) -> dict[str, list[str]]:
    """What must survive: fenced blocks, URLs, table rows' cells, runs of non-Latin script."""
    rows = [c.strip() for line in reply.split("\n") if line.count("|") >= 2
            for c in line.strip().strip("|").split("|") if c.strip() and not set(c.strip()) <= set("-: ")]
    return {"code": _FENCE_BLOCK.findall(reply), "url": _URL.findall(reply), "cell": rows,
            "script": _NON_LATIN.findall(reply)}


def _text_of(iid: str, out: str) -> str:
    if iid == "detectable_format:json_format":  # the reply is inside a JSON string: decode it
        body = out.strip().removeprefix("```json").removesuffix("```")
        obj = json.loads(body)
        return "\n\n".join(v if isinstance(v, str) else "\n\n".join(v) for v in obj.values())
    return out


@pytest.mark.parametrize("kind", ["code", "table", "link", "non-latin"])
def test_every_transform_keeps_code_urls_tables_and_scripts_or_skips(kinds, kind):
    emitted = 0
    for iid in TRANSFORMS:
        for k, m in enumerate(kinds[kind]):
            stats = A.AugmentStats()
            rec = A.augment_one(m, [iid], random.Random(f"{iid}/{k}"), stats, options=PRESERVE)
            row = stats.types[iid]
            assert A.DROP_FAILED_CHECK not in row["dropped"], (iid, row)
            if rec is None:
                assert sum(row["dropped"].values()) == 1  # skipped, and counted with its reason
                continue
            emitted += 1
            out = _text_of(iid, rec["messages"][-1]["content"])
            for what, pieces in _pieces(m[-1]["content"]).items():
                for piece in pieces:
                    if iid == "punctuation:no_comma" and what in ("cell", "script") and "," in piece:
                        continue  # commas leave prose cells and sentences by design
                    assert piece in out, (iid, what, piece[:80])
    assert emitted > 0


def test_case_changes_leave_code_urls_and_identifiers_alone():
    reply = ("The Loop fails because you call `list.remove(x)` inside it. See https://docs.python.org/3/tutorial/ "
             "for details. Use a copy of the list instead, It works.")
    rec = A.augment_one([U("Why does my loop fail?"), _asst(reply)], ["change_case:english_lowercase"],
                        random.Random(0), options=PRESERVE)
    out = rec["messages"][-1]["content"]
    assert out.startswith("the loop fails") and "`list.remove(x)`" in out and "https://docs.python.org/3/" in out
    # An identifier with capitals cannot be lowercased without changing it: the instruction is not drawn.
    stats = A.AugmentStats()
    ident = "The loop throws a ConcurrentModificationException because you change the list while you iterate."
    assert A.augment_one([U("Why?"), _asst(ident)], ["change_case:english_lowercase"], random.Random(0), stats,
                         options=PRESERVE) is None
    assert "protected text (code, table, URL, identifier) has letters of the other case" in \
        stats.types["change_case:english_lowercase"]["dropped"]
    # Without the switch the old construction lowercases the identifier (what the issue saw).
    old = A.augment_one([U("Why?"), _asst(ident)], ["change_case:english_lowercase"], random.Random(0))
    assert "concurrentmodificationexception" in old["messages"][-1]["content"]
    formula = "The Frequency is f = (γ / 2π) · sqrt(k/m), as The textbook says for a spring and a mass."
    out = A.augment_one([U("Formula?"), _asst(formula)], ["change_case:english_lowercase"], random.Random(0),
                        options=PRESERVE)["messages"][-1]["content"]
    assert "f = (γ / 2π)" in out and out.startswith("the frequency")
    spans = [formula[s:e] for s, e in protected_spans(formula)]
    assert any("γ" in s for s in spans)


def test_quotation_marks_never_wrap_a_code_fence():
    conv = [U("Print one in Python."), _asst("```python\nprint(1)\n```")]
    stats = A.AugmentStats()
    assert A.augment_one(conv, ["startend:quotation"], random.Random(0), stats, options=PRESERVE) is None
    assert stats.types["startend:quotation"]["dropped"] == {"quotation marks would wrap a code fence": 1}
    assert A.augment_one(conv, ["startend:quotation"], random.Random(0))["messages"][-1]["content"].startswith('"```')


def test_placeholders_never_replace_what_the_prompt_asks_about_or_a_link():
    conv = [U("Is the meeting on March 3, 2023 at https://x.org/a?"),
            _asst("Yes, the meeting is on March 3, 2023. Join at https://x.org/a and email bob@x.org for questions.")]
    out = A.augment_one(conv, ["detectable_content:number_placeholders"], random.Random(0),
                        options=PRESERVE)["messages"][-1]["content"]
    assert "March 3, 2023" in out and "https://x.org/a" in out and "[email address]" in out
    old = A.augment_one(conv, ["detectable_content:number_placeholders"], random.Random(0))["messages"][-1]["content"]
    assert "[date]" in old and "[link]" in old
    only_asked = [U("Is it on March 3, 2023?"), _asst("Yes, it is on March 3, 2023.")]
    stats = A.AugmentStats()
    assert A.augment_one(only_asked, ["detectable_content:number_placeholders"], random.Random(0), stats,
                         options=PRESERVE) is None


def test_highlights_never_fall_inside_a_url_or_code():
    reply = "How about <https://example.com/a-b>? It works well for me.\nRun `make all` now and see what you get."
    for seed in range(6):
        out = A.augment_one([U("Where?"), _asst(reply)], ["detectable_format:number_highlighted_sections"],
                            random.Random(seed), options=PRESERVE)
        if out is None:
            continue
        text = out["messages"][-1]["content"]
        assert "<https://example.com/a-b>" in text and "`make all`" in text
    old = A.augment_one([U("Where?"), _asst(reply)], ["detectable_format:number_highlighted_sections"],
                        random.Random(0))["messages"][-1]["content"]
    assert "<https://example.com/a-b>" not in old  # the old one bolds across the URL


def test_sections_and_dividers_never_separate_a_heading_from_its_list():
    reply = "A simple soup.\n\nIngredients:\n\n- water\n- salt\n\n## Steps\n\n1. Boil.\n2. Salt.\n\nEnjoy it hot."
    for iid, mark in (("detectable_format:multiple_sections", r"(?:SECTION|Section) \d\n"),
                      ("length_constraints:number_paragraphs", r"\*\*\*\n")):
        for seed in range(8):
            rec = A.augment_one([U("Soup recipe?"), _asst(reply)], [iid], random.Random(seed), options=PRESERVE)
            text = rec["messages"][-1]["content"]
            assert "Ingredients:\n\n- water" in text and "## Steps\n\n1. Boil." in text, text
            assert not re.search(r"(Ingredients:|## Steps)\s*\n\n" + mark, text)
