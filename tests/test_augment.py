"""Verifiable instruction augmentation: every emitted example passes the IFEval scorer, by construction.

Property tests run each instruction type alone over a few hundred real ShareGPT replies plus edge
cases (empty reply, code, non-English), and re-score what was emitted through ``score_responses``,
the path ``sftlab eval`` takes. The rest covers determinism, decontamination, holdout types, the
mixing ratio, conflicts, loading the output back, and the command line.
"""

from __future__ import annotations

import json
import random

import pytest
from helpers import U  # tests/ is on sys.path (rootdir-less test modules)

from sftlab import augment as A
from sftlab.data import load_conversations
from sftlab.errors import ConfigError
from sftlab.eval.ifeval import score_responses

N_REAL = 200


def _asst(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


CODE_REPLY = (
    "Here is a function that adds two numbers:\n\n```python\ndef add(a, b):\n\n    return a + b\n```\n\n"
    "Call it as add(1, 2), which returns 3."
)
FRENCH_REPLY = (
    "Bien sûr ! Paris est la capitale de la France. C'est une ville magnifique, connue pour la tour Eiffel, "
    "le musée du Louvre et ses nombreux cafés.\n\nLe meilleur moment pour la visiter est le printemps, quand "
    "les parcs sont en fleurs et que les journées sont douces."
)
CHINESE_REPLY = "北京是中国的首都。它有着悠久的历史和丰富的文化。\n\n每年都有很多游客来这里参观故宫和长城。"
EDGE_CASES: list[list[dict[str, str]]] = [
    [U("Write a function that adds two numbers."), _asst(CODE_REPLY)],
    [U("Parle-moi de Paris."), _asst(FRENCH_REPLY)],
    [U("介绍一下北京。"), _asst(CHINESE_REPLY)],
    [U("Is the sky blue on a clear day?"), _asst("Yes, because air scatters blue light more than red light.")],
    [U("Can pigs fly?"), _asst("No. Pigs have no wings, so they cannot fly.")],
    [U("Draft an email to a landlord about a broken heater."),
     _asst("Dear Mr. Smith,\n\nThe heater in my flat stopped working on March 3, 2023. Could you send someone "
           "to repair it?\n\nBest regards,\n[Your Name]\n[Your Address]")],
    [U("List three fruits."), _asst("Three fruits:\n\n- apple\n- banana\n- cherry")],
    [U("Give me steps to boil an egg."),
     _asst("1. Boil water.\n2. Add the egg.\n3. Wait nine minutes.\n4. Cool it in cold water.")],
    [U("Say hi."), _asst("Hi!")],
]


@pytest.fixture(scope="module")
def real() -> list[list[dict[str, str]]]:
    return load_conversations("sharegpt", max_samples=N_REAL).conversations


@pytest.fixture(scope="module")
def ifeval_file(ifeval_dir) -> str:
    return str(ifeval_dir / "input_data.jsonl")


@pytest.fixture(scope="module")
def ifeval_prompts(ifeval_file) -> list[str]:
    return A.load_ifeval_prompts(ifeval_file)


def _rescore(records: list[dict]) -> dict:
    """Score augmented records with sftlab's IFEval scorer, as if the replies were a model's responses."""
    inputs = [{"key": i, "prompt": r["messages"][-2]["content"], **r["augment"]} for i, r in enumerate(records)]
    # Two records may share a prompt text; the scorer matches by prompt, so keep the first of each.
    seen: dict[str, dict] = {}
    for inp, r in zip(inputs, records, strict=True):
        seen.setdefault(inp["prompt"], {"inp": inp, "response": r["messages"][-1]["content"]})
    return score_responses([v["inp"] for v in seen.values()], {p: v["response"] for p, v in seen.items()})


@pytest.fixture(scope="module")
def per_type(real) -> dict[str, tuple[list[dict], A.AugmentStats]]:
    """Each instruction type alone over the real replies plus the edge cases."""
    out = {}
    for iid in A.CATALOGUE:
        stats = A.AugmentStats()
        emitted = []
        for i, messages in enumerate(real + EDGE_CASES):
            rec = A.augment_one(messages, [iid], random.Random(f"test/{iid}/{i}"), stats)
            if rec is not None:
                emitted.append(rec)
        out[iid] = (emitted, stats)
    return out


# --------------------------------------------------------------------------- properties per type


def test_the_catalogue_covers_every_ifeval_type_with_several_phrasings():
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(A.CATALOGUE) | set(A.LEFT_OUT) == set(INSTRUCTION_DICT)
    assert len(A.CATALOGUE) >= 20
    for entry in A.CATALOGUE.values():
        assert len(entry.phrasings) >= 3, entry.id
        assert entry.kind in ("relabel", "transform")


@pytest.mark.parametrize("iid", sorted(A.CATALOGUE))
def test_every_type_is_exact_by_construction_and_rescored_by_the_scorer(per_type, iid):
    emitted, stats = per_type[iid]
    row = stats.types[iid]
    assert row["emitted"] == len(emitted) >= 1, row
    # Exact by construction: the checker never has to reject what an entry produced.
    assert A.DROP_FAILED_CHECK not in row["dropped"], row
    assert row["attempted"] == len(emitted) + sum(row["dropped"].values())
    for rec in emitted:
        assert rec["augment"]["instruction_id_list"] == [iid]
        assert set(rec["augment"]["kwargs"][0]) <= _checker_args(iid)
    summary = _rescore(emitted)
    assert summary["metrics"]["prompt_level_strict_acc"] == 1.0


def _checker_args(iid: str) -> set[str]:
    import inspect

    from sftlab.eval.ifeval import instruction_registry

    return set(inspect.signature(instruction_registry()[iid].build_description).parameters) - {"self"}


def test_high_yield_types_emit_on_most_real_replies(per_type):
    # Relabelling and appending work on nearly any non-empty reply; a regression would show here first.
    for iid in ("keywords:existence", "keywords:letter_frequency", "length_constraints:number_words",
                "length_constraints:number_sentences", "detectable_content:postscript", "startend:end_checker",
                "detectable_format:title", "detectable_format:json_format", "startend:quotation"):
        emitted, _ = per_type[iid]
        assert len(emitted) >= 0.9 * N_REAL, (iid, len(emitted))


def test_relabelled_replies_are_left_untouched(per_type, real):
    replies = {m[-1]["content"] for m in real + EDGE_CASES}
    for iid, entry in A.CATALOGUE.items():
        if entry.kind == "relabel" and entry.stage == 100:
            for rec in per_type[iid][0]:
                assert rec["messages"][-1]["content"] in replies, iid


def test_transforms_change_the_reply_as_the_instruction_says(per_type):
    for rec in per_type["change_case:english_lowercase"][0]:
        assert rec["messages"][-1]["content"] == rec["messages"][-1]["content"].lower()
    for rec in per_type["punctuation:no_comma"][0]:
        assert "," not in rec["messages"][-1]["content"]
    for rec in per_type["detectable_format:json_format"][0]:
        body = rec["messages"][-1]["content"].removeprefix("```json").removesuffix("```")
        assert isinstance(json.loads(body), dict)
    for rec in per_type["combination:repeat_prompt"][0]:
        request = rec["augment"]["kwargs"][0]["prompt_to_repeat"]
        assert rec["messages"][-1]["content"].startswith(request)
        assert rec["messages"][-2]["content"].strip().startswith(request)
    for rec in per_type["detectable_format:multiple_sections"][0]:
        kw = rec["augment"]["kwargs"][0]
        assert rec["messages"][-1]["content"].startswith(f"{kw['section_spliter']} 1\n")


def test_only_the_last_user_turn_and_reply_change(per_type, real):
    multi = {json.dumps(m[:-2]) for m in real if len(m) > 2}
    checked = 0
    for emitted, _ in per_type.values():
        for rec in emitted:
            if len(rec["messages"]) > 2:
                assert json.dumps(rec["messages"][:-2]) in multi
                checked += 1
    assert checked > 0


# --------------------------------------------------------------------------- edge cases


def test_an_empty_reply_is_never_augmented_and_is_kept_plain():
    conv = [U("Tell me a joke."), _asst("   ")]
    for iid in A.CATALOGUE:
        stats = A.AugmentStats()
        assert A.augment_one(conv, [iid], random.Random(0), stats) is None
        assert stats.types[iid]["dropped"] == {A.DROP_EMPTY: 1}
    records, stats = A.augment_conversations([conv], A.AugmentConfig())
    assert records == [{"id": "conv-0", "messages": conv}]
    assert stats.kept_plain_after_failure == 1 and stats.augmented == 0


def test_code_is_never_recased_or_stripped_of_commas_and_survives_structure_changes(per_type):
    code = "def add(a, b):\n\n    return a + b"
    for iid in ("change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma"):
        stats = A.AugmentStats()
        assert A.augment_one(EDGE_CASES[0], [iid], random.Random(1), stats) is None
        assert set(stats.types[iid]["dropped"]) <= {"reply has code", "commas in code"}
    kept = 0
    for iid in ("length_constraints:number_paragraphs", "detectable_format:multiple_sections",
                "detectable_format:title", "detectable_content:postscript", "startend:end_checker"):
        for rec in per_type[iid][0]:
            if rec["messages"][-2]["content"].startswith("Write a function that adds two numbers."):
                assert code in rec["messages"][-1]["content"], iid
                kept += 1
    assert kept == 5


def test_non_english_replies_get_their_detected_language_and_no_english_case_rule():
    for conv, lang in ((EDGE_CASES[1], "fr"),):
        rec = A.augment_one(conv, ["language:response_language"], random.Random(0))
        assert rec is not None and rec["augment"]["kwargs"] == [{"language": lang}]
        assert "French" in rec["messages"][-2]["content"]
        stats = A.AugmentStats()
        assert A.augment_one(conv, ["change_case:english_lowercase"], random.Random(0), stats) is None
        assert stats.types["change_case:english_lowercase"]["dropped"] == {"reply is not English": 1}
    # langdetect says zh-cn, which IFEval's language list does not hold: skipped, not mislabelled.
    stats = A.AugmentStats()
    assert A.augment_one(EDGE_CASES[2], ["language:response_language"], random.Random(0), stats) is None
    assert stats.types["language:response_language"]["dropped"] == {"language not in IFEval's list": 1}


def test_placeholders_are_natural_slots_not_code_citations_or_links():
    def placeholders(reply: str) -> dict | None:
        stats = A.AugmentStats()
        rec = A.augment_one([U("Write it."), _asst(reply)], ["detectable_content:number_placeholders"],
                            random.Random(0), stats)
        return rec["augment"]["kwargs"][0] if rec else stats.types["detectable_content:number_placeholders"]["dropped"]

    assert placeholders("Use `[SimpleJob]` and see [1] or [the docs](https://x.org).") == {"no placeholder slot": 1}
    assert placeholders("Hello [Your Name], welcome to [company].")["num_placeholders"] in (1, 2)
    rec = A.augment_one([U("Write it."), _asst("Dear Anna,\n\nMail me at a.b@example.com on May 3, 2024.")],
                        ["detectable_content:number_placeholders"], random.Random(0))
    assert rec["messages"][-1]["content"] == "Dear [name],\n\nMail me at [email address] on [date]."


def test_highlights_prefer_labels_and_never_touch_code():
    reply = "Options:\n\n- Cost: low\n- Speed: high\n- Risk: medium\n\n```\nx: 1\n```"
    rec = A.augment_one([U("Compare them."), _asst(reply)], ["detectable_format:number_highlighted_sections"],
                        random.Random(2))
    n = rec["augment"]["kwargs"][0]["num_highlights"]
    out = rec["messages"][-1]["content"]
    assert sum(f"- **{k}**: " in out for k in ("Cost", "Speed", "Risk")) == n
    assert out.endswith("```\nx: 1\n```")


def test_nth_paragraph_rule_needs_prose_paragraphs():
    stats = A.AugmentStats()
    assert A.augment_one(EDGE_CASES[0], ["length_constraints:nth_paragraph_first_word"], random.Random(0), stats) is None
    assert stats.types["length_constraints:nth_paragraph_first_word"]["dropped"] == {"reply has code": 1}
    reply = "The first part.\n\n\n\nSecond part here.\n\nThird part."
    rec = A.augment_one([U("Three parts.")] + [_asst(reply)], ["length_constraints:nth_paragraph_first_word"],
                        random.Random(0))
    kw = rec["augment"]["kwargs"][0]
    assert kw["num_paragraphs"] == 3 and rec["messages"][-1]["content"].count("\n\n") == 2
    assert kw["first_word"] == ["first", "second", "third"][kw["nth_paragraph"] - 1] or kw["first_word"] == "the"


def test_yes_no_replies_become_constrained_responses():
    rec = A.augment_one(EDGE_CASES[3], ["detectable_format:constrained_response"], random.Random(0))
    assert rec["messages"][-1]["content"] == "My answer is yes. Because air scatters blue light more than red light."


def test_existing_list_items_are_counted_exactly_and_numbered_lists_become_bullets():
    rec = A.augment_one(EDGE_CASES[6], ["detectable_format:number_bullet_lists"], random.Random(0))
    assert rec["augment"]["kwargs"] == [{"num_bullets": 3}]
    assert rec["messages"][-1]["content"] == EDGE_CASES[6][1]["content"]
    rec = A.augment_one(EDGE_CASES[7], ["detectable_format:number_bullet_lists"], random.Random(0))
    assert rec["augment"]["kwargs"] == [{"num_bullets": 4}]
    assert rec["messages"][-1]["content"].startswith("* Boil water.\n* Add the egg.")


@pytest.mark.parametrize("actual", [0, 1, 7, 11, 12, 59, 60, 299, 300, 999, 1000, 4321])
def test_thresholds_hold_for_their_relation(actual):
    rng = random.Random(actual)
    for _ in range(50):
        for relation in ("less than", "at least"):
            if relation == "at least" and actual == 0:
                with pytest.raises(A.Skip):
                    A.true_threshold(rng, actual, relation=relation)
                continue
            rel, n = A.true_threshold(rng, actual, relation=relation)
            assert n >= 1
            assert (actual < n) if rel == "less than" else (actual >= n)


# --------------------------------------------------------------------------- the whole pass


@pytest.fixture(scope="module")
def full(real, ifeval_prompts):
    cfg = A.AugmentConfig(seed=3)
    return A.augment_conversations(real, cfg, ifeval_prompts)


def test_full_pass_rescores_perfectly_and_respects_conflicts(full):
    records, stats = full
    augmented = [r for r in records if "augment" in r]
    assert len(augmented) == stats.augmented >= 0.9 * N_REAL
    assert _rescore(augmented)["metrics"]["prompt_level_strict_acc"] == 1.0
    conflict = A.conflicts()
    for r in augmented:
        ids = r["augment"]["instruction_id_list"]
        assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids)
        for a in ids:
            assert not (set(ids) - {a}) & conflict[a], ids
    assert stats.written == len(records) == stats.augmented + stats.plain
    assert sum(stats.instructions_per_example.values()) == stats.augmented
    for row in stats.types.values():
        assert row["attempted"] == row["emitted"] + sum(row["dropped"].values())


