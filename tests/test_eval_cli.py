"""`sftlab eval` end to end, as a user runs it: score-only, generate+score with resume, errors."""

from __future__ import annotations

import json

import pytest

from sftlab.errors import SftlabError
from sftlab.eval.bridge import evaluate
from sftlab.eval.generate import GenerationConfig, resolve_dtype

RESULT_FIELDS = ["instruction_id_list", "prompt", "response", "follow_all_instructions", "follow_instruction_list"]


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.integration
def test_score_only_writes_official_formats(cli, ifeval_dir, tmp_path):
    random_prompts = {r["prompt"] for r in _jsonl(ifeval_dir / "input_data_gpt4_era.jsonl") if r["key"] in (1122, 1129)}
    subset = [r for r in _jsonl(ifeval_dir / "gpt4_responses.jsonl") if r["prompt"] not in random_prompts][:40]
    resp = tmp_path / "resp.jsonl"
    resp.write_text("".join(json.dumps(r) + "\n" for r in subset), encoding="utf-8")
    out = tmp_path / "scored"
    p = cli("eval", "--responses", str(resp), "--output-dir", str(out),
            "--ifeval-data", str(ifeval_dir / "input_data_gpt4_era.jsonl"))
    assert p.returncode == 0, p.stderr
    assert "prompt-level accuracy" in p.stdout and "instruction-level accuracy" in p.stdout
    assert "detectable_format" in p.stdout  # per-category breakdown
    official = {r["prompt"]: r for r in _jsonl(ifeval_dir / "gpt4_official_verdicts_strict.jsonl")}
    rows = _jsonl(out / "eval_results_strict.jsonl")
    assert len(rows) == 40 and all(list(r) == RESULT_FIELDS for r in rows)
    for r in rows:
        assert r["follow_instruction_list"] == official[r["prompt"]]["follow_instruction_list"]
    assert len(_jsonl(out / "eval_results_loose.jsonl")) == 40
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    want = sum(official[r["prompt"]]["follow_all_instructions"] for r in subset)
    assert s["counts"]["prompts"] == 40 and s["counts"]["prompt_level_strict"] == want
    assert s["prompt_level_strict_acc"] == want / 40
    for k in ("inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"):
        assert 0.0 <= s[k] <= 1.0
    n_inst = sum(v["count"] for v in s["per_instruction"]["by_id"].values())
    assert n_inst == s["counts"]["instructions"] == sum(v["count"] for v in s["per_instruction"]["by_category"].values())
    assert all(":" not in c for c in s["per_instruction"]["by_category"])


def test_score_only_errors_are_one_line(cli, ifeval_dir, tmp_path):
    data = str(ifeval_dir / "input_data.jsonl")
    resp = tmp_path / "resp.jsonl"
    first = _jsonl(ifeval_dir / "gpt4_responses.jsonl")[0]
    resp.write_text(json.dumps(first) + "\n" + json.dumps({"prompt": "Unknown prompt", "response": "r"}) + "\n",
                    encoding="utf-8")
    p = cli("eval", "--responses", str(resp), "--output-dir", str(tmp_path / "o"), "--ifeval-data", data)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "resp.jsonl:2" in err and "prompt not found" in err


@pytest.mark.integration
def test_generate_then_resume_and_settings_guard(cli, tiny_model_dir, ifeval_dir, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", "--model", str(tiny_model_dir), "--output-dir", str(out), "--ifeval-data",
            str(ifeval_dir / "input_data.jsonl"), "--sample", "3", "--seed", "1", "--max-new-tokens", "6",
            "--batch-size", "2", "--no-progress"]
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["generation"]["stats"]["n_generated"] == 3 and s["counts"]["prompts"] == 3
    assert s["data"]["selection"] == {"sample": 3, "seed": 1}
    recs = _jsonl(out / "responses.jsonl")
    assert [set(r) for r in recs] == [{"key", "prompt", "response"}] * 3
    # the dtype generation ran in (auto resolved) is recorded for the resume guard and the report
    dtype = resolve_dtype("auto")
    assert json.loads((out / "generation.json").read_text(encoding="utf-8"))["dtype"] == dtype
    assert s["generation"]["dtype"] == s["generation"]["stats"]["dtype"] == dtype
    # drop one response and break the last line, as a killed run would leave it
    text = "".join(json.dumps(r) + "\n" for r in recs[:2])[:-10]
    (out / "responses.jsonl").write_text(text, encoding="utf-8")
    # resume in-process (what `sftlab run`/`sweep` call; saves a second interpreter start)
    data = str(ifeval_dir / "input_data.jsonl")
    s = evaluate(str(tiny_model_dir), out, ifeval_data=data, sample=3, seed=1,
                 gen=GenerationConfig(max_new_tokens=6, batch_size=2), progress=False)
    assert s == json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["generation"]["stats"]["n_reused"] == 1 and s["generation"]["stats"]["n_generated"] == 2
    assert sorted(r["prompt"] for r in _jsonl(out / "responses.jsonl")) == sorted(r["prompt"] for r in recs)
    # other settings must not be mixed into the same responses.jsonl (checked in-process: cheaper)
    with pytest.raises(SftlabError, match="max_new_tokens: 6 -> 7"):
        evaluate(str(tiny_model_dir), out, ifeval_data=data, sample=3, seed=1,
                 gen=GenerationConfig(max_new_tokens=7, batch_size=2), progress=False)
    other = "float32" if dtype == "bfloat16" else "bfloat16"
    with pytest.raises(SftlabError, match=f"dtype: '{dtype}' -> '{other}'"):
        evaluate(str(tiny_model_dir), out, ifeval_data=data, sample=3, seed=1,
                 gen=GenerationConfig(max_new_tokens=6, batch_size=2, dtype=other), progress=False)


