"""``sftlab run``: the whole experiment from one training config, resumable stage by stage.

Stages, all under the config's ``output_dir``::

    OUTPUT_DIR/
      run_config.yaml       the resolved config this experiment was started with (guards reruns)
      train_config.yaml     the training part (no ``eval:`` block, ``output_dir: OUTPUT_DIR/train``)
      baseline_eval/        1. ``sftlab eval`` of the config's ``model`` (the base model) on IFEval
      baseline_eval_ifbench/   ... and on IFBench, with ``eval: {benchmarks: [ifeval, ifbench]}``
      train/                2. ``sftlab train`` output (model, tokenizer, metrics, summary, checkpoints)
      finetuned_eval/       3. ``sftlab eval`` of train/ (and finetuned_eval_ifbench/)
      report/               4. ``sftlab report``: report.md, report.html, PNGs, report.json

A finished stage is recognised by the file its writer produces last (``summary.json`` for an
eval, ``train_summary.json`` for training, ``report.html`` newer than its inputs) and skipped with
a message; a half-done stage resumes (training from its last checkpoint, evaluation from
``responses.jsonl``). Changing the config under an existing ``output_dir`` is refused, so one
directory never mixes two experiments.

The ``eval:`` block carries ``ifeval_data``, ``limit`` or ``sample`` (+ ``seed``, ``sample_offset``),
``max_new_tokens``, ``batch_size``, and optionally ``system_prompt``, ``backend`` and ``dtype``;
``benchmarks`` (default ``[ifeval]``) adds others, each with its own block of ``data``, ``limit`` or
``sample`` (+ ``seed``, ``sample_offset``): ``ifbench: {data: ../shared/ifbench/IFBench_test.jsonl}``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import ConfigError
from sftlab.eval.task import METRICS
from sftlab.eval.tasks import DEFAULT_BENCHMARK, get_task
from sftlab.experiment.stages import (
    EvalSettings,
    decontaminate_against,
    guard_settings,
    run_evals,
    run_training,
    validate_train_mapping,
    write_train_config,
)
from sftlab.layout import RunDir
from sftlab.report.results import FIGURE_LABELS
from sftlab.train.aliases import resolve_aliases
from sftlab.train.config import read_config_file, set_dotted
from sftlab.utils import log, read_json


@dataclass
class RunConfig:
    train: dict[str, Any]  # the training config, without ``eval`` and ``output_dir``
    eval: EvalSettings
    output_dir: Path
    source: str = ""

    @property
    def dir(self) -> RunDir:
        return RunDir(self.output_dir)

    @property
    def baseline_dir(self) -> Path:
        return self.dir.baseline.root

    @property
    def train_dir(self) -> Path:
        return self.dir.train.root

    @property
    def finetuned_dir(self) -> Path:
        return self.dir.finetuned.root

    @property
    def report_dir(self) -> Path:
        return self.dir.report.root

    def train_config(self) -> dict[str, Any]:
        cfg = decontaminate_against(copy.deepcopy(self.train), self.eval)
        cfg["output_dir"] = str(self.train_dir)
        return cfg

    def resolved(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.train), "output_dir": str(self.output_dir), "eval": self.eval.to_dict()}


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a training config with an ``eval:`` block; ``overrides`` use dotted keys (``eval.limit``)."""
    raw = read_config_file(path, "config")
    for k, v in (overrides or {}).items():
        set_dotted(raw, k, v)
    ev = raw.pop("eval", None)
    if ev is not None and not isinstance(ev, dict):
        raise ConfigError(f"{path}: 'eval' must be a block of eval settings (ifeval_data, limit, max_new_tokens, ...)")
    settings = EvalSettings.from_dict(ev, "eval")
    out = raw.pop("output_dir", None) or str(Path("runs") / Path(path).stem)
    raw = resolve_aliases(raw)  # TRL/Axolotl names (model_name_or_path, ...) as sftlab's keys, as in train
    if not raw.get("model"):
        raise ConfigError(f"{path}: 'model' is required (the base model to evaluate and fine-tune)")
    return RunConfig(train=raw, eval=settings, output_dir=Path(out), source=str(path))