def test_no_training_text_shares_an_8gram_with_ifeval(full, ifeval_prompts):
    decon = A.Decontaminator(ifeval_prompts, 8)
    for r in full[0]:
        assert not decon.conversation_hits(r["messages"])


def test_same_seed_same_bytes_other_seed_other_output(real, full, ifeval_prompts):
    again, _ = A.augment_conversations(real, A.AugmentConfig(seed=3), ifeval_prompts)
    assert A.records_to_jsonl(again) == A.records_to_jsonl(full[0])
    other, _ = A.augment_conversations(real[:40], A.AugmentConfig(seed=4))
    assert A.records_to_jsonl(other) != A.records_to_jsonl(full[0][:40])


def test_decontamination_drops_a_planted_ifeval_prompt(real, ifeval_prompts, ifeval_file):
    planted = ifeval_prompts[17]
    # Case and punctuation changes do not hide it, nor does text around it.
    disguised = "Hi there!\n" + planted.upper().replace(",", " ;") + "\nThanks."
    near_miss = " ".join(A.words_of(planted)[:7])  # 7 words in a row: not an 8-gram match
    convs = [real[0], [U(disguised), _asst("Sure.")], [U(near_miss), _asst("Sure.")], real[1]]
    records, stats = A.augment_conversations(convs, A.AugmentConfig(ifeval_data=ifeval_file))
    assert stats.decontaminated == 1
    assert [r["id"] for r in records] == ["conv-0", "conv-2", "conv-3"]
    assert not any(planted[:40].lower() in json.dumps(r).lower() for r in records)
    # Turned off, or with no IFEval inputs, nothing is dropped.
    _, off = A.augment_conversations(convs, A.AugmentConfig(ifeval_data=ifeval_file, decontaminate=False))
    assert off.decontaminated == 0 and off.decontamination == "off"