def test_killed_eval_resumes_without_regenerating(tiny_model_dir, ifeval_dir, tmp_path, monkeypatch):
    """An evaluation interrupted right after its first responses were written (flushed and fsynced)
    resumes: the rerun generates only the prompts that had no response, and scores all of them."""
    import sftlab.eval.generate as gen_mod

    out, data = tmp_path / "ev", str(ifeval_dir / "input_data.jsonl")
    gen = GenerationConfig(max_new_tokens=6, batch_size=2)
    real_append, real_encode = gen_mod.append_responses, gen_mod.encode_prompt

    def append_then_die(path, records):
        real_append(path, records)
        raise KeyboardInterrupt  # Ctrl-C (or a kill) just after the first responses are on disk

    monkeypatch.setattr(gen_mod, "append_responses", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        evaluate(str(tiny_model_dir), out, ifeval_data=data, limit=5, gen=gen, progress=False)
    kept = {r["prompt"] for r in _jsonl(out / "responses.jsonl")}
    assert 1 <= len(kept) < 5 and not (out / "summary.json").exists()

    monkeypatch.setattr(gen_mod, "append_responses", real_append)
    encoded: list[str] = []

    def counting_encode(tok, prompt, system_prompt=None):
        encoded.append(prompt)
        return real_encode(tok, prompt, system_prompt)

    monkeypatch.setattr(gen_mod, "encode_prompt", counting_encode)
    s = evaluate(str(tiny_model_dir), out, ifeval_data=data, limit=5, gen=gen, progress=False)
    stats = s["generation"]["stats"]
    assert (stats["n_reused"], stats["n_generated"]) == (len(kept), 5 - len(kept))
    assert encoded and not kept & set(encoded)  # nothing finished before the kill is generated again
    recs = _jsonl(out / "responses.jsonl")
    assert len(recs) == 5 and len({r["prompt"] for r in recs}) == 5 and s["counts"]["prompts"] == 5


def test_missing_field_in_ifeval_data_names_line_and_field(cli, tiny_model_dir, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"key": 1, "prompt": "Hi", "kwargs": [{}]}) + "\n", encoding="utf-8")
    p = cli("eval", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o"), "--ifeval-data", str(data))
    assert p.returncode == 2
    assert "in.jsonl:1: field 'instruction_id_list': missing field" in p.stderr


def test_eval_settings_accept_dtype_and_auto_batch():
    """`sftlab run`/`sweep` eval blocks take the generation dtype and `batch_size: auto`; the dtype
    changes the responses, so it is part of the settings fingerprint."""
    from sftlab.errors import ConfigError
    from sftlab.experiment.sweep import EvalSettings

    s = EvalSettings.from_dict({"dtype": "bf16", "batch_size": "auto"})
    assert (s.dtype, s.batch_size) == ("bfloat16", None)
    g = s.generation_config()
    assert (g.dtype, g.batch_size) == ("bfloat16", None)
    assert s.fingerprint()["dtype"] == "bfloat16" and EvalSettings.from_dict({}).fingerprint()["dtype"] == "auto"
    assert EvalSettings.from_dict({"batch_size": 8}).generation_config().batch_size == 8
    with pytest.raises(ConfigError, match=r"eval\.dtype"):
        EvalSettings.from_dict({"dtype": "int8"})


# --------------------------------------------------------------------------- --sample-offset (issue #12)


def _one_line_error(capsys, argv):
    from sftlab.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_sample_offset_errors_exit_2_before_any_work(capsys, ifeval_dir, tmp_path):
    data, out = str(ifeval_dir / "input_data.jsonl"), tmp_path / "o"
    base = ["eval", "--model", "never-loaded", "--output-dir", str(out), "--ifeval-data", data]
    err = _one_line_error(capsys, [*base, "--sample", "100", "--sample-offset", "442"])
    assert "--sample 100 --sample-offset 442 needs 542 prompts, but the IFEval inputs hold only 541" in err
    assert "--sample-offset 100 needs --sample" in _one_line_error(capsys, [*base, "--sample-offset", "100"])
    assert "at least 0, got -3" in _one_line_error(capsys, [*base, "--sample", "5", "--sample-offset", "-3"])
    resp = tmp_path / "resp.jsonl"
    resp.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n", encoding="utf-8")
    err = _one_line_error(capsys, ["eval", "--responses", str(resp), "--output-dir", str(out), "--ifeval-data", data,
                                   "--sample-offset", "100"])
    assert "--sample-offset only apply when generating" in err
    assert not out.exists()


def test_sample_offset_is_recorded_and_guards_resume(tiny_model_dir, ifeval_dir, tmp_path):
    from sftlab.eval.ifeval import load_ifeval_inputs, select_inputs

    out, data = tmp_path / "second", str(ifeval_dir / "input_data.jsonl")
    gen = GenerationConfig(max_new_tokens=4, batch_size=2)
    s = evaluate(str(tiny_model_dir), out, ifeval_data=data, sample=2, seed=1, sample_offset=2, gen=gen,
                 progress=False)
    assert s["data"]["selection"] == {"sample": 2, "seed": 1, "sample_offset": 2}
    assert json.loads((out / "generation.json").read_text(encoding="utf-8"))["sample_offset"] == 2
    inputs = load_ifeval_inputs(data)
    first = {i["prompt"] for i in select_inputs(inputs, sample=2, seed=1)}
    second = {r["prompt"] for r in _jsonl(out / "responses.jsonl")}
    assert second == {i["prompt"] for i in select_inputs(inputs, sample=2, seed=1, sample_offset=2)}
    assert len(second) == 2 and not first & second
    with pytest.raises(SftlabError, match="sample_offset: 2 -> 0"):
        evaluate(str(tiny_model_dir), out, ifeval_data=data, sample=2, seed=1, gen=gen, progress=False)
    assert {r["prompt"] for r in _jsonl(out / "responses.jsonl")} == second  # nothing mixed in


def test_resume_guard_reads_a_record_without_sample_offset_as_offset_0(tmp_path):
    """generation.json written before --sample-offset existed: resuming it unchanged still works."""
    from sftlab.eval.bridge import _check_resume_settings

    old = {"model": "m", "max_new_tokens": 6, "dtype": "float32"}
    (tmp_path / "generation.json").write_text(json.dumps(old), encoding="utf-8")
    (tmp_path / "responses.jsonl").write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n", encoding="utf-8")
    _check_resume_settings(tmp_path, {**old, "sample_offset": 0})
    (tmp_path / "generation.json").write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(SftlabError, match="sample_offset: 0 -> 100"):
        _check_resume_settings(tmp_path, {**old, "sample_offset": 100})


def test_eval_settings_sample_offset_and_records_made_before_it(tmp_path, monkeypatch):
    import sftlab.eval.bridge
    from sftlab.errors import ConfigError
    from sftlab.experiment.stages import EvalSettings, guard_settings, run_eval
    from sftlab.experiment.sweep import _manifest_identity

    s = EvalSettings.from_dict({"sample": 100, "seed": 0, "sample_offset": 100})
    assert s.to_dict()["sample_offset"] == 100 and s.fingerprint()["sample_offset"] == 100
    default = EvalSettings.from_dict({"sample": 100, "seed": 0, "max_new_tokens": 512})
    assert default.sample_offset == 0 and "sample_offset" not in default.to_dict()
    for bad, msg in ((-1, r"eval\.sample_offset must be a non-negative integer"),
                     (True, r"eval\.sample_offset must be a non-negative integer"),
                     ("2", r"eval\.sample_offset must be a non-negative integer")):
        with pytest.raises(ConfigError, match=msg):
            EvalSettings.from_dict({"sample": 100, "sample_offset": bad})
    with pytest.raises(ConfigError, match="'sample_offset' needs 'sample'"):
        EvalSettings.from_dict({"limit": 10, "sample_offset": 10})
    # an eval block recorded before the key existed (run_config.yaml, sweep.json) matches the default
    old_block = {"ifeval_data": "google/IFEval", "limit": None, "sample": 100, "seed": 0, "max_new_tokens": 512,
                 "batch_size": None, "system_prompt": None, "backend": "hf", "dtype": "auto"}
    record = tmp_path / "run_config.yaml"
    guard_settings(record, {"model": "m", "eval": old_block}, what="an experiment")
    assert guard_settings(record, {"model": "m", "eval": default.to_dict()}, what="an experiment") is not None
    second = EvalSettings.from_dict({**old_block, "sample_offset": 100})
    with pytest.raises(ConfigError, match=r"eval\.sample_offset \(None -> 100\)"):
        guard_settings(record, {"model": "m", "eval": second.to_dict()}, what="an experiment")
    assert _manifest_identity({"eval": old_block}) == _manifest_identity({"eval": default.to_dict()})
    assert _manifest_identity({"eval": old_block}) != _manifest_identity({"eval": second.to_dict()})
    # run and sweep stages hand the offset to the evaluation
    seen = {}
    monkeypatch.setattr(sftlab.eval.bridge, "evaluate", lambda model, out, **kw: seen.update(kw) or {})
    run_eval("m", tmp_path / "ev", second)
    assert (seen["sample"], seen["seed"], seen["sample_offset"]) == (100, 0, 100)
