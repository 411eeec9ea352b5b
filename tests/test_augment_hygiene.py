"""Hygiene (``augment.hygiene``): each rule drops real ShareGPT conversations it should, keeps the
rest, is a switch, and is counted in the summary, the stats file and the report's data section.

Real records: the first 7,000 of the bundled ShareGPT V3, first rounds only (about 2 s to read).
"""

from __future__ import annotations

import json

import pytest
from helpers import U

from sftlab import augment as A
from sftlab.augment import hygiene as H
from sftlab.data.normalize import normalize_messages
from sftlab.data.readers import iter_records
from sftlab.errors import ConfigError

N_RECORDS = 7000


@pytest.fixture(scope="module")
def real() -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for k, rec in enumerate(iter_records("sharegpt", [])):
        if k >= N_RECORDS:
            break
        try:
            m = normalize_messages(rec.data["conversations"], max_rounds=1)
        except Exception:  # malformed turns are the reader's business, not hygiene's
            continue
        if m:
            out[rec.data["id"]] = m
    return out


def _flagged(real, rule: str) -> set[str]:
    return {cid for cid, m in real.items() if H.hygiene_reason(cid, m, (rule,)) == rule}


def test_invisible_empty_replies_are_found_and_only_those(real):
    hits = _flagged(real, H.INVISIBLE_EMPTY)
    assert {"UNp4cvb_0", "fUvHlQF_0"} <= hits  # replies that are a lone U+200B
    for cid in hits:
        assert not H.visible(real[cid][-1]["content"])
    assert real["UNp4cvb_0"][-1]["content"].strip() == "\u200b"  # what str.strip() keeps
    assert len(hits) < 0.01 * len(real)
    for text in ("\ufeff", "\u00a0\u00a0", "\u200b \u200c\n\u2060"):
        assert H.hygiene_reason("x", [U("Hi"), {"role": "assistant", "content": text}], (H.INVISIBLE_EMPTY,))
    assert H.hygiene_reason("x", [U("Hi"), {"role": "assistant", "content": "\u200bOK"}], (H.INVISIBLE_EMPTY,)) is None


def test_cut_off_replies_are_found_in_real_data(real):
    hits = _flagged(real, H.CUT_OFF)
    assert {"JBpeXcJ_0", "nKWAc8s_0", "eEowLj1_2"} <= hits
    assert real["JBpeXcJ_0"][-1]["content"].rstrip().endswith("thrive in the")
    assert 0.01 * len(real) < len(hits) < 0.1 * len(real)
    # Complete layouts that end without a full stop are kept.
    for ending in ("Three fruits:\n\n- apple\n- banana\n- cherry", "| a | b |\n|---|---|\n| 1 | 2 |",
                   "Best regards,\nAnna", "It is done 🎉", "北京是中国的首都", "```python\nprint(1)\n```",
                   "A sentence that ends properly."):
        assert not H.is_cut_off(ending), ending
    for cut in ("Here is the code:\n```python\ndef f(x):\n    return", "The first reason is that the market and",
                "We walked along the river until we reached the old bridge where the"):
        assert H.is_cut_off(cut), cut


def test_error_artifacts_are_found_in_real_data(real):
    hits = _flagged(real, H.ERROR_ARTIFACT)
    assert {"8v18eWl_35", "mUWTGPl_6", "0qXa9NO_0"} <= hits
    assert real["8v18eWl_35"][-1]["content"] == "network error"
    for cid in hits:
        assert len(real[cid][-1]["content"]) < 400
    assert not H.is_error_artifact("A network error usually means the client lost its connection. Check the "
                                   "cable, then restart the router.\n\nIf that fails, call your provider.")


def test_later_parts_of_split_conversations_are_found(real):
    hits = _flagged(real, H.SPLIT_PART)
    assert "kNi3QzP_43" in hits and "8v18eWl_35" in hits
    assert all(not cid.endswith("_0") for cid in hits)
    assert not any(cid.endswith("_0") for cid in hits) and any(cid.endswith("_0") for cid in real)
    assert H.hygiene_reason("conv-3", real["kNi3QzP_43"], (H.SPLIT_PART,)) is None  # not a ShareGPT split id


def test_prompts_that_need_missing_context_are_found(real):
    hits = _flagged(real, H.CONTINUATION)
    assert {"AIypHjO_0", "jK0Og8r_0", "0D4yXSQ_0", "vhYRn7u_0"} <= hits  # "please continue", "continue", ...
    assert len(hits) < 0.06 * len(real)
    for ok in ("Continue the story of Ana, a pilot who flies over the Andes at night and meets a condor that "
               "talks, in the style of a fairy tale for children", "More people cycle in Amsterdam than in Paris: why?",
               "Here is my essay.\n\nMy essay text goes on for a while.\n\nImprove the above text."):
        assert not H.depends_on_missing_context(ok), ok
    for bad in ("continue", "Please go on.", "I don't think that's correct", "繼續", "rewrite your previous answer"):
        assert H.depends_on_missing_context(bad), bad


