"""IFEval during training: ``ifeval_eval_steps`` scores a seeded IFEval sample into metrics.jsonl and
the loss curve, on the tiny model with a few prompts and a few tokens."""

from __future__ import annotations

import json

import pytest
from conftest import IFEVAL_DIR, REPO_ROOT, run_cli
from test_train import ok

from sftlab.errors import ConfigError

SMOKE = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")
SMOLTALK = REPO_ROOT / "tests" / "fixtures" / "smoltalk_like.jsonl"
IFEVAL_FILE = IFEVAL_DIR / "input_data.jsonl"


def _cfg(tiny_model_dir, *extra: str):
    from sftlab.train.config import load_config

    return load_config(SMOKE, ["--model", str(tiny_model_dir), "--data", str(SMOLTALK), *extra])[0]


@pytest.mark.integration
def test_ifeval_figures_are_logged_every_n_steps_and_plotted(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    ok(run_cli("train", SMOKE, "--model", str(tiny_model_dir), "--data", str(SMOLTALK), "--output_dir", str(out),
               "--max_steps", "4", "--ifeval_eval_steps", "2", "--ifeval_eval_sample", "3",
               "--ifeval_eval_max_new_tokens", "4", "--ifeval_eval_data", str(IFEVAL_FILE)))
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ife = [r for r in recs if "ifeval_prompt_strict" in r]
    assert [r["step"] for r in ife] == [2, 4]
    for r in ife:
        assert 0 <= r["ifeval_prompt_strict"] <= 1 and 0 <= r["ifeval_inst_strict"] <= 1 and r["ifeval_prompts"] == 3
    assert len([r for r in recs if "loss" in r]) == 4  # the loss history is untouched
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 4 and (out / "loss_curve.png").stat().st_size > 0


def test_sample_is_seeded_and_model_mode_is_restored(tmp_path, tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from sftlab.train.ifeval_callback import make_callback

    cfg = _cfg(tiny_model_dir, "--ifeval_eval_steps", "5", "--ifeval_eval_sample", "2",
               "--ifeval_eval_max_new_tokens", "3", "--ifeval_eval_data", str(IFEVAL_FILE))
    kw = {"metrics_path": tmp_path / "m.jsonl", "is_main": True}
    a = make_callback(cfg, tokenizer, seed=1, **kw)
    assert [i["key"] for i in a.inputs] == [i["key"] for i in make_callback(cfg, tokenizer, seed=1, **kw).inputs]
    assert [i["key"] for i in a.inputs] != [i["key"] for i in make_callback(cfg, tokenizer, seed=2, **kw).inputs]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.config.use_cache = False
    model.train()
    figures = a.score(model)
    assert set(figures) == {"ifeval_prompt_strict", "ifeval_inst_strict", "ifeval_prompts"}
    assert model.training and model.config.use_cache is False
    assert make_callback(_cfg(tiny_model_dir), tokenizer, seed=1, **kw) is None  # off by default


def test_ifeval_data_defaults_to_the_experiment_then_google(tiny_model_dir):
    from sftlab.train.ifeval_callback import ifeval_data_of

    assert ifeval_data_of(_cfg(tiny_model_dir)) == "google/IFEval"
    assert ifeval_data_of(_cfg(tiny_model_dir, "--eval", "{ifeval_data: /x.jsonl}")) == "/x.jsonl"
    assert ifeval_data_of(_cfg(tiny_model_dir, "--eval", "{ifeval_data: /x.jsonl}", "--ifeval_eval_data", "/y")) == "/y"


@pytest.mark.parametrize("extra, words", [
    (["--ifeval_eval_steps", "0"], "ifeval_eval_steps must be >= 1"),
    (["--ifeval_eval_steps", "5", "--ifeval_eval_sample", "0"], "ifeval_eval_sample must be >= 1"),
])
def test_bad_settings_are_config_errors(tiny_model_dir, extra, words):
    with pytest.raises(ConfigError, match=words):
        _cfg(tiny_model_dir, *extra)


def test_loss_curve_draws_ifeval_on_a_second_axis(tmp_path, monkeypatch):
    import matplotlib.axes

    from sftlab.train.loss_curve import plot_loss_curve

    calls = []
    real = matplotlib.axes.Axes.twinx
    monkeypatch.setattr(matplotlib.axes.Axes, "twinx", lambda self: calls.append(1) or real(self))
    recs = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
            {"step": 2, "ifeval_prompt_strict": 0.25, "ifeval_inst_strict": 0.4}]
    assert plot_loss_curve(recs, tmp_path / "a.png")
    assert calls == [1]
    assert plot_loss_curve(recs[:2], tmp_path / "b.png") and calls == [1]  # no IFEval, no second axis
