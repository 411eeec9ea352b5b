"""The report's data section, the trained/held-out split of section 7 and section 6's paired errors.

Fabricated verdicts with a known answer (six prompts, three groups of instruction types) and
training outputs written the way ``sftlab train`` writes them: the resolved ``sftlab_config.yaml``
with an ``augment:`` block, ``train_summary.json`` and the ``stats.json`` that real preprocessing
writes into the output directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from sftlab.experiment.typesplit import type_split
from sftlab.report import SECTION_TITLES, write_report

NO_COMMA = "punctuation:no_comma"
TITLE = "detectable_format:title"
N_WORDS = "length_constraints:number_words"
CAPITAL = "change_case:english_capital"
QUOTATION = "startend:quotation"
AUGMENT = {"types": ["no_comma", "title", "number_words"], "holdout_types": ["english_capital"],
           "max_instructions": 2, "ratio": 1.0, "seed": 1, "ngram": 8}
# prompt -> (ids, strict baseline, strict fine-tuned, loose baseline, loose fine-tuned)
VERDICTS = {
    "Write a haiku about rain without commas.": ([NO_COMMA], [0], [1], [1], [1]),
    "Describe a cat, no commas, in capital letters.": ([NO_COMMA, CAPITAL], [0, 1], [1, 0], [1, 1], [1, 0]),
    "Give a poem a title in double angular brackets.": ([TITLE], [1], [1], [1], [1]),
    "Answer in English capital letters only.": ([CAPITAL], [0], [0], [0], [1]),
    "Wrap your whole answer in double quotes.": ([QUOTATION], [1], [0], [1], [0]),
    "Explain tides in 40 words or more with a title.": ([N_WORDS, TITLE], [0, 0], [1, 1], [0, 0], [1, 1]),
}


def fabricated_eval(out: Path, which: str, *, model: str | dict = "m", prompts: list[str] | None = None) -> Path:
    """An ``sftlab eval`` output whose verdicts are ``VERDICTS``' baseline (``"base"``) or fine-tuned ones."""
    from sftlab.eval.ifeval import aggregate, write_results

    s_col, l_col = (1, 3) if which == "base" else (2, 4)
    strict, loose = [], []
    for p, v in VERDICTS.items():
        if prompts is not None and p not in prompts:
            continue
        for rows, col in ((strict, s_col), (loose, l_col)):
            follow = [bool(x) for x in v[col]]
            rows.append({"instruction_id_list": v[0], "prompt": p, "response": f"{which} answer",
                         "follow_all_instructions": all(follow), "follow_instruction_list": follow})
    out.mkdir(parents=True)
    (out / "responses.jsonl").write_text("".join(json.dumps({"key": i, "prompt": r["prompt"], "response": r["response"]})
                                                 + "\n" for i, r in enumerate(strict)), encoding="utf-8")
    write_results(out, {"strict": strict, "loose": loose, **aggregate(strict, loose)},
                  {"model": model if isinstance(model, dict) else {"spec": model}})
    return out


def stats_record(**augment: object) -> dict:
    """A ``stats.json`` in the shape preprocessing writes (trimmed to what the report reads)."""
    aug = {"config": {**AUGMENT, "decontaminate": True, "ifeval_data": "input_data.jsonl", "version": 1},
           "conversations_in": 40, "decontaminated": 2, "decontamination": "8-gram overlap with 541 IFEval prompts",
           "chosen_plain": 0, "augmented": 35, "kept_plain_after_failure": 3, "written": 38,
           "instructions_per_example": {"1": 20, "2": 15},
           "types": {NO_COMMA: {"attempted": 20, "emitted": 18, "dropped": {"failed the IFEval checker": 2}},
                     TITLE: {"attempted": 19, "emitted": 19, "dropped": {}},
                     N_WORDS: {"attempted": 17, "emitted": 13, "dropped": {
                         "instruction wording overlaps an IFEval prompt": 3, "empty reply": 1}}},
           "plain": 3, **augment}
    return {"source": "convs.jsonl", "records_read": 41, "kept": 30,
            "skipped": {"no assistant reply": 1, "longer than max_length (truncation: drop)": 8},
            "dropped_turns": {}, "notes": [], "augment": aug}


