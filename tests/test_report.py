"""``sftlab report``: the 9 sections filled from measured data, real PNGs, rendering in headless Chromium.

The report of the tiny sweep (built once, see test_sweep.ensure_sweep) is checked as written; a
second report pairs a real training run with IFEval verdicts that differ (GPT-4's released
responses vs a one-word answer, scored by sftlab's scorer) so that the improved/regressed call-outs
and the example outputs have something to show.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_sweep import ensure_sweep

from sftlab.report import SECTION_TITLES, binomial_se, paired_se

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"
TAB_BLUE = np.array([31, 119, 180]) / 255  # matplotlib's first line colour: present only inside the plots


@pytest.fixture
def sweep_report(tmp_path_factory, tiny_model_dir, ifeval_dir) -> Path:
    _, out = ensure_sweep(tmp_path_factory, tiny_model_dir, ifeval_dir)
    return out / "report"


def _strict_by_id(eval_dir: Path) -> dict[str, float]:
    """Strict accuracy per instruction id, counted straight from ``eval_results_strict.jsonl``."""
    n: dict[str, list[int]] = {}
    for r in map(json.loads, open(eval_dir / "eval_results_strict.jsonl", encoding="utf-8")):
        for iid, ok in zip(r["instruction_id_list"], r["follow_instruction_list"], strict=True):
            n.setdefault(iid, []).append(int(ok))
    return {k: sum(v) / len(v) for k, v in n.items()}


def sections_of(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.integration
def test_report_has_the_nine_sections_filled_from_the_runs(sweep_report):
    import torch
    import transformers

    md = (sweep_report / "report.md").read_text(encoding="utf-8")
    secs = sections_of(md)
    assert list(secs) == list(SECTION_TITLES)
    data = json.loads((sweep_report / "report.json").read_text())
    sweep = sweep_report.parent
    runs = ["lr-0.001", "lr-0.003"]

    env = secs["1. Environment"]
    assert torch.__version__ in env and transformers.__version__ in env and "CPU" in env

    method = secs["2. Method and checks"]
    assert "Masking strategy `assistant`" in method
    assert "<|im_start|>assistant" in method and "<|im_end|>" in method and "⟦" in method
    # the rendered conversation is one of the training conversations
    convs = [json.loads(line) for line in open(sweep.parent / "convs.jsonl")]
    assert any(c["conversations"][0]["value"] in method for c in convs)
    checks = data["checks"]
    assert len(checks) >= 5 and all(c["passed"] for c in checks), checks
    assert f"{len(checks)}/{len(checks)} passed" in method and "FAIL" not in method
    assert "masking fast path vs prefix reference" in method and "float64" in method

    train = secs["3. Training configuration"]
    for name in runs:
        s = json.loads((sweep / "runs" / name / "train" / "train_summary.json").read_text())
        assert f"`{name}`" in train
        assert str((sweep / "runs" / name / "train").resolve()) in train
        assert f"{s['first_loss']:.4f} → {s['final_loss']:.4f}" in train
    assert "| learning rate | 0.001 | 0.003 |" in train and "| effective batch | 4 | 4 |" in train
    assert "| gradient accumulation | 2 | 2 |" in train

    data_sec = secs["4. Data"]
    st = json.loads((sweep / "runs" / runs[0] / "train" / "stats.json").read_text())
    assert f"| records read | {st['records_read']} |" in data_sec and f"| kept | {st['kept']} |" in data_sec
    assert "All 2 runs trained on the same data" in data_sec
    assert "The training data holds no added IFEval-style constraints" in data_sec

    loss = secs["5. Loss curves"]
    for name in runs:
        assert f"](loss_{name}.png)" in loss
    assert "](loss_all_runs.png)" in loss

    base = json.loads((sweep / "baseline_eval" / "summary.json").read_text())
    cmp_ = secs["6. Baseline vs fine-tuned"]
    assert f"| prompt strict | {100 * base['prompt_level_strict_acc']:.1f} |" in cmp_
    for c in data["comparisons"]:
        ft = json.loads((sweep / "runs" / c["run"] / "eval" / "summary.json").read_text())
        assert c["figures"]["inst_level_loose_acc"] == pytest.approx(ft["inst_level_loose_acc"])
        assert c["delta_prompt_strict"] == pytest.approx(ft["prompt_level_strict_acc"] - base["prompt_level_strict_acc"])

    per = secs["7. Per-instruction results"]
    inputs = [json.loads(line) for line in open(Path(base["data"]["source"]))][:4]
    for iid in {i for inp in inputs for i in inp["instruction_id_list"]}:
        assert f"`{iid}`" in per
    # the improved/regressed call-outs follow from the verdict files of the baseline and the best run
    best = data["best_run"]
    before, after = _strict_by_id(sweep / "baseline_eval"), _strict_by_id(sweep / "runs" / best / "eval")
    improved, regressed = _bullet(per, "Improved"), _bullet(per, "Regressed")
    for iid in before:
        d = after[iid] - before[iid]
        assert (f"`{iid}`" in improved) == (d > 0) and (f"`{iid}`" in regressed) == (d < 0), (iid, d)

    assert secs["8. Example outputs"].strip()
    analysis = secs["9. Hyperparameters and analysis"]
    rows = list(csv.DictReader(open(sweep / "results.csv", encoding="utf-8")))
    assert f"Best run by prompt-level strict accuracy: **{best}**" in analysis
    assert best == next(r["run"] for r in rows if r["best"] == "True")
    lowest = min(rows, key=lambda r: float(r["final_train_loss"]))
    assert f"Lowest final training loss: `{lowest['run']}` ({float(lowest['final_train_loss']):.4f})" in analysis
    # the results table is the one in results.md (both runs were scored on the same prompts)
    table = [line for line in (sweep / "results.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 4 and all(line in analysis for line in table)


@pytest.mark.integration
def test_report_images_are_real_pngs(sweep_report):
    import matplotlib.image as mpimg

    names = json.loads((sweep_report / "report.json").read_text())["images"]
    assert set(names) >= {"loss_lr-0.001.png", "loss_lr-0.003.png", "loss_all_runs.png", "ifeval.png"}
    for name in names:
        p = sweep_report / name
        assert p.read_bytes()[:8] == PNG_MAGIC, name
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 150 and img.shape[1] > 250
        assert (img[..., :3] < 0.5).any(), f"{name} is blank"
    html = (sweep_report / "report.html").read_text(encoding="utf-8")
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(names)
    assert {base64.b64decode(e) for e in embedded} == {(sweep_report / n).read_bytes() for n in names}
    assert "<script" not in html and 'src="http' not in html  # self-contained


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: headless Chromium renders report.html in this test; "
                    f"install it with `apt-get install -y chromium` (scripts/setup.sh does when run as root)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.integration
def test_report_html_renders_in_headless_chromium(sweep_report, tmp_path):
    import matplotlib.image as mpimg

    url = (sweep_report / "report.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_images = len(json.loads((sweep_report / "report.json").read_text())["images"])
    assert dom.stdout.count('<img src="data:image/png;base64,') == n_images
    assert dom.stdout.count("<h2>") == 9 and "5. Loss curves" in dom.stdout

    shot = tmp_path / "shot.png"
    proc = _chromium([f"--screenshot={shot}", "--window-size=1200,6000", "--hide-scrollbars", url],
                     tmp_path / "profile2")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (6000, 1200)
    assert (img < 0.9).mean() > 0.01, "the page rendered blank"
    # The loss-curve lines are drawn in matplotlib's tab:blue, a colour nothing else on the page uses:
    # finding it proves the embedded PNGs were decoded and drawn (a broken image shows an icon instead).
    near_blue = (np.abs(img - TAB_BLUE).max(axis=-1) < 0.06).sum()
    assert near_blue > 200, f"only {near_blue} plot-coloured pixels in the screenshot"


# --------------------------------------------------------------------------------------------
# A report with real differences between baseline and fine-tuned verdicts
# --------------------------------------------------------------------------------------------


def _write_eval(out: Path, inputs: list[dict], responses: dict[str, str], model: str) -> dict:
    from sftlab.eval.ifeval import score_responses, write_results

    out.mkdir(parents=True)
    with open(out / "responses.jsonl", "w", encoding="utf-8") as f:
        for inp in inputs:
            f.write(json.dumps({"key": inp["key"], "prompt": inp["prompt"], "response": responses[inp["prompt"]]}) + "\n")
    results = score_responses(inputs, responses)
    write_results(out, results, {"model": {"spec": model}})
    return results


@pytest.mark.integration
def test_report_calls_out_improvements_regressions_and_examples(tmp_path, tmp_path_factory, tiny_model_dir, ifeval_dir):
    from sftlab.eval.ifeval import load_ifeval_inputs, score_responses

    _, sweep = ensure_sweep(tmp_path_factory, tiny_model_dir, ifeval_dir)
    inputs = load_ifeval_inputs(str(ifeval_dir / "input_data_gpt4_era.jsonl"))[:12]
    gpt4 = {r["prompt"]: r["response"] for r in map(json.loads, open(ifeval_dir / "gpt4_responses.jsonl"))}
    good = {i["prompt"]: gpt4[i["prompt"]] for i in inputs}
    verdicts = score_responses(inputs, good)["strict"]
    passing = [r["prompt"] for r in verdicts if r["follow_all_instructions"]]
    assert len(passing) >= 3
    regress = passing[0]
    base_resp = {p: ("ok" if p != regress else good[p]) for p in good}
    ft_resp = {p: (good[p] if p != regress else "ok") for p in good}
    base = _write_eval(tmp_path / "base_eval", inputs, base_resp, "base-model")
    ft = _write_eval(tmp_path / "run" / "eval", inputs, ft_resp, "fine-tuned")
    (tmp_path / "run" / "train").symlink_to(sweep / "runs" / "lr-0.001" / "train")

    proc = run_cli("report", "--baseline", str(tmp_path / "base_eval"), "--runs", str(tmp_path / "run"),
                   "--output-dir", str(tmp_path / "report"), "--no-model-check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    secs = sections_of(md)
    assert list(secs) == list(SECTION_TITLES)

    wins = [b["prompt"] for b, f in zip(base["strict"], ft["strict"], strict=True)
            if f["follow_all_instructions"] and not b["follow_all_instructions"]]
    assert wins
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    keys = {i["prompt"]: i["key"] for i in inputs}
    assert data["examples"]["kind"] == "full"
    assert len(data["examples"]["wins"]) == min(3, len(wins))
    assert set(data["examples"]["wins"]) <= {keys[p] for p in wins}
    losses = [b["prompt"] for b, f in zip(base["strict"], ft["strict"], strict=True)
              if b["follow_all_instructions"] and not f["follow_all_instructions"]]
    assert regress in losses
    assert len(data["examples"]["regression"]) == 1 and data["examples"]["regression"][0] in {keys[p] for p in losses}
    ex = secs["8. Example outputs"]
    assert ex.count("**Example ") == min(3, len(wins)) and "**Regression** (IFEval key" in ex
    assert "✓ `" in ex and "✗ `" in ex

    # Section 6: the deltas follow from the verdict files.
    b_acc = sum(r["follow_all_instructions"] for r in base["strict"]) / len(inputs)
    f_acc = sum(r["follow_all_instructions"] for r in ft["strict"]) / len(inputs)
    assert f"{100 * (f_acc - b_acc):+.1f}" in secs["6. Baseline vs fine-tuned"]
    # Section 7: every instruction id whose strict accuracy rose is listed as improved, first.
    per = secs["7. Per-instruction results"]
    improved_line = next(line for line in per.splitlines() if line.startswith("- **Improved**"))
    improved = [r["id"] for r in data["per_instruction"] if not r["id"].endswith(":*") and r["d_strict"] > 0]
    assert improved and all(f"`{i}`" in improved_line for i in improved)
    # Section 9: one run, so no hyperparameter claim.
    assert "Only one configuration was trained" in secs["9. Hyperparameters and analysis"]


@pytest.mark.integration
def test_report_errors_are_one_line(tmp_path, tmp_path_factory, tiny_model_dir, ifeval_dir):
    _, sweep = ensure_sweep(tmp_path_factory, tiny_model_dir, ifeval_dir)
    proc = run_cli("report", "--runs", str(tmp_path), "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "is not a run directory" in proc.stderr and "Traceback" not in proc.stderr
    run = tmp_path / "run"
    shutil.copytree(sweep / "runs" / "lr-0.001", run, ignore=shutil.ignore_patterns("checkpoint-*", "*.safetensors"))
    proc = run_cli("report", "--runs", str(run), "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "--baseline" in proc.stderr and "Traceback" not in proc.stderr


def test_standard_errors():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.0, 10) == 0.0
    # paired: 3 of 10 prompts flip from fail to pass, none the other way
    a = [False] * 10
    b = [True] * 3 + [False] * 7
    d = np.array(b, float) - np.array(a, float)
    assert paired_se(a, b) == pytest.approx(d.std(ddof=1) / np.sqrt(10))
    assert paired_se(a, a) == 0.0


# --------------------------------------------------------------------------------------------
# The analysis says what the verdicts say: fabricated verdicts with a known answer
# --------------------------------------------------------------------------------------------

NO_COMMA = "punctuation:no_comma"
N_WORDS = "length_constraints:number_words"
TITLE = "detectable_format:title"
# prompt -> (instruction ids, baseline verdicts, fine-tuned verdicts): the punctuation category goes
# from 0/2 to 2/2, the length category from 2/2 to 0/2, the title instruction stays followed.
FABRICATED = {
    "Write a haiku about rain without commas.": ([NO_COMMA], [False], [True]),
    "Describe a cat in 40 words or more, no commas.": ([NO_COMMA, N_WORDS], [False, True], [True, False]),
    "Explain tides in at least 40 words.": ([N_WORDS], [True], [False]),
    "Give a poem a title in double angular brackets.": ([TITLE], [True], [True]),
}


def _fabricated_eval(out: Path, which: int) -> None:
    """An eval directory whose verdicts are ``FABRICATED``'s column ``which`` (1 baseline, 2 fine-tuned)."""
    from sftlab.eval.ifeval import aggregate, write_results

    rows = [{"instruction_id_list": v[0], "prompt": p, "response": f"response {which}-{i}",
             "follow_all_instructions": all(v[which]), "follow_instruction_list": v[which]}
            for i, (p, v) in enumerate(FABRICATED.items())]
    out.mkdir(parents=True)
    (out / "responses.jsonl").write_text("".join(json.dumps({"key": 100 + i, "prompt": r["prompt"],
                                                             "response": r["response"]}) + "\n"
                                                 for i, r in enumerate(rows)), encoding="utf-8")
    write_results(out, {"strict": rows, "loose": rows, **aggregate(rows, rows)}, {"model": {"spec": f"m{which}"}})


