"""sftlab's own constraint types (``sftlab:*``): at least 15, none of IFBench's, each with its own
checker that accepts what its entry builds and rejects what breaks it."""

from __future__ import annotations

import json
import random

import pytest
from helpers import U

from sftlab import augment as A
from sftlab.augment import checkers as C
from sftlab.data import load_conversations
from sftlab.errors import ConfigError


def _asst(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


EXTRA = [
    [U("Compare Python and Go in a table."),
     _asst("Here is a comparison.\n\n| Language | Typing | Speed |\n|---|---|---|\n| Python | dynamic | slower |\n"
           "| Go | static | faster |\n\nPick the one your team knows.")],
    [U("Write a Python function to reverse a string."),
     _asst("Use slicing.\n\n```\ndef reverse(s):\n    return s[::-1]\n```\n\nIt returns a new string.")],
    [U("Plan my week."), _asst("**Monday**\n\nGym and groceries.\n\n**Tuesday**\n\nWork late and read.\n\n"
                              "**Wednesday**\n\nCall mum in the evening.")],
    [U("Give me tips for sleeping better."),
     _asst("Sleep matters for health.\n\n- Keep a fixed schedule every day.\n- Avoid screens an hour before bed.\n"
           "- Keep the bedroom cool and dark.\n\nSmall changes add up over a few weeks.\n\n"
           "In short, regular habits help most.")],
    [U("Explain photosynthesis simply."),
     _asst("Plants make food from light. They take in carbon dioxide and water.\n\nChlorophyll captures the energy "
           "of sunlight. That energy splits water and builds sugar.\n\nOxygen is released as a by-product. Animals "
           "breathe it in.")],
]


@pytest.fixture(scope="module")
def convs() -> list[list[dict[str, str]]]:
    return load_conversations("sharegpt", max_samples=150, max_rounds=1).conversations + EXTRA


@pytest.fixture(scope="module")
def ifbench_ids(shared_dir) -> set[str]:
    ids = set()
    for line in (shared_dir / "ifbench" / "IFBench_test.jsonl").open(encoding="utf-8"):
        ids.update(json.loads(line)["instruction_id_list"])
    return ids


def test_at_least_fifteen_own_types_none_from_ifeval_or_ifbench(ifbench_ids):
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT as IFEVAL

    from sftlab.eval.ifeval import ensure_punkt

    ensure_punkt()
    from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT as IFBENCH

    assert len(ifbench_ids) == 58 and ifbench_ids <= set(IFBENCH)
    own = set(A.OWN_CATALOGUE)
    assert len(own) >= 15 and own == set(C.OWN_CHECKERS)
    assert all(i.startswith("sftlab:") for i in own)
    shorts = {i.split(":", 1)[1] for i in own}
    for other in (set(IFBENCH), set(IFEVAL)):
        assert not own & other
        assert not shorts & {i.split(":", 1)[1] for i in other}  # no IFBench/IFEval type under another category
    # Checkers are sftlab's own functions, not IFBench's or IFEval's checker classes.
    theirs = set(IFBENCH.values()) | set(IFEVAL.values())
    for fn in C.OWN_CHECKERS.values():
        assert fn.__module__ == "sftlab.augment.checkers" and fn not in theirs


@pytest.mark.parametrize("iid", sorted(A.OWN_CATALOGUE))
def test_every_own_type_emits_and_is_verified_by_its_checker(convs, iid):
    stats = A.AugmentStats()
    emitted = []
    for k, m in enumerate(convs):
        rec = A.augment_one(m, [iid], random.Random(f"own/{iid}/{k}"), stats)
        if rec is not None:
            emitted.append(rec)
    row = stats.types[iid]
    assert emitted, row
    assert A.DROP_FAILED_CHECK not in row["dropped"], row
    for rec in emitted:
        kw = rec["augment"]["kwargs"][0]
        assert C.check_own(iid, kw, rec["messages"][-1]["content"])
        assert not C.check_own(iid, kw, "")


NEGATIVES = {
    "sftlab:numbered_items": ({"num_items": 3}, "1. a\n2. b"),
    "sftlab:table_columns": ({"num_columns": 3}, "| a | b |\n|---|---|\n| 1 | 2 |"),
    "sftlab:code_language": ({"language": "python"}, "```\nprint(1)\n```"),
    "sftlab:heading_count": ({"num_headings": 2}, "# One\n\ntext"),
    "sftlab:no_first_person": ({}, "I think so."),
    "sftlab:opening_word": ({"first_word": "yes"}, "No, it is not."),
    "sftlab:max_sentence_words": ({"max_words": 4}, "This sentence has more than four words."),
    "sftlab:plain_text": ({}, "Some **bold** text."),
    "sftlab:tldr_first": ({}, "Details first.\n\nTL;DR: too late now"),
    "sftlab:ends_with_question": ({}, "Is it? It is."),
    "sftlab:max_paragraph_words": ({"max_words": 3}, "One two three four.\n\nFive."),
    "sftlab:quote_request_first": ({"quoted": "Plan my week."}, "> Plan my day.\n\nSure."),
    "sftlab:takeaways_end": ({"heading": "Key takeaways", "num_items": 2}, "Text.\n\nKey takeaways:\n- one"),
    "sftlab:no_parentheses": ({}, "It works (mostly)."),
    "sftlab:max_lines": ({"max_lines": 1}, "one\ntwo"),
    "sftlab:closing_paragraph": ({"opener": "In short"}, "Body.\n\nTo conclude, yes."),
    "sftlab:max_chars": ({"max_chars": 5}, "too long a reply"),
    "sftlab:no_questions": ({}, "Why not?"),
}


@pytest.mark.parametrize("iid", sorted(A.OWN_CATALOGUE))
def test_every_checker_rejects_a_reply_that_breaks_it(iid):
    kwargs, bad = NEGATIVES[iid]
    assert not C.check_own(iid, kwargs, bad)


def test_own_types_in_types_and_the_default_pool():
    assert A.resolve_types(["sftlab"]) == list(A.OWN_CATALOGUE)
    assert A.resolve_types(["tldr_first", "no_comma"]) == ["sftlab:tldr_first", "punctuation:no_comma"]
    assert A.AugmentConfig().active_types() == list(A.CATALOGUE)  # off by default: the old pool
    assert A.AugmentConfig(own_types=True).active_types() == [*A.CATALOGUE, *A.OWN_CATALOGUE]
    assert A.AugmentConfig(types=["sftlab:max_lines"]).active_types() == ["sftlab:max_lines"]
    with pytest.raises(ConfigError, match="did you mean 'tldr_first'"):
        A.AugmentConfig(types=["tldr_frist"])
    with pytest.raises(ConfigError, match="own_types must be true or false"):
        A.AugmentConfig(own_types="yes")


def test_conflicting_own_types_are_never_drawn_together():
    conflict = A.conflicts()
    assert "sftlab:tldr_first" in conflict["detectable_format:title"]
    assert "sftlab:ends_with_question" in conflict["sftlab:no_questions"]
    assert "combination:two_responses" in conflict["sftlab:plain_text"]  # removing ** would eat the ******
    pool = list(A.ALL_TYPES)
    for seed in range(300):
        from sftlab.augment.pipeline import _draw_types

        picked = _draw_types(random.Random(seed), pool, 3, conflict)
        assert all(b not in conflict.get(a, {a}) for a in picked for b in picked if a != b)


def test_mixed_ifeval_and_own_examples_pass_both_scorers(convs):
    cfg = A.AugmentConfig(own_types=True, preserve_content=True, binding=True, phrasing="v2", seed=3)
    records, stats = A.augment_conversations(convs, cfg)
    # Exact by construction with every switch on: no instruction is ever rejected by its checker.
    assert not any(A.DROP_FAILED_CHECK in row["dropped"] for row in stats.types.values()), stats.types
    mixed = [r for r in records if "augment" in r and len({i.startswith("sftlab:") for i in
                                                           r["augment"]["instruction_id_list"]}) == 2]
    assert mixed
    for r in records:
        if "augment" in r:
            a = r["augment"]
            assert all(A.verify(r["messages"][-2]["content"], r["messages"][-1]["content"],
                                a["instruction_id_list"], a["kwargs"]))
