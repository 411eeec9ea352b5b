"""``sftlab compare``: two eval outputs on their shared prompts, paired standard errors, the trained/held-out split.

The verdicts are ``test_report_data.VERDICTS`` (a known answer); the standard errors are recomputed
here with numpy from those verdicts, not from sftlab's code.
"""

from __future__ import annotations

import json

import pytest
from test_report_data import (
    CAPITAL,
    NO_COMMA,
    QUOTATION,
    VERDICTS,
    fabricated_eval,
    fake_train_dir,
    se,
)

from sftlab.cli import main


def _cols(col: int, *, prompt_level: bool, prompts: list[str] | None = None) -> list:
    vs = [v for p, v in VERDICTS.items() if prompts is None or p in prompts]
    return [all(v[col]) for v in vs] if prompt_level else [x for v in vs for x in v[col]]


def test_compare_prints_and_writes_paired_figures_and_the_type_split(tmp_path, tokenizer, capsys):
    td = fake_train_dir(tmp_path / "train", tokenizer)
    fabricated_eval(tmp_path / "base", "base", model="base-model")
    # the fine-tuned eval records the train dir as its model: the split comes from it without --train-dir
    fabricated_eval(tmp_path / "ft", "ft", model={"spec": str(td), "path": str(td.resolve())})
    rc = main(["compare", "--baseline", str(tmp_path / "base"), "--finetuned", str(tmp_path / "ft"),
               "--json", str(tmp_path / "cmp.json")])
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    assert res["shared_prompts"] == 6 and res["shared_instructions"] == 8
    assert res["train_dir"] == str(td.resolve()) and res["train_dir_from"] == "the fine-tuned model"
    for metric, (a, b, prompt_level) in {"prompt_level_strict_acc": (1, 2, True), "prompt_level_loose_acc": (3, 4, True),
                                         "inst_level_strict_acc": (1, 2, False),
                                         "inst_level_loose_acc": (3, 4, False)}.items():
        before, after = _cols(a, prompt_level=prompt_level), _cols(b, prompt_level=prompt_level)
        m = res["metrics"][metric]
        assert m["n"] == len(before) == (6 if prompt_level else 8)
        assert m["baseline_pct"] == pytest.approx(100 * sum(before) / len(before))
        assert m["delta_points"] == pytest.approx(100 * (sum(after) - sum(before)) / len(before))
        assert m["paired_se_points"] == pytest.approx(100 * se(before, after))
        assert m["z"] == pytest.approx(m["delta_points"] / m["paired_se_points"])
        assert m["won"] == sum(1 for x, y in zip(before, after, strict=True) if y and not x)
        assert m["lost"] == sum(1 for x, y in zip(before, after, strict=True) if x and not y)
    ps = res["metrics"]["prompt_level_strict_acc"]
    line = next(s for s in out.splitlines() if s.startswith("prompt strict"))
    assert line.split() == ["prompt", "strict", "6", "prompts", "33.3", "50.0", "+16.7",
                            f"{ps['paired_se_points']:.1f}", f"{ps['z']:+.2f}", "2", "1"]
    assert out.startswith("6 prompts shared (8 instructions)")
    g = res["groups"]
    assert (g["trained"]["instructions"], g["held-out"]["instructions"], g["other"]["instructions"]) == (5, 2, 1)
    assert g["trained"]["strict"]["delta_points"] == pytest.approx(80)
    assert g["trained"]["loose"]["delta_points"] == pytest.approx(40)
    assert g["held-out"]["strict"]["paired_se_points"] == pytest.approx(50)
    assert g["other"]["strict"]["paired_se_points"] is None and g["other"]["strict"]["z"] is None
    assert res["type_split"]["held_out"] == [CAPITAL]
    groups = {r["id"]: r["group"] for r in res["per_type"]}
    assert groups[NO_COMMA] == "trained" and groups[CAPITAL] == "held-out" and groups[QUOTATION] == "other"
    assert "3 trained, 1 held out" in out and next(s for s in out.splitlines() if s.startswith("held-out")).split()[
        :6] == ["held-out", "1", "2", "50.0", "0.0", "-50.0"]


def test_compare_uses_only_the_shared_prompts(tmp_path, capsys):
    shared = list(VERDICTS)[:4]
    fabricated_eval(tmp_path / "base", "base")
    fabricated_eval(tmp_path / "ft", "ft", prompts=shared)
    no_aug = tmp_path / "train"
    no_aug.mkdir()
    (no_aug / "sftlab_config.yaml").write_text("model: tiny\ndata: x.jsonl\n", encoding="utf-8")
    assert main(["compare", "--baseline", str(tmp_path / "base"), "--finetuned", str(tmp_path / "ft"),
                 "--train-dir", str(no_aug), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert (res["shared_prompts"], res["baseline"]["prompts"], res["finetuned"]["prompts"]) == (4, 6, 4)
    before, after = _cols(1, prompt_level=True, prompts=shared), _cols(2, prompt_level=True, prompts=shared)
    assert res["metrics"]["prompt_level_strict_acc"]["paired_se_points"] == pytest.approx(100 * se(before, after))
    assert res["type_split"] is None and res["groups"] is None
    assert f"no trained/held-out split: {no_aug} has no augment: block" in out


def test_compare_errors_are_one_line_exit_2(tmp_path, capsys):
    prompts = list(VERDICTS)
    fabricated_eval(tmp_path / "base", "base", prompts=prompts[:3])
    fabricated_eval(tmp_path / "other", "ft", prompts=prompts[3:])
    (tmp_path / "empty").mkdir()
    cases = {
        ("--baseline", str(tmp_path / "base"), "--finetuned", str(tmp_path / "other")): "share no prompt",
        ("--baseline", str(tmp_path / "empty"), "--finetuned", str(tmp_path / "other")):
            "--baseline: " + str(tmp_path / "empty") + " is not a finished evaluation",
        ("--baseline", str(tmp_path / "base"), "--finetuned", str(tmp_path / "missing")): "--finetuned: ",
        ("--baseline", str(tmp_path / "base"), "--finetuned", str(tmp_path / "base"), "--train-dir",
         str(tmp_path / "empty")): "is not an 'sftlab train' output",
    }
    for args, message in cases.items():
        assert main(["compare", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("sftlab compare: error: ") and message in err and err.count("\n") == 1, err


def test_compare_is_a_registered_command(cli):
    proc = cli("compare", "--help")
    assert proc.returncode == 0 and "--finetuned EVAL_DIR" in proc.stdout and "--train-dir DIR" in proc.stdout
    proc = cli("--help")
    assert "compare" in proc.stdout