def _bullet(section: str, label: str) -> str:
    return next(line for line in section.splitlines() if line.startswith(f"- **{label}**"))


def test_report_names_what_improved_and_what_regressed(tmp_path, tmp_path_factory, tiny_model_dir, ifeval_dir):
    _, sweep = ensure_sweep(tmp_path_factory, tiny_model_dir, ifeval_dir)
    _fabricated_eval(tmp_path / "base_eval", 1)
    _fabricated_eval(tmp_path / "run" / "eval", 2)
    (tmp_path / "run" / "train").symlink_to(sweep / "runs" / "lr-0.001" / "train")
    proc = run_cli("report", "--baseline", str(tmp_path / "base_eval"), "--runs", str(tmp_path / "run"),
                   "--output-dir", str(tmp_path / "report"), "--no-model-check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    secs = sections_of((tmp_path / "report" / "report.md").read_text(encoding="utf-8"))

    per = secs["7. Per-instruction results"]
    improved, regressed = _bullet(per, "Improved"), _bullet(per, "Regressed")
    assert improved == f"- **Improved** (1): `{NO_COMMA}` (+100 strict, n=2)"
    assert regressed == f"- **Regressed** (1): `{N_WORDS}` (-100 strict, n=2)"
    assert "Unchanged: 1 instruction ids." in per
    rows = {line.split(" | ")[0][2:]: line for line in per.splitlines() if line.startswith("| `")}
    assert rows["`punctuation:*`"].startswith("| `punctuation:*` | 2 | 0.0 | 100.0 | +100.0 |")
    assert rows["`length_constraints:*`"].startswith("| `length_constraints:*` | 2 | 100.0 | 0.0 | -100.0 |")
    assert rows["`detectable_format:*`"].startswith("| `detectable_format:*` | 1 | 100.0 | 100.0 | +0.0 |")

    # Section 6: both models follow 2 of 4 prompts completely, so prompt-level strict does not move,
    # while instruction-level strict does not either (3 of 5 each); one prompt won, one lost.
    cmp_ = secs["6. Baseline vs fine-tuned"]
    assert "| prompt strict | 50.0 | 50.0 | +0.0 |" in cmp_ and "| inst strict | 60.0 | 60.0 | +0.0 |" in cmp_
    assert "Prompts newly followed: 1; newly failed: 1." in cmp_
    # Section 8: the won prompt is the example, the lost one the regression.
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["examples"] == {"wins": [100], "kind": "full", "regression": [102]}
    ex = secs["8. Example outputs"]
    assert "**Example 1** (IFEval key 100)" in ex and "**Regression** (IFEval key 102)" in ex
    assert f"✓ `{NO_COMMA}`" in ex and f"✗ `{N_WORDS}`" in ex
    # Section 9: one run and no change, stated as such.
    analysis = secs["9. Hyperparameters and analysis"]
    assert "Δ +0.0 points (no prompt changed)" not in analysis  # two prompts changed, in opposite directions
    assert "Δ +0.0 points (within noise" in analysis
    assert "Only one configuration was trained" in analysis