def test_decontamination_against_ifbench_drops_its_prompts_too(real, ifeval_file, ifbench_dir):
    """``ifbench_data``: IFBench's prompts are decontaminated against beside IFEval's; without it they are not."""
    ifbench_file = str(ifbench_dir / "IFBench_test.jsonl")
    planted = json.loads((ifbench_dir / "IFBench_test.jsonl").read_text(encoding="utf-8").splitlines()[5])["prompt"]
    convs = [real[0], [U("Please help.\n" + planted), _asst("Sure.")], real[1]]
    records, stats = A.augment_conversations(convs, A.AugmentConfig(ifeval_data=ifeval_file, ifbench_data=ifbench_file))
    assert stats.decontaminated == 1 and [r["id"] for r in records] == ["conv-0", "conv-2"]
    assert stats.decontamination == "8-gram overlap with 541 IFEval and 300 IFBench prompts"
    _, without = A.augment_conversations(convs, A.AugmentConfig(ifeval_data=ifeval_file))
    assert without.decontaminated == 0 and without.decontamination == "8-gram overlap with 541 IFEval prompts"
    # A config without the key keeps the cache key it had before the key existed; with it, another key.
    assert "ifbench_data" not in A.AugmentConfig(ifeval_data=ifeval_file).to_dict()
    assert A.AugmentConfig(ifbench_data=ifbench_file).cache_info()["ifbench_file"]