def fake_train_dir(root: Path, tokenizer, *, augment: dict | None = AUGMENT, stats: dict | None = None,
                   data: str = "convs.jsonl") -> Path:
    """A finished training output as the report reads it (tokenizer, config, summary, metrics, stats)."""
    root.mkdir(parents=True)
    tokenizer.save_pretrained(str(root))
    cfg = {"model": "tiny", "data": data, "max_samples": 40, "masking": "assistant", "model_max_length": 256,
           "truncation": "drop", "eval_fraction": 0.1, "learning_rate": 1e-4, "num_train_epochs": 1}
    if augment is not None:
        cfg["augment"] = augment
    (root / "sftlab_config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (root / "train_summary.json").write_text(json.dumps({"num_train_examples": 27, "num_eval_examples": 3,
                                                         "global_step": 4}), encoding="utf-8")
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 10}) + "\n"
                                                for s in (1, 2, 3, 4)), encoding="utf-8")
    if stats is not None:
        (root / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return root


def sections_of(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def se(a: list[int], b: list[int]) -> float:
    d = np.array(b, float) - np.array(a, float)
    return float(d.std(ddof=1) / np.sqrt(len(d)))


def test_type_split_reads_a_train_dir_or_its_config(tmp_path, tokenizer):
    td = fake_train_dir(tmp_path / "train", tokenizer)
    split = type_split(td)
    assert split is not None and split == type_split(yaml.safe_load((td / "sftlab_config.yaml").read_text()))
    assert sorted(split.trained) == sorted([TITLE, N_WORDS, NO_COMMA])
    assert split.held_out == (CAPITAL,)
    assert [split.group_of(i) for i in (NO_COMMA, CAPITAL, QUOTATION)] == ["trained", "held-out", "other"]
    assert type_split({"model": "x"}) is None and type_split(None) is None
    # without types, every catalogue type but the held-out ones is trained, so nothing is "other"
    full = type_split({"augment": {"holdout_types": ["english_capital"]}})
    assert len(full.trained) == 24 and full.group_of(QUOTATION) == "trained"
    from sftlab.errors import SftlabError

    with pytest.raises(SftlabError, match="not an 'sftlab train' output"):
        type_split(tmp_path)


def _strict_se(col_a: int, col_b: int, *, prompt_level: bool) -> float:
    """The paired standard error straight from ``VERDICTS`` (prompt level: all followed; else per instruction)."""
    if prompt_level:
        return se([all(v[col_a]) for v in VERDICTS.values()], [all(v[col_b]) for v in VERDICTS.values()])
    return se([x for v in VERDICTS.values() for x in v[col_a]], [x for v in VERDICTS.values() for x in v[col_b]])


@pytest.fixture
def augmented_report(tmp_path, tokenizer) -> tuple[Path, dict[str, str], dict]:
    convs = tmp_path / "convs.jsonl"
    convs.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {i}."},
                                                      {"role": "assistant", "content": f"{i}."}]}) + "\n"
                             for i in range(5)), encoding="utf-8")
    fabricated_eval(tmp_path / "base", "base")
    fake_train_dir(tmp_path / "run" / "train", tokenizer, stats=stats_record(), data=str(convs))
    fabricated_eval(tmp_path / "run" / "eval", "ft")
    write_report(baseline=tmp_path / "base", runs=[tmp_path / "run"], output_dir=tmp_path / "report",
                 model_check=False)
    out = tmp_path / "report"
    return out, sections_of((out / "report.md").read_text(encoding="utf-8")), json.loads((out / "report.json").read_text())