def test_duplicate_prompts_collapse_to_the_first(real):
    convs = [m for cid, m in real.items() if cid.endswith("_0")][:1500]
    distinct = {H.prompt_key(m) for m in convs}
    assert len(distinct) < len(convs)  # real data repeats prompts ("hi", "continue")
    plain = A.AugmentConfig(ratio=0.0)
    records, stats = A.augment_conversations(convs, A.AugmentConfig(ratio=0.0, hygiene=[H.DUPLICATE_PROMPT]))
    keys = [H.prompt_key(r["messages"]) for r in records]
    assert len(keys) == len(set(keys)) == len(distinct)
    assert stats.hygiene == {H.DUPLICATE_PROMPT: len(convs) - len(distinct)}
    twice = [U("Hi!"), {"role": "assistant", "content": "Hello."}], [U("hi"), {"role": "assistant", "content": "Hey."}]
    records, stats = A.augment_conversations(list(twice), A.AugmentConfig(ratio=0.0, hygiene=[H.DUPLICATE_PROMPT]))
    assert [r["id"] for r in records] == ["conv-0"] and stats.hygiene == {H.DUPLICATE_PROMPT: 1}
    records, _ = A.augment_conversations(list(twice), plain)
    assert len(records) == 2


@pytest.mark.parametrize("rule", [r for r in H.HYGIENE_RULES if r != H.DUPLICATE_PROMPT])
def test_each_rule_is_a_switch_and_counted(real, rule):
    hits = sorted(_flagged(real, rule))[:3]
    assert hits, rule
    keep = "QWJhYvA_0"
    ids = [*hits, keep]
    convs = [real[c] for c in ids]
    off, s_off = A.augment_conversations(convs, A.AugmentConfig(ratio=0.0), ids=ids)
    assert len(off) == len(ids) and not s_off.hygiene
    assert "hygiene" not in s_off.to_dict() and "hygiene_dropped" not in s_off.to_dict()  # stats as before
    on, s_on = A.augment_conversations(convs, A.AugmentConfig(ratio=0.0, hygiene=[rule]), ids=ids)
    assert [r["id"] for r in on] == [keep]
    assert s_on.hygiene == {rule: len(hits)} and s_on.to_dict()["hygiene_dropped"] == len(hits)
    assert f"dropped by hygiene: {rule} {len(hits)} ({H.REASONS[rule]})" in s_on.format()


def test_hygiene_setting_is_validated():
    assert A.AugmentConfig(hygiene="all").hygiene == list(H.HYGIENE_RULES)
    assert A.AugmentConfig(hygiene="cut_off,split_part").hygiene == ["cut_off", "split_part"]
    with pytest.raises(ConfigError, match="unknown augment hygiene rule 'cutoff'; did you mean 'cut_off'"):
        A.AugmentConfig(hygiene=["cutoff"])
    # Off by default, and then absent from the settings that key caches: old configs keep their cache.
    assert "hygiene" not in A.AugmentConfig().to_dict()
    assert A.AugmentConfig(hygiene="all").to_dict()["hygiene"] == list(H.HYGIENE_RULES)


@pytest.mark.integration
def test_cli_hygiene_counts_reach_the_stats_file(cli, tmp_path):
    out = tmp_path / "h.jsonl"
    p = cli("augment", "--data", "sharegpt", "--max-samples", "80", "--max-rounds", "1", "--output", str(out),
            "--hygiene", "all", "--ratio", "0", "--no-progress")
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp_path / "h.stats.json").read_text(encoding="utf-8"))
    assert stats["hygiene"].get("split_part", 0) > 0 and stats["config"]["hygiene"] == list(H.HYGIENE_RULES)
    assert stats["written"] == 80 - stats["hygiene_dropped"] == len(out.read_text(encoding="utf-8").splitlines())
    assert "dropped by hygiene: " in p.stdout and "by hygiene" in p.stdout


def test_report_data_section_gives_hygiene_counts_and_switches(real):
    from sftlab.experiment.typesplit import TypeSplit
    from sftlab.report.data import _augment_blocks, constraints_sentence

    ids = [cid for cid in real][:120]
    cfg = A.AugmentConfig(hygiene="all", binding=True, phrasing="v2", own_types=True, seed=1)
    _, stats = A.augment_conversations([real[c] for c in ids], cfg, ids=ids)
    aug = {"config": cfg.to_dict(), **stats.to_dict()}
    split = TypeSplit(tuple(cfg.active_types()), ())
    blocks = _augment_blocks(aug, split)
    lines = blocks[0].items
    hyg = next(x for x in lines if x.startswith("Hygiene ("))
    assert f"{stats.hygiene_dropped} conversations dropped" in hyg
    for rule, n in stats.hygiene.items():
        assert f"{rule} {n} ({H.REASONS[rule]})" in hyg
    assert "Construction switches on: own_types, binding, phrasing v2." in lines
    sentence = constraints_sentence(split, {"augment": aug})
    assert " IFEval and " in sentence and "sftlab's own types by sftlab's checkers" in sentence
    # The demo's settings: no hygiene line, no switches line, the sentence as it always read.
    plain_cfg = A.AugmentConfig(seed=1)
    _, st = A.augment_conversations([real[c] for c in ids[:20]], plain_cfg, ids=ids[:20])
    old = {"config": plain_cfg.to_dict(), **st.to_dict()}
    items = _augment_blocks(old, TypeSplit(tuple(plain_cfg.active_types()), ()))[0].items
    assert not any(x.startswith(("Hygiene (", "Construction switches")) for x in items)
    assert " IFEval instruction types (of " in constraints_sentence(TypeSplit(tuple(plain_cfg.active_types()), ()),
                                                                    {"augment": old})