def test_run_and_train_point_augmentation_at_the_ifbench_prompts_they_evaluate_on():
    from sftlab.experiment.stages import EvalSettings, decontaminate_against
    from sftlab.train.config import augment_decontaminated

    assert augment_decontaminated(True, "ife.jsonl") == {"ifeval_data": "ife.jsonl"}
    assert augment_decontaminated({"seed": 1}, "ife.jsonl", "ifb.jsonl") == {
        "seed": 1, "ifeval_data": "ife.jsonl", "ifbench_data": "ifb.jsonl"}
    assert augment_decontaminated({"ifbench_data": "mine.jsonl"}, "ife.jsonl", "ifb.jsonl")["ifbench_data"] == "mine.jsonl"
    assert augment_decontaminated({"decontaminate": False}, "ife.jsonl", "ifb.jsonl") == {"decontaminate": False}
    both = EvalSettings.from_dict({"ifeval_data": "ife.jsonl", "benchmarks": ["ifeval", "ifbench"],
                                   "ifbench": {"data": "ifb.jsonl"}})
    assert decontaminate_against({"augment": {"seed": 1}}, both)["augment"]["ifbench_data"] == "ifb.jsonl"
    only = EvalSettings.from_dict({"ifeval_data": "ife.jsonl"})
    assert "ifbench_data" not in decontaminate_against({"augment": {"seed": 1}}, only)["augment"]


