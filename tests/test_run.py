"""``sftlab run``: baseline eval, training, fine-tuned eval and report from one config, resumable per stage."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import run_cli
from test_sweep import tiny_eval_settings, tiny_train_config, write_conversations

from sftlab.errors import ConfigError
from sftlab.experiment.run import load_run_config, run_experiment
from sftlab.report import SECTION_TITLES


@pytest.fixture
def run_config(tmp_path, tiny_model_dir, ifeval_dir):
    data = write_conversations(tmp_path / "convs.jsonl")
    cfg = {**tiny_train_config(tiny_model_dir, data), "learning_rate": 2.0e-3,
           "output_dir": str(tmp_path / "exp"), "eval": {**tiny_eval_settings(ifeval_dir), "limit": 3}}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return p


@pytest.mark.integration
def test_run_end_to_end_then_rerun_skips_every_stage(run_config, tmp_path):
    out = tmp_path / "exp"
    proc = run_cli("run", str(run_config), "--eval.limit", "4")
    assert proc.returncode == 0, proc.stderr[-4000:]

    # layout
    for rel in ("run_config.yaml", "train_config.yaml", "baseline_eval/summary.json", "baseline_eval/responses.jsonl",
                "baseline_eval/eval_results_strict.jsonl", "train/model.safetensors", "train/train_summary.json",
                "train/metrics.jsonl", "train/sftlab_config.yaml", "finetuned_eval/summary.json",
                "finetuned_eval/eval_results_loose.jsonl", "report/report.md", "report/report.html",
                "report/report.json", "report/loss_exp.png", "report/ifeval.png"):
        assert (out / rel).is_file(), rel
    train_cfg = yaml.safe_load((out / "train_config.yaml").read_text())
    assert "eval" not in train_cfg and train_cfg["output_dir"] == str(out / "train")
    assert train_cfg["learning_rate"] == 2.0e-3
    resolved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert resolved["eval"]["limit"] == 4  # the command-line override won
    base = json.loads((out / "baseline_eval" / "summary.json").read_text())
    ft = json.loads((out / "finetuned_eval" / "summary.json").read_text())
    assert base["counts"]["prompts"] == ft["counts"]["prompts"] == 4
    assert base["generation"]["max_new_tokens"] == 16
    summary = json.loads((out / "train" / "train_summary.json").read_text())
    assert summary["global_step"] == 2

    # the terminal table repeats the measured figures
    m = re.search(r"prompt strict\s+([\d.]+)\s+([\d.]+)\s+([-+][\d.]+)", proc.stdout)
    assert m, proc.stdout
    assert float(m.group(1)) == pytest.approx(100 * base["prompt_level_strict_acc"], abs=0.05)
    assert float(m.group(2)) == pytest.approx(100 * ft["prompt_level_strict_acc"], abs=0.05)
    assert "report/report.html" in proc.stdout

    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert re.findall(r"^## (.+)$", md, flags=re.M) == list(SECTION_TITLES)
    assert f"{summary['first_loss']:.4f} → {summary['final_loss']:.4f}" in md
    assert "Only one configuration was trained" in md
    assert all(c["passed"] for c in json.loads((out / "report" / "report.json").read_text())["checks"])

    watched = [out / "baseline_eval" / "summary.json", out / "train" / "model.safetensors",
               out / "finetuned_eval" / "summary.json", out / "report" / "report.html"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    proc = run_cli("run", str(run_config), "--eval.limit", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for msg in ("[1/4] baseline: evaluation finished earlier, skipping", "[2/4] training: training finished earlier",
                "[3/4] fine-tuned: evaluation finished earlier", "[4/4] report is up to date, skipping"):
        assert msg in proc.stderr, msg
    assert {p: p.stat().st_mtime_ns for p in watched} == before

    # A half-done stage resumes: the fine-tuned eval lost its summary and half of its last response
    # (as after a kill); only that stage runs again, from responses.jsonl, and the report is rewritten.
    responses = (out / "finetuned_eval" / "responses.jsonl").read_text().splitlines()
    (out / "finetuned_eval" / "responses.jsonl").write_text("\n".join(responses[:2]) + "\n" + responses[2][:25])
    (out / "finetuned_eval" / "summary.json").unlink()
    proc = run_cli("run", str(run_config), "--eval.limit", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/4] baseline: evaluation finished earlier, skipping" in proc.stderr
    assert "[2/4] training: training finished earlier, skipping" in proc.stderr
    assert "[3/4] fine-tuned: resuming evaluation from" in proc.stderr
    assert "[4/4] writing the report" in proc.stderr
    lines = (out / "finetuned_eval" / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 4 and lines[:2] == responses[:2]
    assert (out / "train" / "model.safetensors").stat().st_mtime_ns == before[out / "train" / "model.safetensors"]
    assert (out / "report" / "report.html").stat().st_mtime_ns > before[out / "report" / "report.html"]

    # a changed config under the same output_dir is refused, naming what changed
    with pytest.raises(ConfigError, match="different config.*learning_rate"):
        run_experiment(load_run_config(run_config, {"eval.limit": 4, "learning_rate": 1e-3}))
    with pytest.raises(ConfigError, match="different config.*eval.max_new_tokens"):
        run_experiment(load_run_config(run_config, {"eval.limit": 4, "eval.max_new_tokens": 8}))


def test_run_config_errors(tmp_path, tiny_model_dir):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "data": "x.jsonl", "eval": {"limt": 3}}))
    with pytest.raises(ConfigError, match="did you mean 'limit'"):
        load_run_config(p)
    p.write_text(yaml.safe_dump({"data": "x.jsonl"}))
    with pytest.raises(ConfigError, match="'model' is required"):
        load_run_config(p)
    p.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "data": "x.jsonl", "eval": {"max_new_tokens": 8}}))
    cfg = load_run_config(p, {"eval.limit": 5, "learning_rate": 1e-4})
    assert cfg.eval.limit == 5 and cfg.eval.max_new_tokens == 8 and cfg.train["learning_rate"] == 1e-4
    assert str(cfg.output_dir) == "runs/c" and "eval" not in cfg.train_config()
    proc = run_cli("run", str(p), "--learnig_rate", "1e-4", "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 2 and "learnig_rate" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# The settings guard (no training: the first stage is stopped as soon as it is reached)
# --------------------------------------------------------------------------------------------


class StageReached(Exception):
    """Raised in place of the first stage: the settings guard let the experiment through."""


def test_guard_settings_records_then_compares(tmp_path):
    from sftlab.experiment.stages import guard_settings

    path = tmp_path / "rec.yaml"
    first = {"lr": 1e-3, "lora": {"r": 8, "alpha": 16}, "eval": {"limit": 3}, "tags": ("a", "b")}
    assert guard_settings(path, first, what="an experiment") is None
    assert yaml.safe_load(path.read_text())["lora"] == {"r": 8, "alpha": 16}
    # the same settings (a tuple reads back as a list; a key set to None is the key left out) resume
    assert guard_settings(path, {**first, "tags": ["a", "b"], "extra": None}, what="an experiment")["lr"] == 1e-3
    changed = {**first, "lora": {"r": 16, "alpha": 16}, "eval": {"limit": 5}}
    with pytest.raises(ConfigError) as e:
        guard_settings(path, changed, what="an experiment", noun="config")
    msg = str(e.value)
    assert "holds an experiment started with a different config" in msg
    assert "differs in: eval.limit (3 -> 5), lora.r (8 -> 16)" in msg and "lora.alpha" not in msg
    assert yaml.safe_load(path.read_text())["lora"]["r"] == 8  # a refused rerun leaves the record alone
    # only the compared part must match; a JSON record works the same way
    jpath = tmp_path / "rec.json"
    guard_settings(jpath, {"base": {"x": 1}, "runs": ["a"]}, what="a sweep")
    assert guard_settings(jpath, {"base": {"x": 1}, "runs": ["a", "b"]}, what="a sweep",
                          compared=lambda m: m["base"])["runs"] == ["a"]
    with pytest.raises(ConfigError, match=r"different base config \(differs in: base.x \(1 -> 2\)\)"):
        guard_settings(jpath, {"base": {"x": 2}, "runs": ["a"]}, what="a sweep", noun={"base": "base config"})
    with pytest.raises(ConfigError, match=r"\(1 -> 3\)\); delete it to start over$"):
        guard_settings(jpath, {"base": {"x": 3}, "runs": ["a"]}, what="a sweep", remedy="delete it to start over")
    # fresh: the stage produced nothing yet, so the record is simply replaced
    assert guard_settings(jpath, {"base": {"x": 2}}, what="a sweep", fresh=True) is None
    assert json.loads(jpath.read_text()) == {"base": {"x": 2}}


def test_run_resumes_with_the_same_config_and_refuses_a_changed_one(run_config, tmp_path, monkeypatch):
    import sftlab.experiment.run

    def stop(*args, **kwargs):
        raise StageReached

    monkeypatch.setattr(sftlab.experiment.run, "run_evals", stop)
    out = tmp_path / "exp"
    with pytest.raises(StageReached):
        run_experiment(load_run_config(run_config))
    recorded = (out / "run_config.yaml").read_text()
    train_recorded = (out / "train_config.yaml").read_text()
    with pytest.raises(StageReached):  # same settings: the guard lets the rerun resume
        run_experiment(load_run_config(run_config))
    with pytest.raises(ConfigError) as e:
        run_experiment(load_run_config(run_config, {"eval.limit": 2, "eval.system_prompt": "Be brief.", "learning_rate": 1e-3}))
    msg = str(e.value)
    assert f"{out} holds an experiment started with a different config" in msg
    assert "eval.limit (3 -> 2)" in msg and "learning_rate (0.002 -> 0.001)" in msg
    assert "eval.system_prompt (None -> 'Be brief.')" in msg
    assert (out / "run_config.yaml").read_text() == recorded
    assert (out / "train_config.yaml").read_text() == train_recorded
    # eval settings alone are not part of the training config: that record is refused on its own
    from sftlab.experiment.stages import write_train_config

    cfg = load_run_config(run_config, {"max_steps": 3})
    with pytest.raises(ConfigError, match=r"different training config \(differs in: max_steps \(2 -> 3\)\)"):
        write_train_config(out / "train_config.yaml", cfg.train_config(), what="an experiment")
