"""``phrasing: v2``: at least eight phrasings per type, none within six words of an IFEval or IFBench prompt.

The n-gram test renders every phrasing with realistic field values (and numbers folded together,
so "at least 300 words" and "at least 5 words" count as the same words), then looks for any run of
six consecutive words shared with any of IFEval's 541 or IFBench's 300 prompts.
"""

from __future__ import annotations

import json
import random
import re
import string

import pytest

from sftlab import augment as A
from sftlab.augment import phrasing as PH

MAX_SHARED = 5  # consecutive words a phrasing may share with a benchmark prompt

SAMPLE_KWARGS = {
    "keywords:existence": {"keywords": ["budget", "travel"]},
    "keywords:frequency": {"keyword": "budget", "frequency": 3, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["really", "simply"]},
    "keywords:letter_frequency": {"letter": "e", "let_frequency": 12, "let_relation": "less than"},
    "language:response_language": {"language": "de"},
    "length_constraints:number_sentences": {"num_sentences": 5, "relation": "less than"},
    "length_constraints:number_words": {"num_words": 150, "relation": "at least"},
    "change_case:capital_word_frequency": {"capital_frequency": 3, "capital_relation": "at least"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "then"},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_format:number_bullet_lists": {"num_bullets": 4},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"num_sections": 3, "section_spliter": "SECTION"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "startend:end_checker": {"end_phrase": "Good luck."},
    "sftlab:numbered_items": {"num_items": 5},
    "sftlab:table_columns": {"num_columns": 3},
    "sftlab:code_language": {"language": "python"},
    "sftlab:heading_count": {"num_headings": 3},
    "sftlab:opening_word": {"first_word": "yes"},
    "sftlab:max_sentence_words": {"max_words": 20},
    "sftlab:max_paragraph_words": {"max_words": 80},
    "sftlab:takeaways_end": {"heading": "Key takeaways", "num_items": 3},
    "sftlab:max_lines": {"max_lines": 10},
    "sftlab:closing_paragraph": {"opener": "In short"},
    "sftlab:max_chars": {"max_chars": 500},
}


def _norm_words(text: str) -> list[str]:
    return ["0" if w.isdigit() else w for w in re.findall(r"\w+", text.lower())]


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _norm_words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


@pytest.fixture(scope="module")
def benchmark_grams(shared_dir) -> set[tuple[str, ...]]:
    prompts = [json.loads(line)["prompt"] for line in (shared_dir / "ifeval" / "input_data.jsonl").open()]
    prompts += [json.loads(line)["prompt"] for line in (shared_dir / "ifbench" / "IFBench_test.jsonl").open()]
    assert len(prompts) == 541 + 300
    out: set[tuple[str, ...]] = set()
    for p in prompts:
        out |= _grams(p, MAX_SHARED + 1)
    return out


def _rendered(iid: str) -> list[str]:
    """Every phrasing of a type with its fields filled in (several draws of the fields' own wording)."""
    entry = A.ALL_TYPES[iid]
    out = []
    for template in PH.phrasings(iid):
        for seed in range(4):
            kw = SAMPLE_KWARGS.get(iid, {})
            values = entry.fields(kw, random.Random(seed)) if entry.fields else dict(kw)
            out.append(template.format(**values))
    return out


def test_every_type_has_at_least_eight_phrasings_in_several_styles():
    assert set(PH.CLAUSES) == set(A.ALL_TYPES)
    for iid in A.ALL_TYPES:
        ph = PH.phrasings(iid)
        assert len(set(ph)) >= 8, iid
        assert any(p.startswith(("Please", "Could you", "Kindly", "I'd like")) for p in ph), iid
        fields = {f for p in ph for _, f, _, _ in string.Formatter().parse(p) if f}
        assert fields <= set(_rendered_fields(iid)), (iid, fields)


def _rendered_fields(iid: str) -> list[str]:
    entry = A.ALL_TYPES[iid]
    kw = SAMPLE_KWARGS.get(iid, {})
    return list(entry.fields(kw, random.Random(0)) if entry.fields else kw)


@pytest.mark.parametrize("iid", sorted(A.ALL_TYPES))
def test_no_phrasing_shares_six_words_with_an_ifeval_or_ifbench_prompt(benchmark_grams, iid):
    texts = _rendered(iid)
    texts += [f"{h} {t}" for h in PH.LIST_HEADERS for t in texts[:4]]
    texts += [frame.format(rules=t) for frame in PH.SYSTEM_FRAMES for t in texts[:4]]
    bad = [(t, g) for t in texts for g in _grams(t, MAX_SHARED + 1) if g in benchmark_grams]
    assert not bad, bad[:3]


def test_placements_vary_and_the_pipeline_writes_them(benchmark_grams):
    prompt = "Plan a three-day trip to Lisbon on a small budget."
    reply = ("Day one: walk the old town and ride tram 28. Budget for food and travel carefully.\n\n"
             "Day two: take the train to Sintra and see the palaces.\n\nDay three: visit Belém and the riverside.")
    seen = set()
    for seed in range(60):
        rec = A.augment_one([{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
                            ["keywords:existence", "punctuation:no_comma"], random.Random(seed), phrasing="v2")
        assert rec is not None
        msgs = rec["messages"]
        added = msgs[0]["content"] if msgs[0]["role"] == "system" else msgs[-2]["content"].replace(prompt, "")
        assert not any(g in benchmark_grams for g in _grams(added, MAX_SHARED + 1)), added
        if msgs[0]["role"] == "system":
            seen.add("system")
            assert msgs[-2]["content"] == prompt
        elif msgs[-2]["content"].startswith(prompt):
            seen.add("after")
        else:
            seen.add("before")
            assert msgs[-2]["content"].endswith(prompt)
        if re.search(r"^1\. .*\n2\. ", added, re.MULTILINE):
            seen.add("numbered")
    assert seen == {"system", "after", "before", "numbered"}