def test_holdout_types_never_appear(real):
    held = ["change_case", "startend:quotation", "no_comma"]
    cfg = A.AugmentConfig(holdout_types=held, seed=5)
    records, stats = A.augment_conversations(real[:120], cfg)
    banned = set(A.resolve_types(held))
    assert banned == {"change_case:capital_word_frequency", "change_case:english_capital",
                      "change_case:english_lowercase", "startend:quotation", "punctuation:no_comma"}
    used = {i for r in records if "augment" in r for i in r["augment"]["instruction_id_list"]}
    assert used and not used & banned
    assert not set(stats.types) & banned


def test_types_restrict_the_catalogue_and_ratio_mixes_plain_conversations(real):
    records, stats = A.augment_conversations(real[:100], A.AugmentConfig(types=["title", "postscript"], ratio=0.5))
    used = {i for r in records if "augment" in r for i in r["augment"]["instruction_id_list"]}
    assert used == {"detectable_format:title", "detectable_content:postscript"}
    assert 25 <= stats.augmented <= 75 and stats.chosen_plain == 100 - stats.augmented - stats.kept_plain_after_failure
    plain = [r for r in records if "augment" not in r]
    assert len(plain) == stats.plain
    originals = {json.dumps(m) for m in real[:100]}
    assert all(json.dumps(r["messages"]) in originals for r in plain)
    none, _ = A.augment_conversations(real[:10], A.AugmentConfig(ratio=0.0))
    assert all("augment" not in r for r in none)


