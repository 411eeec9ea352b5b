"""``sftlab sweep``: two tiny configurations trained and evaluated end to end, the results table, reruns.

The sweep is built once per session (``ensure_sweep``; test_report.py reuses it): a tiny random-init
Llama on the real SmolLM2 tokenizer, 30 tiny conversations, 2 optimizer steps per run, 4 IFEval
prompts with 16 new tokens.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from sftlab.errors import ConfigError
from sftlab.experiment.sweep import expand_override_sets, load_sweep_config, run_name, run_sweep
from sftlab.layout import safe_name

LEARNING_RATES = [1.0e-3, 3.0e-3]
_CACHE: dict[str, subprocess.CompletedProcess] = {}


def write_conversations(path: Path, n: int = 30, seed: int = 0) -> Path:
    """Tiny ShareGPT-style conversations, a third of them two rounds long."""
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            conv = [{"from": "human", "value": text(3, 9)}, {"from": "gpt", "value": text(3, 12)}]
            if i % 3 == 0:
                conv += [{"from": "human", "value": "And then? " + text(1, 4)}, {"from": "gpt", "value": text(2, 8)}]
            f.write(json.dumps({"id": f"c{i}", "conversations": conv}) + "\n")
    return path


def tiny_train_config(model_dir: Path, data: Path) -> dict:
    return {
        "model": str(model_dir), "data": str(data), "chat_template": "chatml", "model_max_length": 128,
        "per_device_train_batch_size": 2, "total_batch_size": 4, "max_steps": 2, "eval_fraction": 0.1,
        "save_steps": 100, "logging_steps": 1, "num_proc": 1, "dtype": "fp32", "seed": 0,
    }


def tiny_eval_settings(ifeval_dir: Path) -> dict:
    return {"ifeval_data": str(ifeval_dir / "input_data.jsonl"), "limit": 4, "max_new_tokens": 16, "batch_size": 4}


def sweep_root(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "sftlab-e2e-sweep"


def ensure_sweep(tmp_path_factory, tiny_model_dir: Path, ifeval_dir: Path) -> tuple[Path, Path]:
    """Build (once per session) and return ``(sweep.yaml, sweep output dir)``."""
    root = sweep_root(tmp_path_factory)
    sweep_yaml = root / "sweep.yaml"
    out = root / "sweep"
    if "first" not in _CACHE:
        root.mkdir(parents=True, exist_ok=True)
        data = write_conversations(root / "convs.jsonl")
        (root / "base.yaml").write_text(yaml.safe_dump(tiny_train_config(tiny_model_dir, data)), encoding="utf-8")
        sweep_yaml.write_text(yaml.safe_dump({
            "base": "base.yaml",  # relative to the sweep file
            "grid": {"learning_rate": LEARNING_RATES},
            "eval": tiny_eval_settings(ifeval_dir),
            "output_dir": str(out),
        }), encoding="utf-8")
        _CACHE["first"] = run_cli("sweep", str(sweep_yaml))
    proc = _CACHE["first"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_yaml, out


@pytest.fixture
def built_sweep(tmp_path_factory, tiny_model_dir, ifeval_dir):
    return ensure_sweep(tmp_path_factory, tiny_model_dir, ifeval_dir)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_sweep_trains_evaluates_and_writes_results(built_sweep):
    _, out = built_sweep
    manifest = json.loads((out / "sweep.json").read_text())
    names = [r["name"] for r in manifest["runs"]]
    assert names == ["lr-0.001", "lr-0.003"]
    assert manifest["varied"] == ["learning_rate"]
    for name in names:
        run = out / "runs" / name
        assert (run / "DONE").is_file()
        assert (run / "train" / "model.safetensors").is_file()
        assert (run / "eval" / "summary.json").is_file()
        cfg = yaml.safe_load((run / "train_config.yaml").read_text())
        assert "eval" not in cfg and cfg["output_dir"] == str(run / "train")
    assert (out / "baseline_eval" / "summary.json").is_file()

    rows = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    assert [r["run"] for r in rows] == names
    for col in ("learning_rate", "epochs", "total_batch", "warmup", "scheduler", "max_length", "final_train_loss",
                "prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc",
                "best"):
        assert col in rows[0], col
    for row, lr in zip(rows, LEARNING_RATES, strict=True):
        run = out / "runs" / row["run"]
        assert float(row["learning_rate"]) == lr
        assert row["total_batch"] == "4" and row["max_length"] == "128" and row["scheduler"] == "linear"
        losses = [m["loss"] for m in map(json.loads, open(run / "train" / "metrics.jsonl")) if "loss" in m]
        assert float(row["final_train_loss"]) == pytest.approx(losses[-1])
        summary = json.loads((run / "eval" / "summary.json").read_text())
        for k in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"):
            assert float(row[k]) == pytest.approx(summary[k])
        assert summary["counts"]["prompts"] == 4
    best = [r for r in rows if r["best"] == "True"]
    assert len(best) == 1
    assert float(best[0]["prompt_level_strict_acc"]) == max(float(r["prompt_level_strict_acc"]) for r in rows)

    md = (out / "results.md").read_text()
    assert f"**{best[0]['run']}**" in md and "**best**" in md
    assert sum(1 for line in md.splitlines() if line.startswith("| ") and "lr-0.00" in line) == 2
    assert (out / "report" / "report.html").is_file()


@pytest.mark.integration
def test_rerun_skips_finished_work_and_resumes_unfinished(built_sweep):
    sweep_yaml, out = built_sweep
    watched = [out / "baseline_eval" / "summary.json", out / "report" / "report.html"]
    for name in ("lr-0.001", "lr-0.003"):
        run = out / "runs" / name
        watched += [run / "DONE", run / "train" / "model.safetensors", run / "train" / "train_summary.json",
                    run / "eval" / "summary.json", run / "eval" / "responses.jsonl"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    proc = run_cli("sweep", str(sweep_yaml))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "baseline: evaluation finished earlier, skipping" in proc.stderr
    assert proc.stderr.count("finished earlier, skipping") == 3
    assert "report is up to date, skipping" in proc.stderr
    assert "training:" not in proc.stderr and "evaluating" not in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in watched} == before

    # An unfinished run (evaluation cut short: no summary, no DONE) resumes: training is skipped,
    # evaluation continues from responses.jsonl, and the run is marked done again.
    run = out / "runs" / "lr-0.003"
    (run / "DONE").unlink()
    (run / "eval" / "summary.json").unlink()
    model_mtime = (run / "train" / "model.safetensors").stat().st_mtime_ns
    proc = run_cli("sweep", str(sweep_yaml))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'lr-0.003': training finished earlier, skipping" in proc.stderr
    assert "'lr-0.003': resuming evaluation from" in proc.stderr
    assert "run 1/2 'lr-0.001' finished earlier, skipping" in proc.stderr
    assert (run / "DONE").is_file() and (run / "eval" / "summary.json").is_file()
    assert (run / "train" / "model.safetensors").stat().st_mtime_ns == model_mtime
    assert (out / "report" / "report.html").stat().st_mtime_ns > before[out / "report" / "report.html"]


@pytest.mark.integration
def test_changed_base_config_or_eval_settings_are_refused(built_sweep):
    sweep_yaml, out = built_sweep
    before = (out / "sweep.json").read_text()
    with pytest.raises(ConfigError, match="different base config.*max_steps"):
        run_sweep(load_sweep_config(sweep_yaml, {"max_steps": 3}))
    with pytest.raises(ConfigError, match="different eval settings"):
        run_sweep(load_sweep_config(sweep_yaml, {"eval.max_new_tokens": 17}))
    assert (out / "sweep.json").read_text() == before


# --------------------------------------------------------------------------------------------
# Config parsing (no training)
# --------------------------------------------------------------------------------------------


def _write(tmp_path: Path, obj: dict) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(obj), encoding="utf-8")
    return p


def test_grid_and_explicit_runs_expand(tmp_path, tiny_model_dir):
    base = tiny_train_config(tiny_model_dir, tmp_path / "d.jsonl")
    p = _write(tmp_path, {"base": base, "grid": {"learning_rate": ["1e-5", 2e-5], "num_train_epochs": [1, 2]},
                          "runs": [{"masking": "assistant"}, {"masking": "reverse"}],
                          "eval": {"limit": 2}, "output_dir": str(tmp_path / "o")})
    cfg = load_sweep_config(p, {"eval.max_new_tokens": 8, "max_samples": 10})
    assert len(cfg.runs) == 8
    assert cfg.varied == ["masking", "learning_rate", "num_train_epochs"]
    names = [r.name for r in cfg.runs]
    assert len(set(names)) == 8
    assert names[0] == "mask-assistant_lr-1e-05_ep-1"  # "1e-5" (YAML 1.1 string) read as a float
    assert cfg.eval.max_new_tokens == 8 and cfg.eval.limit == 2
    named = load_sweep_config(_write(tmp_path, {"base": base, "grid": {"learning_rate": [1e-5, 2e-5]},
                                                "runs": [{"name": "short run", "max_steps": 2}],
                                                "output_dir": "o"}))
    assert [r.name for r in named.runs] == ["short-run_lr-1e-05", "short-run_lr-2e-05"]
    tc = cfg.train_config(cfg.runs[-1])
    assert tc["max_samples"] == 10 and tc["masking"] == "reverse" and tc["learning_rate"] == 2e-5
    assert tc["output_dir"] == str(tmp_path / "o" / "runs" / names[-1] / "train")


def test_run_names_are_stable_and_filesystem_safe():
    assert run_name({"learning_rate": 2e-5, "num_train_epochs": 3}, ["learning_rate", "num_train_epochs"]) == \
        "lr-2e-05_ep-3"
    assert run_name({"data": "/x/y/my data.jsonl"}, ["data"]) == "data-my-data.jsonl"
    assert run_name({"lora.r": 8}, ["lora.r"]) == "lora-r-8"
    assert run_name({"learning_rate": 1e-5, "seed": 1}, ["learning_rate"]) == "lr-1e-05"
    long = safe_name("x" * 300)
    assert len(long) <= 96 and long == safe_name("x" * 300)
    assert safe_name("a/b:c*d") == "a-b-c-d"
    assert expand_override_sets({"a": [1, 2]}, [{"b": 1}, {"b": 2}]) == [
        {"b": 1, "a": 1}, {"b": 1, "a": 2}, {"b": 2, "a": 1}, {"b": 2, "a": 2}]


@pytest.mark.parametrize("obj, msg", [
    ({"grid": {"learning_rate": [1e-5]}, "output_dir": "o", "evall": {}}, "did you mean 'eval'"),
    ({"grid": {"learning_rate": [1e-5]}, "output_dir": "o", "eval": {"limit": 2, "sample": 3}}, "either 'limit' or"),
    ({"grid": {"learning_rate": [1e-5]}, "output_dir": "o", "eval": {"max_new_token": 3}}, "max_new_tokens"),
    ({"grid": {"learning_rate": 1e-5}, "output_dir": "o"}, "non-empty list"),
    ({"output_dir": "o"}, "needs 'grid'"),
    ({"grid": {"learning_rate": [1e-5]}}, "needs 'output_dir'"),
])
def test_sweep_config_errors(tmp_path, tiny_model_dir, obj, msg):
    p = _write(tmp_path, {"base": tiny_train_config(tiny_model_dir, tmp_path / "d.jsonl"), **obj})
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        load_sweep_config(p)


def test_invalid_run_config_fails_before_any_training(tmp_path, tiny_model_dir, ifeval_dir):
    data = write_conversations(tmp_path / "c.jsonl", n=4)
    p = _write(tmp_path, {"base": tiny_train_config(tiny_model_dir, data), "runs": [{"learning_rate": 1e-3},
                                                                                    {"learnig_rate": 1e-3}],
                          "eval": tiny_eval_settings(ifeval_dir), "output_dir": str(tmp_path / "o")})
    proc = run_cli("sweep", str(p))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "learnig_rate" in proc.stderr and "learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "o").glob("runs/*/train/*")), "nothing may be trained before every config is valid"


class StageReached(Exception):
    """Raised in place of the first stage: the settings guard let the sweep through."""


def test_sweep_resumes_with_the_same_settings_and_refuses_changed_ones(tmp_path, tiny_model_dir, ifeval_dir,
                                                                        monkeypatch):
    import sftlab.experiment.sweep

    def stop(*args, **kwargs):
        raise StageReached

    monkeypatch.setattr(sftlab.experiment.sweep, "run_evals", stop)
    data = write_conversations(tmp_path / "c.jsonl", n=4)
    out = tmp_path / "o"
    p = _write(tmp_path, {"base": tiny_train_config(tiny_model_dir, data), "grid": {"learning_rate": [1e-3, 2e-3]},
                          "eval": tiny_eval_settings(ifeval_dir), "output_dir": str(out)})
    with pytest.raises(StageReached):
        run_sweep(load_sweep_config(p))
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == ["lr-0.001", "lr-0.002"]
    # the same settings resume; so do a batch size that cannot change greedy outputs and a longer grid
    with pytest.raises(StageReached):
        run_sweep(load_sweep_config(p, {"eval.batch_size": 2, "grid.learning_rate": [1e-3, 2e-3, 3e-3]}))
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == ["lr-0.001", "lr-0.002", "lr-0.003"]
    with pytest.raises(ConfigError) as e:
        run_sweep(load_sweep_config(p, {"max_steps": 3, "eval.limit": 2}))
    msg = str(e.value)
    assert f"{out} holds a sweep started with a different base config and eval settings" in msg
    assert "differs in: base.max_steps (2 -> 3), eval.limit (4 -> 2)" in msg
    assert [r["name"] for r in json.loads((out / "sweep.json").read_text())["runs"]] == [
        "lr-0.001", "lr-0.002", "lr-0.003"]
    # one run's training config is guarded on its own too
    (out / "runs" / "lr-0.001" / "train_config.yaml").write_text(
        yaml.safe_dump({**tiny_train_config(tiny_model_dir, data), "learning_rate": 5e-4}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"runs/lr-0.001 holds run 'lr-0.001' started with a different training "
                                          r"config \(differs in: learning_rate \(0.0005 -> 0.001\), output_dir"):
        run_sweep(load_sweep_config(p))
