"""``binding``: constraints that constrain. Thresholds close to the reply's own count (never "at
least 1" of a word used once, never "less than 2" of something absent), counted on the reply
without what other instructions add, two genuinely different responses, titles that name the
subject, and endings and postscripts that fit the reply or come from a large pool."""

from __future__ import annotations

import random
import re

import pytest
from helpers import U

from sftlab import augment as A
from sftlab.augment.binding import subject_phrase, title_case
from sftlab.augment.entry import Skip
from sftlab.data import load_conversations

BIND = frozenset({"binding"})


def _asst(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def real() -> list[list[dict[str, str]]]:
    return load_conversations("sharegpt", max_samples=160, max_rounds=1).conversations


def _emit(real, ids, options=BIND, tag="b"):
    out = []
    for k, m in enumerate(real):
        rec = A.augment_one(m, ids, random.Random(f"{tag}/{ids}/{k}"), options=options)
        if rec is not None:
            out.append((m, rec))
    return out


def _counts(iid: str):
    from lm_eval.tasks.ifeval import instructions_util as U_

    return {
        "keywords:frequency": ("frequency", "relation",
                               lambda kw, t: len(re.findall(kw["keyword"], t, flags=re.IGNORECASE))),
        "keywords:letter_frequency": ("let_frequency", "let_relation", lambda kw, t: t.lower().count(kw["letter"])),
        "length_constraints:number_sentences": ("num_sentences", "relation", lambda kw, t: U_.count_sentences(t)),
        "length_constraints:number_words": ("num_words", "relation", lambda kw, t: U_.count_words(t)),
        "change_case:capital_word_frequency": (
            "capital_frequency", "capital_relation",
            lambda kw, t: sum(w.isupper() for w in U_.nltk.word_tokenize(t))),
    }[iid]


@pytest.mark.parametrize("iid", ["keywords:frequency", "keywords:letter_frequency", "length_constraints:number_sentences",
                                 "length_constraints:number_words", "change_case:capital_word_frequency"])
def test_relabelled_thresholds_bind(real, iid):
    num, rel, count = _counts(iid)
    emitted = _emit(real, [iid])
    assert emitted
    for m, rec in emitted:
        kw = rec["augment"]["kwargs"][0]
        actual = count(kw, m[-1]["content"])
        assert actual >= 2  # nothing vacuous: a count of 0 or 1 is never relabelled
        if kw[rel] == "at least":
            assert kw[num] >= 2 and 0.75 * actual <= kw[num] <= actual
        else:
            assert actual < kw[num] <= 1.34 * actual + 1
    # Without the switch the old construction does say "at least 1" / "less than 2" now and then.
    if iid == "keywords:frequency":
        old = [r["augment"]["kwargs"][0] for _, r in _emit(real, [iid], options=frozenset(), tag="o")]
        assert any(k["frequency"] == 1 and k["relation"] == "at least" for k in old)


def test_counts_are_taken_on_the_reply_without_other_instructions_additions(real):
    checked = 0
    for m, rec in _emit(real, ["keywords:existence", "combination:repeat_prompt", "detectable_format:title"]):
        ids = rec["augment"]["instruction_id_list"]
        if "keywords:existence" not in ids or len(ids) == 1:
            continue
        kw = rec["augment"]["kwargs"][ids.index("keywords:existence")]
        for word in kw["keywords"]:  # in the reply as written, not only in the repeated request or the title
            assert re.search(word, m[-1]["content"], flags=re.IGNORECASE), word  # the checker's own test
        checked += 1
    assert checked >= 10
    # A "less than" threshold that the additions would break is skipped, not claimed.
    rng_reply = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten."
    stats = A.AugmentStats()
    for seed in range(20):
        A.augment_one([U("Count to ten, one word a sentence."), _asst(rng_reply)],
                      ["length_constraints:number_sentences", "combination:two_responses"], random.Random(seed), stats,
                      options=BIND)
    assert A.DROP_FAILED_CHECK not in stats.types["length_constraints:number_sentences"]["dropped"]


def test_two_responses_are_two_different_answers(real):
    emitted = _emit(real, ["combination:two_responses"])
    assert len(emitted) >= 5
    for _, rec in emitted:
        short, full = rec["messages"][-1]["content"].split("\n\n******\n\n")
        assert short.strip() != full.strip()
        assert not " ".join(full.split()).startswith(" ".join(short.split()))
        assert len(short) < 0.7 * len(full)
    old = _emit(real, ["combination:two_responses"], options=frozenset(), tag="o")
    prefixes = sum(" ".join(f.split()).startswith(" ".join(s.split()))
                   for s, f in (r["messages"][-1]["content"].split("\n\n******\n\n") for _, r in old))
    assert prefixes >= 0.8 * len(old)  # the finding, reproduced with the switch off


def test_titles_name_the_subject():
    assert subject_phrase("Write a poem about the sea.") == "a poem about the sea"
    assert title_case(subject_phrase("Can you explain quantum computing in simple terms?")) == \
        "Quantum Computing in Simple Terms"
    assert subject_phrase("What is the capital of France?") == "capital of France"
    assert subject_phrase("How do I make an HTTP request in JavaScript?") == "how to make an HTTP request in JavaScript"
    for vague in ("hi", "continue", "I don't know what to say to my boss, she keeps asking me about the report and "
                                    "I have not started it yet"):
        with pytest.raises(Skip):
            subject_phrase(vague)
    rec = A.augment_one([U("Write a poem about the sea."), _asst("Waves roll in.\nSalt and foam.")],
                        ["detectable_format:title"], random.Random(0), options=BIND)
    assert rec["messages"][-1]["content"].startswith("<<A Poem about the Sea>>\n\n")


def test_titles_over_real_prompts_use_the_requests_words(real):
    emitted = _emit(real, ["detectable_format:title"])
    assert len(emitted) >= 10
    for m, rec in emitted:
        title = re.match(r"<<([^>]+)>>", rec["messages"][-1]["content"]).group(1)
        words = set(re.findall(r"\w+", (m[-2]["content"] + " " + m[-1]["content"]).lower()))
        assert set(re.findall(r"\w+", title.lower())) <= words, title


def test_endings_and_postscripts_vary_and_fit(real):
    ends = [r["augment"]["kwargs"][0]["end_phrase"] for _, r in _emit(real, ["startend:end_checker"])]
    notes = [r["messages"][-1]["content"].rsplit("P.", 1)[-1] for _, r in _emit(real, ["detectable_content:postscript"])]
    assert len(set(ends)) > 20 and max(ends.count(e) for e in ends) < 0.1 * len(ends)
    assert len(set(notes)) > 20
    rec = A.augment_one([U("Write a poem about the sea."), _asst("Waves roll in.\nSalt and foam.")],
                        ["startend:end_checker"], random.Random(3), options=BIND)
    assert rec["messages"][-1]["content"].endswith(rec["augment"]["kwargs"][0]["end_phrase"])
    fitting = {A.augment_one([U("Write a poem about the sea."), _asst("Waves roll in.\nSalt and foam.")],
                             ["startend:end_checker"], random.Random(s), options=BIND)["augment"]["kwargs"][0]["end_phrase"]
               for s in range(30)}
    assert any("a poem about the sea" in e for e in fitting)
    old = {r["augment"]["kwargs"][0]["end_phrase"] for _, r in _emit(real, ["startend:end_checker"], frozenset(), "o")}
    assert len(old) <= 7  # the fixed pool the issue found