def test_type_weights_shift_the_draw_and_multiply(real):
    cfg = A.AugmentConfig(type_weights={"transform": 3, "no_comma": 2}, holdout_types=["json_format"])
    weights = dict(zip(cfg.active_types(), cfg.draw_weights(), strict=True))
    assert weights["punctuation:no_comma"] == 6.0 and weights["detectable_format:title"] == 3.0
    assert weights["keywords:existence"] == 1.0 and "detectable_format:json_format" not in weights
    assert A.AugmentConfig().draw_weights() is None

    def drawn(c):
        records, _ = A.augment_conversations(real[:150], c)
        ids = [i for r in records if "augment" in r for i in r["augment"]["instruction_id_list"]]
        return sum(A.CATALOGUE[i].kind == "relabel" for i in ids) / len(ids), records

    share_uniform, _ = drawn(A.AugmentConfig(seed=3))
    share_relabel, records = drawn(A.AugmentConfig(seed=3, type_weights={"relabel": 10}))
    share_transform, _ = drawn(A.AugmentConfig(seed=3, type_weights={"transform": 10}))
    assert share_transform < share_uniform - 0.15 and share_relabel > share_uniform + 0.15
    aug = [r for r in records if "augment" in r]
    assert _rescore(aug)["metrics"]["prompt_level_strict_acc"] == 1.0  # weights change the mix, not the checks
    # Unset weights keep the uniform draw (the bytes written before weights existed).
    again, _ = A.augment_conversations(real[:20], A.AugmentConfig(seed=3))
    assert again == A.augment_conversations(real[:20], A.AugmentConfig(seed=3, type_weights=None))[0]


@pytest.mark.parametrize("reply, expected", [
    ("Sure, here's a rap that doesn't include the keywords \"Yo\", \"check\", and \"peace\":\n\nI'm on the mic "
     "tonight and the crowd is loud", "I'm on the mic tonight and the crowd is loud"),
    ("Certainly! I'd be happy to help. Here is the list:\n- one thing here\n- two things there",
     "- one thing here\n- two things there"),
    ("Of course! I'd be happy to help. The main difference is that one of them is bigger.",
     "The main difference is that one of them is bigger."),
    ("Here are a few ideas for blog topics:\n\n1. The benefits of a full-service agency", "1. The benefits of a "
     "full-service agency"),
    ("Sure, the capital of France is Paris. It is a large city in Europe.", None),  # content, not an opening
    ("Of course.", None),  # nothing would be left
    ("Yes, it is feasible to tune the system dynamically for each installation.", None),  # an answer
    ("Here is why: the sky scatters blue light more than red light, all day.", None),  # no line of its own
])
def test_strip_opener_removes_only_a_chatty_opening(reply, expected):
    assert A.strip_opener(reply) == expected


def test_strip_openers_changes_only_the_openings_and_counts_them(real):
    plain, plain_stats = A.augment_conversations(real[:120], A.AugmentConfig(seed=5))
    records, stats = A.augment_conversations(real[:120], A.AugmentConfig(seed=5, strip_openers=True))
    openers = sum(A.strip_opener(c[-1]["content"]) is not None for c in real[:120])
    assert stats.openers_stripped == openers > 0 and plain_stats.openers_stripped == 0
    assert "chatty openings removed from replies" in stats.format()
    for r in records:
        assert not r["messages"][-1]["content"].lower().startswith(("sure, here", "sure! here", "certainly!"))
    assert _rescore([r for r in records if "augment" in r])["metrics"]["prompt_level_strict_acc"] == 1.0
    # Conversations without an opening draw exactly as before (each has its own seeded generator).
    untouched = [i for i, c in enumerate(real[:120]) if A.strip_opener(c[-1]["content"]) is None]
    assert all(records[i] == plain[i] for i in untouched)
    with pytest.raises(ConfigError, match="strip_openers must be true or false"):
        A.AugmentConfig(strip_openers="yes")


