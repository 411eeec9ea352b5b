"""Every config shipped in configs/ is valid as the command it is written for would read it.

Why: the demo and sweep files are what a newcomer runs first; a renamed key or a bad value must fail
here, not an hour into ``make demo``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sftlab.train.config import read_config_file

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path, monkeypatch):
    from sftlab.experiment.stages import validate_train_mapping

    monkeypatch.chdir(path.parent.parent)  # relative paths (../shared, configs/...) as from the repo root
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "base" in raw:  # a sweep file: every run's training config must validate
        from sftlab.experiment.sweep import load_sweep_config

        cfg = load_sweep_config(path)
        assert cfg.runs, f"{path.name}: no runs"
        for spec in cfg.runs:
            validate_train_mapping(cfg.train_config(spec), where=f"{path.name} run {spec.name}")
    elif "eval" in raw:  # sftlab run: the training part plus the eval block
        from sftlab.experiment.run import load_run_config

        cfg = load_run_config(path)
        validate_train_mapping(cfg.train_config(), where=path.name)
    else:
        validate_train_mapping(read_config_file(path), where=path.name)


def test_demo_config_holds_out_types_and_evaluates_the_demo_prompts():
    """The demo's claims rest on these settings: augmented data with held-out types, the seed-0
    100-prompt sample, and drop truncation (a cut reply no longer satisfies its instructions)."""
    from sftlab.augment import AugmentConfig
    from sftlab.experiment.run import load_run_config

    cfg = load_run_config(CONFIGS[0].parent / "cpu-demo.yaml")
    aug = AugmentConfig.from_dict(cfg.train["augment"])
    assert aug.holdout_types and not set(aug.holdout_types) & set(aug.active_types())
    assert cfg.train["truncation"] == "drop"
    assert (cfg.eval.sample, cfg.eval.seed) == (100, 0)