def _report_is_fresh(cfg: RunConfig) -> bool:
    rd = cfg.dir
    html = rd.report.html
    if not html.is_file() or not rd.report.markdown.is_file():
        return False
    inputs = [rd.baseline.summary, rd.finetuned.summary, rd.train.summary]
    return all(p.is_file() and p.stat().st_mtime <= html.stat().st_mtime for p in inputs)


def run_experiment(cfg: RunConfig, *, launcher: str | None = None, report: bool = True) -> dict[str, Any]:
    """Baseline eval -> train -> fine-tuned eval -> report, skipping the stages already finished."""
    t0 = time.time()
    # Judge the training config before writing anything: a refused config (a typo, a secret such as
    # hub_token) must leave no run_config.yaml behind that a corrected rerun would be refused by.
    validate_train_mapping(cfg.train_config())
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    # Record the resolved config; refuse to continue an experiment started with a different one.
    guard_settings(cfg.dir.config, cfg.resolved(), what="an experiment", noun="config")
    train_cfg_path = cfg.dir.train_config
    write_train_config(train_cfg_path, cfg.train_config(), what="an experiment")

    base = run_evals(str(cfg.train["model"]), cfg.dir.baseline_for, cfg.eval,
                     chat_template=cfg.train.get("chat_template"), label="[1/4] baseline")
    run_training(train_cfg_path, cfg.train_dir, launcher=launcher, label="[2/4] training")
    ft = run_evals(str(cfg.train_dir), cfg.dir.finetuned_for, cfg.eval, label="[3/4] fine-tuned")
    report_paths: dict[str, Any] = {}
    if report:
        if _report_is_fresh(cfg):
            log(f"sftlab: [4/4] report is up to date, skipping ({cfg.dir.report.html})")
            report_paths = {"markdown": cfg.dir.report.markdown, "html": cfg.dir.report.html}
        else:
            from sftlab.report import write_report

            log("sftlab: [4/4] writing the report")
            report_paths = write_report(baseline=cfg.baseline_dir, runs=[cfg.output_dir], output_dir=cfg.report_dir)
    train_summary = read_json(cfg.dir.train.summary)
    return {"baseline": base[DEFAULT_BENCHMARK], "finetuned": ft[DEFAULT_BENCHMARK], "train": train_summary,
            "benchmarks": {b: {"baseline": base[b], "finetuned": ft[b]} for b in cfg.eval.benchmarks},
            "report": report_paths, "output_dir": cfg.output_dir, "seconds": time.time() - t0}


def format_outcome(res: dict[str, Any]) -> str:
    """The four figures before and after, per benchmark, for the terminal."""
    per = res.get("benchmarks") or {DEFAULT_BENCHMARK: {"baseline": res["baseline"], "finetuned": res["finetuned"]}}
    lines: list[str] = []
    for name, pair in per.items():
        task = get_task(name)
        b, f = pair["baseline"], pair["finetuned"]
        if lines:
            lines.append("")
        lines.append(f"{task.title + ' (%)':<16}{'baseline':>10}{'fine-tuned':>12}{'delta':>9}")
        for k in METRICS:
            mark = "  (headline)" if k == task.headline and len(per) > 1 else ""
            lines.append(f"{FIGURE_LABELS[k]:<16}{100 * b[k]:>10.1f}{100 * f[k]:>12.1f}"
                         f"{100 * (f[k] - b[k]):>+9.1f}{mark}")
        n = (f.get("counts") or {}).get("prompts")
        if n:
            lines.append(f"({n} prompts)")
    rep = res.get("report") or {}
    if rep.get("html"):
        lines.append(f"report: {rep['html']}  and  {rep['markdown']}")
    return "\n".join(lines)