def test_config_errors_are_one_line_with_suggestions():
    with pytest.raises(ConfigError, match="unknown instruction type 'no_coma' in types; did you mean 'no_comma'"):
        A.AugmentConfig(types=["no_coma"])
    with pytest.raises(ConfigError, match="in both types and holdout_types"):
        A.AugmentConfig(types=["title"], holdout_types=["detectable_format:title"])
    with pytest.raises(ConfigError, match="max_instructions must be 1, 2 or 3"):
        A.AugmentConfig(max_instructions=4)
    with pytest.raises(ConfigError, match="ratio must be a number from 0 to 1"):
        A.AugmentConfig(ratio=1.5)
    with pytest.raises(ConfigError, match="type_weights: 'title' needs a positive number, got 0"):
        A.AugmentConfig(type_weights={"title": 0})
    with pytest.raises(ConfigError, match="type_weights: 'relabel' needs a positive number, got inf"):
        A.AugmentConfig(type_weights={"relabel": float("inf")})
    with pytest.raises(ConfigError, match="unknown instruction type 'titel' in type_weights; did you mean 'title'"):
        A.AugmentConfig(type_weights={"titel": 2})
    with pytest.raises(ConfigError, match="type_weights must be a mapping"):
        A.AugmentConfig(type_weights=["title"])
    with pytest.raises(ConfigError, match="unknown augment key 'holdout'; did you mean 'holdout_types'"):
        A.AugmentConfig.from_dict({"holdout": ["title"]})
    cfg = A.AugmentConfig.from_dict({"types": "title,no_comma", "seed": 2})
    assert cfg.active_types() == ["detectable_format:title", "punctuation:no_comma"]
    assert cfg.to_dict()["version"] == A.AUGMENT_VERSION


def test_augment_loaded_is_the_one_call_for_training(ifeval_file):
    loaded = load_conversations("sharegpt", max_samples=30)
    loaded.conversations.insert(3, [U(A.load_ifeval_prompts(ifeval_file)[0]), _asst("Sure.")])
    loaded.ids.insert(3, "planted")
    cfg = A.AugmentConfig.from_dict({"ifeval_data": ifeval_file, "holdout_types": ["title"], "seed": 1})
    stats = A.augment_loaded(loaded, cfg)
    assert stats.decontaminated == 1 and "planted" not in loaded.ids
    assert len(loaded.conversations) == len(loaded.ids) == 30
    assert loaded.stats["augment"]["augmented"] == stats.augmented > 0
    assert loaded.stats["augment"]["config"]["holdout_types"] == ["title"]
    before = load_conversations("sharegpt", max_samples=30).conversations
    for b, a in zip(before, loaded.conversations, strict=True):  # same order; only the last round changes
        assert a[:-2] == b[:-2] and a[-2]["content"].startswith(b[-2]["content"].rstrip())


def test_output_loads_back_through_sftlab_data(full, tmp_path):
    path = tmp_path / "aug.jsonl"
    path.write_text(A.records_to_jsonl(full[0]), encoding="utf-8")
    loaded = load_conversations(str(path))
    assert loaded.conversations == [r["messages"] for r in full[0]]
    assert loaded.ids == [r["id"] for r in full[0]]


# --------------------------------------------------------------------------- command line


