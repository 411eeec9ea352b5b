"""IFBench: official conformance, determinism, NLTK data, bad input, the resume guard, a tiny model end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sftlab.errors import DataError, SftlabError
from sftlab.eval.bridge import _check_resume_settings, evaluate, score_file
from sftlab.eval.generate import GenerationConfig
from sftlab.eval.ifbench import TASK, ensure_nltk_data
from sftlab.eval.inputs import load_inputs, match_responses, select_inputs
from sftlab.eval.scoring import score_responses

BROKEN_PREFIX = "I want you to act as a teacher explaining concepts relevant to NMDCAT subjects"


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def inputs(ifbench_dir):
    return load_inputs(TASK, str(ifbench_dir / "IFBench_test.jsonl"))


def test_inputs_load_offline_despite_the_missing_final_newline(inputs, ifbench_dir):
    assert not (ifbench_dir / "IFBench_test.jsonl").read_bytes().endswith(b"\n")
    assert len(inputs) == 300 and sum(len(i["instruction_id_list"]) for i in inputs) == 344
    assert len({iid for i in inputs for iid in i["instruction_id_list"]}) == 58
    # every kwargs object keeps the released padding; scoring drops only the None values
    assert all(len(k) > 30 for i in inputs for k in i["kwargs"])


@pytest.mark.integration
def test_conformance_with_the_official_verdicts(ifbench_dir, tmp_path):
    """All 293 sample responses that match a test prompt get the official verdict, instruction by
    instruction, strict and loose; the one broken upstream row is reported as unmatched and counted."""
    out = tmp_path / "scored"
    s = score_file(ifbench_dir / "sample_responses.jsonl", out, benchmark="ifbench",
                   data=str(ifbench_dir / "IFBench_test.jsonl"))
    broken = [n for n, r in enumerate(_jsonl(ifbench_dir / "sample_responses.jsonl"), 1)
              if r["prompt"].startswith(BROKEN_PREFIX)]
    assert len(broken) == 1
    assert s["data"]["unmatched_responses"] == {"count": 1, "lines": broken}
    assert s["benchmark"] == "ifbench" and s["counts"]["prompts"] == 293
    for kind in ("strict", "loose"):
        official = {r["prompt"].strip(): r for r in _jsonl(ifbench_dir / f"official_verdicts_{kind}.jsonl")}
        rows = _jsonl(out / f"eval_results_{kind}.jsonl")
        assert len(rows) == 293
        for r in rows:
            o = official[r["prompt"].strip()]
            assert r["instruction_id_list"] == o["instruction_id_list"]
            assert r["follow_instruction_list"] == o["follow_instruction_list"], (kind, r["instruction_id_list"])
            assert r["follow_all_instructions"] == o["follow_all_instructions"]
        # the official totals count the broken row too; without it they are what the rows above sum to
        assert s["counts"][f"prompt_level_{kind}"] == sum(official[r["prompt"].strip()]["follow_all_instructions"]
                                                           for r in rows)
    assert s["counts"]["prompt_level_strict"] == 77 and s["counts"]["inst_level_strict"] == 93


def test_verdicts_are_deterministic_and_order_independent(inputs):
    """Argument-less checkers draw their thresholds at random; sftlab seeds them per (prompt, index)."""
    picked = [dict(i, kwargs=[{} for _ in i["kwargs"]]) for i in inputs[:25]]  # every checker draws now
    responses = {i["prompt"]: f"Answer {n}.\nIt has words, numbers like {n} and a SEPARATOR." for n, i in
                 enumerate(picked)}
    registry = TASK.registry()
    random.seed(123)
    state = random.getstate()
    a = score_responses(picked, responses, registry, "IFBench")
    assert random.getstate() == state  # the caller's random state is left as it was
    b = score_responses(list(reversed(picked)), responses, registry, "IFBench")
    assert a["strict"] == list(reversed(b["strict"])) and a["loose"] == list(reversed(b["loose"]))
    assert all(all(lo or not st for st, lo in zip(s["follow_instruction_list"], lz["follow_instruction_list"],
                                                    strict=True)) for s, lz in zip(a["strict"], a["loose"], strict=True))


def test_bad_inputs_name_line_and_field(ifbench_dir, tmp_path):
    lines = (ifbench_dir / "IFBench_test.jsonl").read_text(encoding="utf-8").split("\n")[:3]
    bad = json.loads(lines[1])
    bad["instruction_id_list"] = ["count:no_such_check"]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join([lines[0], json.dumps(bad), lines[2]]), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2.*instruction_id_list.*unknown instruction id 'count:no_such"):
        load_inputs(TASK, str(f))
    f.write_text("\n".join([lines[0], lines[1], lines[2][:-5]]), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:3.*invalid JSON"):
        load_inputs(TASK, str(f))
    del bad["kwargs"]
    bad["instruction_id_list"] = json.loads(lines[1])["instruction_id_list"]
    f.write_text("\n".join([lines[0], json.dumps(bad)]), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2.*kwargs.*missing field"):
        load_inputs(TASK, str(f))


def test_responses_matching_no_prompt(inputs, tmp_path):
    resp = tmp_path / "r.jsonl"
    resp.write_text(json.dumps({"prompt": "not an IFBench prompt", "response": "x"}) + "\n"
                    + json.dumps({"prompt": "  " + inputs[4]["prompt"] + "\n", "response": "y"}) + "\n",
                    encoding="utf-8")
    m = match_responses(resp, inputs, "IFBench", unmatched_is_error=False)
    assert m.responses == {inputs[4]["prompt"]: "y"} and m.unmatched_record() == {"count": 1, "lines": [1]}
    resp.write_text(json.dumps({"prompt": "not an IFBench prompt", "response": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"r\.jsonl.*no response matches a prompt of the IFBench inputs"):
        match_responses(resp, inputs, "IFBench", unmatched_is_error=False)


def _one_line_error(capsys, argv):
    from sftlab.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_errors_are_one_line_exit_2(capsys, ifbench_dir, tmp_path):
    resp = tmp_path / "r.jsonl"
    resp.write_text(json.dumps({"prompt": "no such prompt", "response": "x"}) + "\n", encoding="utf-8")
    data = str(ifbench_dir / "IFBench_test.jsonl")
    for args, want in (
        (["--benchmark", "ifbenh", "--responses", str(resp)], "unknown benchmark 'ifbenh'; did you mean 'ifbench'?"),
        (["--benchmark", "ifbench", "--responses", str(resp), "--data", data], "no response matches a prompt"),
        (["--benchmark", "ifbench", "--responses", str(resp), "--ifeval-data", data],
         "for --benchmark ifbench use --data"),
        (["--responses", str(resp), "--ifeval-data", data, "--data", data], "either --data or --ifeval-data"),
    ):
        assert want in _one_line_error(capsys, ["eval", *args, "--output-dir", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "summary.json").exists()


def test_missing_nltk_data_is_one_line_before_generation(capsys, ifbench_dir, tmp_path, monkeypatch):
    import nltk

    only_punkt = tmp_path / "nltk"
    only_punkt.mkdir()
    (only_punkt / "tokenizers").symlink_to(ifbench_dir.parent / "nltk_data" / "tokenizers")
    monkeypatch.setattr(nltk.data, "path", [str(only_punkt)])
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(SftlabError, match=rf"stopwords data \(corpora/stopwords\).*looked in: {only_punkt}"):
        ensure_nltk_data()
    out = tmp_path / "ev"  # the model is never loaded: the check comes first
    err = _one_line_error(capsys, ["eval", "--benchmark", "ifbench", "--model", "never-loaded", "--output-dir",
                                   str(out), "--data", str(ifbench_dir / "IFBench_test.jsonl"), "--limit", "1"])
    assert "stopwords" in err and str(only_punkt) in err and "python -m nltk.downloader stopwords" in err
    assert not (out / "responses.jsonl").exists()


def test_resume_guard_needs_a_readable_matching_record(tmp_path):
    settings = {"benchmark": "ifbench", "model": "m", "max_new_tokens": 6, "dtype": "float32", "sample_offset": 0}
    responses, record = tmp_path / "responses.jsonl", tmp_path / "generation.json"
    responses.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n", encoding="utf-8")
    with pytest.raises(SftlabError, match=r"generation\.json .* is missing.*delete .*responses\.jsonl to start over"):
        _check_resume_settings(tmp_path, settings)
    record.write_text("{not json", encoding="utf-8")
    with pytest.raises(SftlabError, match=r"generation\.json is unreadable.*start over"):
        _check_resume_settings(tmp_path, settings)
    record.write_text("[1]", encoding="utf-8")
    with pytest.raises(SftlabError, match="not a JSON object"):
        _check_resume_settings(tmp_path, settings)
    record.write_text(json.dumps({**settings, "benchmark": "ifeval"}), encoding="utf-8")
    with pytest.raises(SftlabError, match="benchmark: 'ifeval' -> 'ifbench'"):
        _check_resume_settings(tmp_path, settings)
    old = {k: v for k, v in settings.items() if k != "benchmark"}  # written before benchmarks: IFEval
    record.write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(SftlabError, match="benchmark: 'ifeval' -> 'ifbench'"):
        _check_resume_settings(tmp_path, settings)
    _check_resume_settings(tmp_path, {**settings, "benchmark": "ifeval"})
    assert json.loads(record.read_text(encoding="utf-8"))["benchmark"] == "ifeval"
    _check_resume_settings(tmp_path, {**settings, "benchmark": "ifeval"})  # a matching record: reused


@pytest.mark.integration
def test_tiny_model_generates_and_scores_ifbench(capsys, tiny_model_dir, ifbench_dir, inputs, tmp_path):
    from sftlab.cli import main

    out, data = tmp_path / "ev", str(ifbench_dir / "IFBench_test.jsonl")
    rc = main(["eval", "--benchmark", "ifbench", "--model", str(tiny_model_dir), "--output-dir", str(out), "--data",
               data, "--sample", "3", "--seed", "2", "--max-new-tokens", "5", "--batch-size", "3", "--no-progress"])
    stdout = capsys.readouterr().out
    assert rc == 0 and "IFBench: 3 prompts" in stdout and "headline: prompt-level loose" in stdout
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["benchmark"] == "ifbench" and s["generation"]["stats"]["n_generated"] == 3
    assert s["data"]["selection"] == {"sample": 3, "seed": 2}
    assert json.loads((out / "generation.json").read_text(encoding="utf-8"))["benchmark"] == "ifbench"
    want = {i["prompt"] for i in select_inputs(inputs, sample=3, seed=2)}
    assert {r["prompt"] for r in _jsonl(out / "responses.jsonl")} == want
    assert s["scorer"]["checkers"].startswith("if-verifiable ")
    # the same directory is never reused for the other benchmark
    with pytest.raises(SftlabError, match="benchmark: 'ifbench' -> 'ifeval'"):
        evaluate(str(tiny_model_dir), out, ifeval_data=str(ifbench_dir.parent / "ifeval" / "input_data.jsonl"),
                 sample=3, seed=2, gen=GenerationConfig(max_new_tokens=5), progress=False)


def test_compare_pairs_per_category_and_refuses_two_benchmarks(capsys, ifbench_dir, ifeval_dir, tmp_path):
    """``sftlab compare`` on two IFBench evaluations: paired figures, groups = IFBench's categories."""
    from sftlab.cli import main

    rows = [r for r in _jsonl(ifbench_dir / "sample_responses.jsonl") if not r["prompt"].startswith(BROKEN_PREFIX)]
    rows = rows[:30]
    data = str(ifbench_dir / "IFBench_test.jsonl")
    for name, rs in (("base", [{**r, "response": ""} for r in rows]), ("ft", rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs), encoding="utf-8")
        score_file(tmp_path / f"{name}.jsonl", tmp_path / name, benchmark="ifbench", data=data)
    ft = json.loads((tmp_path / "ft" / "summary.json").read_text(encoding="utf-8"))
    rc = main(["compare", "--baseline", str(tmp_path / "base"), "--finetuned", str(tmp_path / "ft"),
               "--json", str(tmp_path / "cmp.json")])
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    assert rc == 0 and out.startswith("30 prompts shared") and " on IFBench: " in out.splitlines()[0]
    assert res["benchmark"] == "ifbench" and res["grouped_by"] == "category" and res["type_split"] is None
    m = res["metrics"]["prompt_level_loose_acc"]
    assert m["baseline_pct"] == 0 and m["won"] == ft["counts"]["prompt_level_loose"] and m["lost"] == 0
    assert m["finetuned_pct"] == pytest.approx(100 * ft["prompt_level_loose_acc"])
    groups = res["groups"]
    assert set(groups) <= set(TASK.categories) and "other" not in groups
    assert sum(g["instructions"] for g in groups.values()) == ft["counts"]["instructions"]
    for cat, g in groups.items():
        assert g["strict"]["finetuned_pct"] == pytest.approx(100 * ft["per_instruction"]["by_category"][cat]
                                                             ["strict_acc"])
    assert all(r["group"] == r["id"].split(":")[0] for r in res["per_type"])
    assert "instruction types by category" in out
    # an IFEval evaluation never pairs with an IFBench one
    ifeval_rows = _jsonl(ifeval_dir / "gpt4_responses.jsonl")[:3]
    (tmp_path / "ife.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ifeval_rows), encoding="utf-8")
    score_file(tmp_path / "ife.jsonl", tmp_path / "ife", ifeval_data=str(ifeval_dir / "input_data.jsonl"))
    err = _one_line_error(capsys, ["compare", "--baseline", str(tmp_path / "ife"), "--finetuned", str(tmp_path / "ft")])
    assert "scored ifeval but --finetuned" in err and "scored ifbench" in err


def test_eval_settings_benchmark_lists_and_blocks(tmp_path):
    from sftlab.errors import ConfigError
    from sftlab.experiment.stages import EvalSettings, guard_settings
    from sftlab.experiment.sweep import _manifest_identity

    old = EvalSettings.from_dict({"sample": 10, "max_new_tokens": 64})
    assert old.benchmarks == ["ifeval"] and "benchmarks" not in old.to_dict() and "ifbench" not in old.to_dict()
    s = EvalSettings.from_dict({"sample": 10, "max_new_tokens": 64, "benchmarks": ["ifeval", "ifbench"],
                                "ifbench": {"data": "b.jsonl", "limit": 5, "seed": 3}})
    assert s.selection("ifeval") == {"data": "google/IFEval", "limit": None, "sample": 10, "seed": 0,
                                     "sample_offset": 0}
    assert s.selection("ifbench") == {"data": "b.jsonl", "limit": 5, "sample": None, "seed": 3, "sample_offset": 0}
    assert s.to_dict()["benchmarks"] == ["ifeval", "ifbench"] and s.to_dict()["ifbench"]["limit"] == 5
    assert "seed" not in s.fingerprint()["ifbench"]  # no sample: the seed decides nothing
    assert EvalSettings.from_dict(s.to_dict()).to_dict() == s.to_dict()  # a record reads back as it was written
    assert _manifest_identity({"eval": old.to_dict()}) != _manifest_identity({"eval": s.to_dict()})
    record = tmp_path / "run_config.yaml"
    guard_settings(record, {"eval": old.to_dict()}, what="an experiment")
    with pytest.raises(ConfigError, match="eval.benchmarks"):
        guard_settings(record, {"eval": s.to_dict()}, what="an experiment")
    for bad, msg in (({"benchmarks": ["ifeval", "ifbenh"]}, "unknown benchmark 'ifbenh'; did you mean 'ifbench'"),
                     ({"benchmarks": ["ifbench"]}, "must include ifeval"),
                     ({"benchmarks": ["ifeval", "ifeval"]}, "twice"),
                     ({"ifbench": {"limit": 3}}, r"eval\.ifbench is given but 'ifbench' is not in eval\.benchmarks"),
                     ({"benchmarks": ["ifeval", "ifbench"], "ifbench": {"lmit": 3}},
                      r"unknown key 'eval\.ifbench\.lmit'; did you mean 'limit'"),
                     ({"benchmarks": ["ifeval", "ifbench"], "ifbench": {"limit": 3, "sample": 3}}, "not both"),
                     ({"benchmarks": ["ifeval", "ifbench"], "ifbench": {"sample_offset": 3}}, "needs 'sample'")):
        with pytest.raises(ConfigError, match=msg):
            EvalSettings.from_dict(bad)


@pytest.mark.integration
def test_run_evaluates_both_benchmarks_and_compare_pairs_them(capsys, tmp_path, tiny_model_dir, ifeval_dir,
                                                               ifbench_dir):
    """``sftlab run`` with ``eval.benchmarks: [ifeval, ifbench]``: both evaluated before and after training,
    every stage skipped on a rerun, and ``sftlab compare`` on the IFBench pair."""
    import yaml
    from test_sweep import tiny_train_config, write_conversations

    from sftlab.cli import main
    from sftlab.experiment.run import format_outcome, load_run_config, run_experiment

    data = write_conversations(tmp_path / "convs.jsonl")
    cfg = {**tiny_train_config(tiny_model_dir, data), "output_dir": str(tmp_path / "exp"),
           "eval": {"ifeval_data": str(ifeval_dir / "input_data.jsonl"), "limit": 2, "max_new_tokens": 4,
                    "batch_size": 4, "benchmarks": ["ifeval", "ifbench"],
                    "ifbench": {"data": str(ifbench_dir / "IFBench_test.jsonl"), "sample": 3, "seed": 5}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    res = run_experiment(load_run_config(path), report=False)
    out = tmp_path / "exp"
    for d, bench, n in (("baseline_eval", "ifeval", 2), ("finetuned_eval", "ifeval", 2),
                        ("baseline_eval_ifbench", "ifbench", 3), ("finetuned_eval_ifbench", "ifbench", 3)):
        s = json.loads((out / d / "summary.json").read_text(encoding="utf-8"))
        assert (s["benchmark"], s["counts"]["prompts"]) == (bench, n), d
    assert s["data"]["selection"] == {"sample": 3, "seed": 5}
    text = format_outcome(res)
    assert "IFEval (%)" in text and "IFBench (%)" in text and "(headline)" in text
    # the report shows both side by side: headline table, IFBench figures, categories, examples
    from sftlab.report import write_report

    write_report(baseline=None, runs=[out], output_dir=out / "report", model_check=False)
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    report = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    assert [h["benchmark"] for h in report["headline"]] == ["IFEval", "IFBench"]
    assert report["headline"][1]["figure"] == "prompt loose" and report["headline"][1]["n"] == 3
    ifb = report["benchmarks"]["ifbench"]
    assert ifb["baseline_figures"]["n_prompts"] == 3 and set(ifb["categories"]) <= set(TASK.categories)
    assert ifb["baseline_figures"]["prompt_level_loose_acc"] == pytest.approx(
        json.loads((out / "baseline_eval_ifbench" / "summary.json").read_text())["prompt_level_loose_acc"])
    assert "**IFBench** accuracies in percent on 3 prompts" in md and "IFBench by instruction id" in md
    assert md.index("Both benchmarks side by side") < md.index("IFEval accuracies in percent")
    # the model card lists both benchmarks
    from sftlab.train.hub import model_card

    card = model_card(out / "train", "someone/tiny")
    ft_ifb = json.loads((out / "finetuned_eval_ifbench" / "summary.json").read_text())
    assert "## IFEval" in card and "## IFBench" in card and "ODC-BY-1.0" in card
    assert f"| this model | {100 * ft_ifb['prompt_level_loose_acc']:.1f}% |" in card
    capsys.readouterr()
    run_experiment(load_run_config(path), report=False)
    assert capsys.readouterr().err.count("evaluation finished earlier, skipping") == 4
    rc = main(["compare", "--baseline", str(out / "baseline_eval_ifbench"), "--finetuned",
               str(out / "finetuned_eval_ifbench")])
    shown = capsys.readouterr().out
    assert rc == 0 and shown.startswith("3 prompts shared") and "on IFBench" in shown


def test_training_callback_scores_ifbench_prompts_too(tmp_path, tiny_model_dir, tokenizer, ifbench_dir, ifeval_dir):
    """``ifeval_eval_ifbench_sample``: seeded IFBench prompts answered with the IFEval sample, scored officially."""
    from conftest import REPO_ROOT
    from transformers import AutoModelForCausalLM

    from sftlab.errors import ConfigError
    from sftlab.train.config import load_config
    from sftlab.train.ifeval_callback import ifbench_data_of, make_callback

    smoke = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")
    base = ["--model", str(tiny_model_dir), "--data", str(REPO_ROOT / "tests" / "fixtures" / "smoltalk_like.jsonl")]
    data = str(ifbench_dir / "IFBench_test.jsonl")
    cfg = load_config(smoke, [*base, "--ifeval_eval_steps", "5", "--ifeval_eval_sample", "1",
                              "--ifeval_eval_max_new_tokens", "3", "--ifeval_eval_data",
                              str(ifeval_dir / "input_data.jsonl"), "--ifeval_eval_ifbench_sample", "2",
                              "--ifeval_eval_ifbench_data", data])[0]
    kw = {"metrics_path": tmp_path / "m.jsonl", "is_main": True}
    cb = make_callback(cfg, tokenizer, seed=1, **kw)
    assert [i["key"] for i in cb.ifbench_inputs] == [i["key"] for i in select_inputs(load_inputs(TASK, data),
                                                                                     sample=2, seed=1)]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    figures = cb.score(model)
    assert figures["ifbench_prompts"] == 2 and figures["ifeval_prompts"] == 1
    assert 0 <= figures["ifbench_prompt_strict"] <= figures["ifbench_prompt_loose"] <= 1
    assert ifbench_data_of(load_config(smoke, base)[0]) == "allenai/IFBench_test"
    assert ifbench_data_of(load_config(smoke, [*base, "--eval", "{ifbench: {data: /x.jsonl}}"])[0]) == "/x.jsonl"
    with pytest.raises(ConfigError, match="ifeval_eval_ifbench_sample must be >= 1"):
        load_config(smoke, [*base, "--ifeval_eval_steps", "5", "--ifeval_eval_ifbench_sample", "0"])


@pytest.mark.integration
def test_sweep_evaluates_every_benchmark_and_resumes(tmp_path, tiny_model_dir, ifeval_dir, ifbench_dir, monkeypatch,
                                                     capsys):
    """``sftlab sweep`` with ``eval.benchmarks``: the baseline and each run on both, skipped on a rerun
    (training stands in: the tiny model copied into the run's train/, so only the evaluation path runs)."""
    import shutil

    import yaml
    from test_sweep import tiny_train_config, write_conversations

    import sftlab.experiment.sweep as sweep_mod
    from sftlab.experiment.sweep import load_sweep_config, run_sweep

    def fake_training(config_path, train_dir, **kw):
        if not (Path(train_dir) / "train_summary.json").is_file():
            shutil.copytree(tiny_model_dir, train_dir, dirs_exist_ok=True)
            (Path(train_dir) / "train_summary.json").write_text(json.dumps({"global_step": 2}), encoding="utf-8")

    monkeypatch.setattr(sweep_mod, "run_training", fake_training)
    out = tmp_path / "sw"
    cfg = {"base": tiny_train_config(tiny_model_dir, write_conversations(tmp_path / "c.jsonl", n=4)),
           "grid": {"learning_rate": [1e-3]}, "output_dir": str(out), "report": False,
           "eval": {"ifeval_data": str(ifeval_dir / "input_data.jsonl"), "limit": 2, "max_new_tokens": 3,
                    "benchmarks": ["ifeval", "ifbench"], "ifbench": {"data": str(ifbench_dir / "IFBench_test.jsonl"),
                                                                      "limit": 2}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = run_sweep(load_sweep_config(tmp_path / "sweep.yaml"))
    assert len(res["finished"]) == 1 and not res["failed"]
    run = res["finished"][0]
    for d, bench in (("baseline_eval", "ifeval"), ("baseline_eval_ifbench", "ifbench"),
                     (f"runs/{run}/eval", "ifeval"), (f"runs/{run}/eval_ifbench", "ifbench")):
        s = json.loads((out / d / "summary.json").read_text(encoding="utf-8"))
        assert (s["benchmark"], s["counts"]["prompts"]) == (bench, 2), d
    assert json.loads((out / "sweep.json").read_text(encoding="utf-8"))["eval"]["benchmarks"] == ["ifeval", "ifbench"]
    capsys.readouterr()
    run_sweep(load_sweep_config(tmp_path / "sweep.yaml"))
    err = capsys.readouterr().err
    assert "baseline (ifbench): evaluation finished earlier, skipping" in err and "finished earlier, skipping" in err