def test_data_section_states_sources_sizes_augmentation_and_decontamination(augmented_report):
    _, secs, data = augmented_report
    assert list(secs) == list(SECTION_TITLES) and list(secs).index("4. Data") == 3
    sec = secs["4. Data"]
    for row in ("| records read | 41 |", "| kept | 30 |", "| skipped: no assistant reply | 1 |",
                "| skipped: longer than max_length (truncation: drop) | 8 |", "| dropped by IFEval decontamination | 2 |",
                "| training split | 27 |", "| held-out split (eval_fraction 0.1) | 3 |",
                f"| `{N_WORDS}` | 17 | 13 | 4 | instruction wording overlaps an IFEval prompt 3; empty reply 1 |",
                f"| `{TITLE}` | 19 | 19 | 0 | - |"):
        assert row in sec, row
    assert "convs.jsonl` (max_samples 40, truncation drop)" in sec
    assert "40 conversations in, 35 augmented, 3 plain (0 by the ratio, 3 after every attempt failed)" in sec
    assert "instructions per augmented conversation: 1: 20, 2: 15." in sec
    assert ("Decontamination (8-gram overlap with 541 IFEval prompts; n = 8 words): 2 conversations dropped for an "
            "n-gram shared with an IFEval prompt; 3 instructions dropped because their wording overlapped one.") in sec
    assert (f"**The training data holds IFEval-style constraints: 35 of the 38 conversations augmentation wrote carry "
            f"1-2 verifiable instructions of 3 IFEval instruction types (of 3 drawn from), each checked by the IFEval "
            f"scorer; 3 stayed plain. 1 type was held out of training: `{CAPITAL}`.") in sec
    (run,) = data["data"]
    assert run["kept"] == 30 and run["train"] == 27 and run["held_out_types"] == [CAPITAL]
    assert run["augment"]["augmented"] == 35 and run["stats_missing"] is None


def test_baseline_section_gives_paired_errors_for_prompt_strict_and_loose(augmented_report):
    _, secs, data = augmented_report
    sec = secs["6. Baseline vs fine-tuned"]
    s_se, l_se = _strict_se(1, 2, prompt_level=True), _strict_se(3, 4, prompt_level=True)
    assert (f"`run`: prompt-level strict 50.0% (binomial standard error ±20.4) vs baseline 33.3% (±19.2); "
            f"Δ +16.7 points, paired standard error ±{100 * s_se:.1f}") in sec
    assert (f"`run`: prompt-level loose 66.7% (binomial standard error ±19.2) vs baseline 66.7% (±19.2); "
            f"Δ +0.0 points, paired standard error ±{100 * l_se:.1f}") in sec
    lines = [line for line in sec.splitlines() if line.startswith("- `run`")]
    assert lines[0].endswith("Prompts newly followed: 2; newly failed: 1.")
    assert lines[1].endswith("Prompts newly followed: 2; newly failed: 2.")
    (c,) = data["comparisons"]
    assert c["paired_se"] == pytest.approx(s_se) and c["paired_se_loose"] == pytest.approx(l_se)
    assert (c["won_loose"], c["lost_loose"], c["delta_prompt_loose"]) == (2, 2, 0)
    inst = c["paired"]["inst_level_strict_acc"]
    assert inst["n"] == 8 and inst["paired_se"] == pytest.approx(_strict_se(1, 2, prompt_level=False))
    assert (inst["won"], inst["lost"]) == (4, 2)