def test_cli_writes_jsonl_and_stats_deterministically(cli, tmp_path, ifeval_file):
    out = tmp_path / "aug.jsonl"
    args = ("augment", "--data", "sharegpt", "--max-samples", "60", "--output", str(out), "--seed", "7",
            "--max-instructions", "2", "--ratio", "0.8", "--holdout-types", "json_format",
            "--ifeval-data", ifeval_file, "--no-progress")
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert "instruction type" in p.stdout and "dropped by decontamination" in p.stdout
    lines = out.read_text(encoding="utf-8").splitlines()  # U+2028 in a reply is escaped: one record a line
    records = [json.loads(line) for line in lines]
    assert len(records) == 60 and all(set(r) <= {"id", "messages", "augment"} for r in records)
    aug = [r for r in records if "augment" in r]
    assert aug and all(1 <= len(r["augment"]["instruction_id_list"]) <= 2 for r in aug)
    assert not any("detectable_format:json_format" in r["augment"]["instruction_id_list"] for r in aug)
    stats = json.loads((tmp_path / "aug.stats.json").read_text(encoding="utf-8"))
    assert stats["augmented"] == len(aug) and stats["written"] == 60 and stats["plain"] == 60 - len(aug)
    assert stats["config"]["seed"] == 7 and stats["config"]["holdout_types"] == ["json_format"]
    assert "8-gram" in stats["decontamination"]
    # What was written is scored perfectly by the scorer `sftlab eval` uses.
    assert _rescore(aug)["metrics"]["prompt_level_strict_acc"] == 1.0
    first = out.read_bytes()
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == first
    p = cli(*args, "--strip-openers")
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp_path / "aug.stats.json").read_text(encoding="utf-8"))
    assert stats["config"]["strip_openers"] is True and stats["openers_stripped"] > 0
    assert f"chatty openings removed from replies: {stats['openers_stripped']}" in p.stdout


@pytest.mark.parametrize("extra, message", [
    (("--types", "no_coma"), "unknown instruction type 'no_coma' in types; did you mean 'no_comma'?"),
    (("--holdout-types", "titel"), "did you mean 'title'?"),
    (("--ratio", "2"), "argument --ratio: expected a number from 0 to 1, got 2"),
    (("--type-weights", "transform"), "argument --type-weights: expected NAME=WEIGHT pairs"),
    (("--type-weights", "titel=2"), "unknown instruction type 'titel' in type_weights; did you mean 'title'?"),
    (("--max-instructions", "4"), "argument --max-instructions: invalid choice"),
    (("--no-decontaminate",), "--no-decontaminate has no effect without --ifeval-data or --ifbench-data"),
    (("--ifbench-data", "/nonexistent/ifbench.jsonl"), "IFBench input file not found"),
    (("--ifeval-data", "/nonexistent/ifeval.jsonl"), "IFEval input file not found"),
    (("--output", "aug.json"), "--output must be a .jsonl file"),
    (("--hygiene", "cutoff"), "unknown augment hygiene rule 'cutoff'; did you mean 'cut_off'?"),
    (("--phrasing", "v3"), "argument --phrasing: invalid choice"),
])
def test_cli_bad_options_are_one_line_and_exit_2(cli, tmp_path, extra, message):
    args = ["augment", "--data", "sharegpt", "--max-samples", "5", "--output", str(tmp_path / "a.jsonl"), *extra]
    p = cli(*args, cwd=tmp_path)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], p.stderr
    assert not (tmp_path / "a.jsonl").exists()


def test_augment_cli_defaults_are_the_augment_config_defaults():
    """`sftlab augment` without options augments exactly as an AugmentConfig left at its defaults
    (and its help states them), so the command and a config's `augment:` block cannot drift apart."""
    from sftlab.cli import build_parser

    parser = next(a for a in build_parser("augment")._actions if a.dest == "command").choices["augment"]
    args = parser.parse_args(["--data", "d.jsonl", "--output", "o.jsonl"])
    base = A.AugmentConfig()
    for name in ("types", "holdout_types", "max_instructions", "ratio", "type_weights", "seed", "ngram",
                 "ifeval_data", "strip_openers", "hygiene", "preserve_content", "phrasing", "own_types", "binding"):
        assert getattr(args, name) == getattr(base, name), name
    assert args.no_decontaminate is not base.decontaminate
    choices = next(a for a in parser._actions if a.dest == "max_instructions").choices
    assert tuple(choices) == A.config.INSTRUCTION_COUNTS == (1, 2, 3)
    help_text = " ".join(parser.format_help().split())
    assert f"(default {base.ngram})" in help_text and f"the augment setting's, {base.reply_max_new_tokens})" in help_text