def test_per_instruction_section_splits_trained_and_held_out_types(augmented_report):
    _, secs, data = augmented_report
    sec = secs["7. Per-instruction results"]
    bullets = [line for line in sec.splitlines() if re.match(r"- \*\*(Trained|Held-out|Other) types", line)]
    # trained: no_comma x2, title x2, number_words x1 = 5 instructions, strict 1/5 -> 5/5, loose 3/5 -> 5/5
    trained_se = se([0, 0, 1, 0, 0], [1, 1, 1, 1, 1])
    assert bullets == [
        f"- **Trained types** (3 types, 5 instructions on these prompts): strict 20.0% → 100.0% (Δ +80.0 points, "
        f"paired standard error ±{100 * trained_se:.1f}); loose 60.0% → 100.0% (Δ +40.0).",
        "- **Held-out types** (1 type, 2 instructions on these prompts): strict 50.0% → 0.0% (Δ -50.0 points, "
        "paired standard error ±50.0); loose 50.0% → 50.0% (Δ +0.0).",
        "- **Other types (not used in training)** (1 type, 1 instruction on these prompts): strict 100.0% → 0.0% "
        "(Δ -100.0 points, paired standard error n/a); loose 100.0% → 0.0% (Δ -100.0).",
    ]
    tables = re.split(r"^(Trained types|Held-out types|Other types \(not used in training\)), by instruction id:$",
                      sec, flags=re.M)
    ids = {tables[i]: re.findall(r"^\| `([a-z_]+:[a-z_]+)`", tables[i + 1], flags=re.M)
           for i in range(1, len(tables), 2)}
    assert ids == {"Trained types": [N_WORDS, NO_COMMA, TITLE], "Held-out types": [CAPITAL],
                   "Other types (not used in training)": [QUOTATION]}
    assert "By instruction id:" not in sec
    groups = data["type_groups"]["groups"]
    assert groups["trained"]["strict"]["delta"] == pytest.approx(0.8)
    assert groups["held-out"]["loose"]["delta"] == 0 and groups["other"]["instructions"] == 1
    assert {r["id"]: r["group"] for r in data["per_instruction"] if ":*" not in r["id"]}[CAPITAL] == "held-out"


def _records(tmp_path: Path, tokenizer, runs: dict[str, dict]) -> list:
    """Run directories with the fine-tuned verdicts and the given ``fake_train_dir`` options, read back."""
    from sftlab.report.results import expand_run_dirs

    for name, opts in runs.items():
        fake_train_dir(tmp_path / name / "train", tokenizer, **opts)
        fabricated_eval(tmp_path / name / "eval", opts.pop("_verdicts", "ft"))
    return expand_run_dirs([tmp_path / n for n in runs])


def test_runs_without_augment_or_stats_still_render(tmp_path, tokenizer):
    from sftlab.report.comparison import section_per_instruction
    from sftlab.report.data import section_data
    from sftlab.report.evals import compare, load_eval

    recs = _records(tmp_path, tokenizer, {"old": {"augment": None}})
    data: dict = {}
    sec = "\n".join(b.text for b in section_data(recs, 0, data).blocks)
    assert "Preprocessing statistics are missing: no `stats.json` in" in sec
    assert "The training data holds no added IFEval-style constraints" in sec
    assert data["data"][0]["stats_missing"] and data["data"][0]["train"] == 27
    base = load_eval(fabricated_eval(tmp_path / "base", "base"))
    blocks = section_per_instruction(compare(base, recs, []), data).blocks
    texts = [b.text for b in blocks]
    assert "By instruction id:" in texts and not any("Trained types" in t for t in texts)
    assert "type_groups" not in data
    # an augment block without its statistics: said plainly, not guessed
    recs = _records(tmp_path / "x", tokenizer, {"new": {}})
    sec = "\n".join(b.text for b in section_data(recs, 0, {}).blocks)
    assert "asks for IFEval-style constraints" in sec and "is not known" in sec


def test_data_section_notes_when_runs_differ(tmp_path, tokenizer):
    from sftlab.report.data import section_data

    recs = _records(tmp_path, tokenizer, {"aug": {"stats": stats_record()},
                                          "half": {"stats": stats_record(augmented=17, plain=21)},
                                          "plain": {"augment": None}})
    blocks = section_data(recs, 1, {}).blocks
    assert blocks[0].text.startswith("The runs' data differ") and "`half`" in blocks[0].text
    table = {r[0]: r for r in blocks[1].rows}
    assert table["`aug`"][6:] == ["35", "3", "1"] and table["`half`"][6:] == ["17", "21", "1"]
    assert table["`plain`"][2:] == ["n/a", "n/a", "27", "3", "-", "-", "-"]
    assert any("17 of the 38 conversations" in b.text for b in blocks)  # the details are the chosen run's
    same = _records(tmp_path / "same", tokenizer, {"a": {"stats": stats_record()}, "b": {"stats": stats_record()}})
    first = section_data(same, 0, {}).blocks[0].text
    assert first.startswith("All 2 runs trained on the same data")


def test_data_section_reads_what_preprocessing_wrote(tmp_path, tokenizer, tokenizer_dir, ifeval_dir):
    """``stats.json`` as real preprocessing writes it into the training output (what sftlab train does)."""
    from sftlab.data import load_conversations
    from sftlab.prep.pipeline import PreprocessConfig, preprocess
    from sftlab.report.data import section_data
    from sftlab.report.results import load_run

    convs = load_conversations("sharegpt", max_samples=16, max_rounds=1).conversations
    data = tmp_path / "convs.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "messages": m}) + "\n" for i, m in enumerate(convs)),
                    encoding="utf-8")
    block = {"holdout_types": ["no_comma"], "max_instructions": 3, "seed": 1, "type_weights": {"transform": 3},
             "strip_openers": True, "ifeval_data": str(ifeval_dir / "input_data.jsonl")}
    td = fake_train_dir(tmp_path / "run" / "train", tokenizer, augment=block, data=str(data))
    result = preprocess(PreprocessConfig(data=str(data), tokenizer=str(tokenizer_dir), chat_template="chatml",
                                         max_length=384, truncation="drop", num_proc=1, augment=block),
                        td, tokenizer=tokenizer, progress=False)
    stats = json.loads((td / "stats.json").read_text(encoding="utf-8"))
    aug = stats["augment"]
    out: dict = {}
    sec = section_data([load_run(tmp_path / "run")], 0, out).blocks
    text = "\n".join(b.text for b in sec)
    rows = {r[0]: r for b in sec for r in b.rows}
    assert rows["records read"] == ["records read", str(stats["records_read"])]
    assert rows["kept"] == ["kept", str(stats["kept"])]
    for iid, row in aug["types"].items():
        assert rows[f"`{iid}`"][1:4] == [str(row["attempted"]), str(row["emitted"]), str(sum(row["dropped"].values()))]
    assert f"`{NO_COMMA}`" not in {r for r in rows if r.startswith("`")}  # held out: never attempted
    assert f"{aug['augmented']} of the {aug['written']} conversations augmentation wrote carry" in text
    assert f"1 type was held out of training: `{NO_COMMA}`." in text
    assert any(f"held out: `{NO_COMMA}`; drawn with weights transform 3 (others 1)." in i for b in sec for i in b.items)
    assert out["data"][0]["augment"] == aug
    assert aug["openers_stripped"] > 0
    assert any(f"Chatty openings (\"Sure, here's ...:\") removed from {aug['openers_stripped']} replies." in i
               for b in sec for i in b.items)
    # What training sees: the kept rows split into augmented and plain, counted from the saved features.
    from sftlab.augment import AugmentConfig, augment_conversations
    from sftlab.data import load_conversations as load_again

    loaded = load_again(str(data), max_rounds=None)
    records, _ = augment_conversations(loaded.conversations, AugmentConfig.from_dict(block), ids=loaded.ids)
    augmented_ids = {r["id"] for r in records if "augment" in r}
    kept_ids = list(result.dataset["id"])
    assert aug["kept_augmented"] + aug["kept_plain"] == stats["kept"] == len(kept_ids)
    assert 0 < aug["kept_augmented"] <= aug["augmented"]
    assert aug["kept_augmented"] == sum(i in augmented_ids for i in kept_ids)
    assert f"holds {aug['kept_augmented']} augmented and {aug['kept_plain']} plain conversations" in text
