"""Finished runs read back from disk, and the one results table built from them.

A *run* is a training output plus its evaluation, in any layout sftlab writes (see
:mod:`sftlab.layout`): a sweep run (``train/`` + ``eval/``), an ``sftlab run`` output (``train/`` +
``finetuned_eval/``) or an ``sftlab train`` output with its eval next to it. A sweep directory
stands for all its finished runs. :func:`results_row` turns a run into one row of settings and
IFEval figures; :func:`results_table` is the one table of those rows (``results.md`` and the
report's section 9), :func:`best_index` picks the best row.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.ifeval import METRICS
from sftlab.layout import (
    EVAL,
    EVAL_SUMMARY,
    FINETUNED_EVAL,
    SWEEP_MANIFEST,
    TRAIN,
    EvalDir,
    RunDir,
    SweepDir,
    SweepRunDir,
    TrainDir,
)
from sftlab.train.config import read_config_file
from sftlab.utils import atomic_write_text, log, read_json, read_jsonl

#: Short labels of the four IFEval figures (:data:`sftlab.eval.ifeval.METRICS`), for tables and plots.
FIGURE_LABELS = {
    "prompt_level_strict_acc": "prompt strict",
    "inst_level_strict_acc": "inst strict",
    "prompt_level_loose_acc": "prompt loose",
    "inst_level_loose_acc": "inst loose",
}
assert tuple(FIGURE_LABELS) == METRICS

# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One finished (or partly finished) training run and its evaluation, as read from disk."""

    name: str
    run_dir: Path
    train_dir: Path
    eval_dir: Path | None
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    eval_summary: dict[str, Any] | None
    varied: dict[str, Any] = field(default_factory=dict)
    status: str = "done"


def is_sweep_dir(d: Path) -> bool:
    return SweepDir(Path(d)).manifest.is_file()


def _finished_eval(*candidates: EvalDir) -> Path | None:
    for e in candidates:
        if e.summary.is_file():
            return e.root
    return None


def _locate(d: Path) -> tuple[Path, Path | None]:
    """(train dir, eval dir) of a run directory in any of the layouts sftlab writes."""
    evals = (SweepRunDir(d).eval, RunDir(d).finetuned)
    nested = SweepRunDir(d).train  # a sweep run or an 'sftlab run' output: train/ inside
    if nested.summary.is_file() or nested.config.is_file():
        return nested.root, _finished_eval(*evals)
    if TrainDir(d).summary.is_file():  # an 'sftlab train' output, its eval next to the model
        return d, _finished_eval(*evals)
    raise SftlabError(f"{d} is not a run directory: expected a sweep ({SWEEP_MANIFEST}), an 'sftlab run' output "
                      f"({TRAIN}/ and {FINETUNED_EVAL}/), a sweep run ({TRAIN}/ and {EVAL}/) or an 'sftlab train' "
                      f"output")


def load_run(d: str | Path, *, name: str | None = None, varied: dict[str, Any] | None = None) -> RunRecord:
    d = Path(d)
    train_dir, eval_dir = _locate(d)
    td = TrainDir(train_dir)
    config = read_config_file(td.config, "resolved training config") if td.config.is_file() else {}
    summary = read_json(td.summary) if td.summary.is_file() else {}
    metrics = read_jsonl(td.metrics)
    eval_summary = read_json(EvalDir(eval_dir).summary) if eval_dir is not None else None
    status = "done" if summary and eval_summary else ("trained" if summary else "incomplete")
    return RunRecord(name=name or d.resolve().name, run_dir=d, train_dir=train_dir, eval_dir=eval_dir, config=config,
                     summary=summary, metrics=metrics, eval_summary=eval_summary, varied=dict(varied or {}),
                     status=status)


def _sweep_runs(d: Path, quiet: bool) -> list[RunRecord]:
    sd = SweepDir(d)
    man = read_json(sd.manifest)
    varied_keys = man.get("varied", [])
    out = []
    for r in man.get("runs", []):
        rd = SweepRunDir(d / r["dir"])
        if not rd.done.is_file():
            if not quiet:
                log(f"sftlab: {rd.root} has not finished (no {rd.done.name} file); left out")
            continue
        ov = r.get("overrides", {})
        out.append(load_run(rd.root, name=r["name"], varied={k: ov.get(k) for k in varied_keys}))
    return out


def expand_run_dirs(dirs: list[str | Path], *, require_eval: bool = True, quiet: bool = False) -> list[RunRecord]:
    """Run records for each directory; a sweep directory stands for all its runs (in sweep order)."""
    out: list[RunRecord] = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise SftlabError(f"run directory not found: {d}")
        if is_sweep_dir(d):
            out += _sweep_runs(d, quiet)
            continue
        rec = load_run(d)
        if require_eval and rec.eval_summary is None:
            raise SftlabError(f"{d} has no finished evaluation ({EVAL_SUMMARY} in {EVAL}/ or {FINETUNED_EVAL}/); "
                              f"run 'sftlab eval --model {rec.train_dir} --output-dir {SweepRunDir(d).eval.root}' "
                              f"first")
        out.append(rec)
    names = [r.name for r in out]
    for i, r in enumerate(out):  # two runs from different sweeps may share a name
        if names.count(r.name) > 1:
            r.name = f"{r.name}@{r.run_dir.resolve().parent.parent.name if r.run_dir.parent.name == 'runs' else i}"
    return out


def varied_keys_of(dirs: list[str | Path]) -> list[str]:
    """The settings varied across the sweeps among ``dirs``, in order of first appearance."""
    keys: list[str] = []
    for d in dirs:
        if is_sweep_dir(Path(d)):
            for k in read_json(SweepDir(Path(d)).manifest).get("varied", []):
                if k not in keys:
                    keys.append(k)
    return keys


# --------------------------------------------------------------------------------------------
# Settings and figures of one run
# --------------------------------------------------------------------------------------------


def first(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The value of the first of ``keys`` that ``d`` holds and is not ``None``."""
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def loss_series(rec: RunRecord) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``(training, held-out)`` losses as ``(step, loss)`` pairs from ``metrics.jsonl``."""
    train, ev = [], []
    for m in rec.metrics:
        step = m.get("step")
        if not isinstance(step, (int, float)):
            continue
        if isinstance(m.get("eval_loss"), (int, float)):
            ev.append((step, float(m["eval_loss"])))
        elif isinstance(m.get("loss"), (int, float)):
            train.append((step, float(m["loss"])))
    return train, ev


def final_train_loss(rec: RunRecord) -> float | None:
    losses = [m["loss"] for m in rec.metrics if isinstance(m.get("loss"), (int, float)) and "eval_loss" not in m]
    if losses:
        return float(losses[-1])
    v = first(rec.summary, "final_loss", "final_train_loss", "train_loss")
    return float(v) if isinstance(v, (int, float)) else None


_TA_DEFAULTS: dict[str, Any] | None = None


def _training_args_default(key: str) -> Any:
    """``TrainingArguments``' default for ``key`` in the transformers installed now.

    Only for outputs written before ``sftlab_config.yaml`` recorded every TrainingArguments field:
    for those, an unset key meant the default of the transformers that trained, which is most likely
    the one installed now (not certainly: the report says what its numbers come from).
    """
    global _TA_DEFAULTS
    if _TA_DEFAULTS is None:
        import dataclasses

        try:
            from transformers import TrainingArguments

            _TA_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingArguments)
                            if f.default is not dataclasses.MISSING}
        except ImportError:  # pragma: no cover - transformers is a hard dependency
            _TA_DEFAULTS = {}
    return _TA_DEFAULTS.get(key)


def training_arg(config: dict[str, Any], key: str) -> Any:
    """A TrainingArguments setting as the run used it: from its saved ``sftlab_config.yaml``, which
    records every TrainingArguments field; older outputs that lack the key fall back to the default."""
    v = config.get(key)
    return _training_args_default(key) if v is None else v


def format_warmup(c: dict[str, Any]) -> Any:
    """transformers 5 reads ``warmup_steps`` below 1 as a fraction of the total steps."""
    ratio = c.get("warmup_ratio")
    steps = training_arg(c, "warmup_steps")
    if isinstance(steps, float) and 0 < steps < 1:
        return f"{steps:g} of steps"
    if steps:
        return f"{steps:g} steps" if isinstance(steps, (int, float)) else str(steps)
    if ratio:
        return f"{ratio:g} of steps"
    return 0


def training_settings(rec: RunRecord) -> dict[str, Any]:
    """The settings the results table and the report show, from the resolved config and the summary."""
    c, s = rec.config, rec.summary
    max_steps = training_arg(c, "max_steps")
    return {
        "learning_rate": training_arg(c, "learning_rate"),
        "epochs": training_arg(c, "num_train_epochs") if not (isinstance(max_steps, int) and max_steps > 0)
        else f"max_steps {max_steps}",
        "max_steps": max_steps,
        "total_batch": first(s, "effective_batch_size", default=first(c, "total_batch_size")),
        "per_device_batch": first(s, "per_device_train_batch_size",
                                  default=training_arg(c, "per_device_train_batch_size")),
        "gradient_accumulation": first(s, "gradient_accumulation_steps", default=c.get("gradient_accumulation_steps")),
        "warmup": format_warmup(c),
        "scheduler": training_arg(c, "lr_scheduler_type"),
        "max_length": first(c, "model_max_length"),
        "masking": first(c, "masking", default=first(s, "masking")),
        "loss": first(c, "loss", default=first(s, "loss_kind")),
    }


def n_prompts(summary: dict[str, Any] | None) -> int | None:
    if not summary:
        return None
    counts = summary.get("counts") or {}
    for k in ("prompts", "num_prompts", "n_prompts", "prompt_total", "total_prompts"):
        if isinstance(counts.get(k), int):
            return counts[k]
        if isinstance(summary.get(k), int):
            return summary[k]
    return None


SETTING_COLUMNS = ("learning_rate", "epochs", "total_batch", "warmup", "scheduler", "max_length")


def results_row(rec: RunRecord, varied_keys: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"run": rec.name}
    for k in varied_keys:
        row[k] = rec.varied.get(k)
    st = training_settings(rec)
    for k in SETTING_COLUMNS:
        row[k] = st[k]
    row["final_train_loss"] = final_train_loss(rec)
    for f in METRICS:
        row[f] = (rec.eval_summary or {}).get(f)
    row["n_prompts"] = n_prompts(rec.eval_summary)
    row["status"] = rec.status
    return row


def best_index(rows: list[dict[str, Any]]) -> int | None:
    """The best row by prompt-level strict accuracy; ties go to instruction-level strict, then loose."""
    scored = [(i, r) for i, r in enumerate(rows) if isinstance(r.get("prompt_level_strict_acc"), (int, float))]
    if not scored:
        return None
    return max(scored, key=lambda ir: (ir[1]["prompt_level_strict_acc"], ir[1].get("inst_level_strict_acc") or 0,
                                       ir[1].get("prompt_level_loose_acc") or 0, -ir[0]))[0]


# --------------------------------------------------------------------------------------------
# Formatting and the results table
# --------------------------------------------------------------------------------------------


def fmt_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def pct(v: Any, digits: int = 1, missing: str = "n/a") -> str:
    """A fraction as a percentage (``0.25`` -> ``"25.0"``); ``missing`` for no number or NaN."""
    return missing if not isinstance(v, (int, float)) or math.isnan(v) else f"{100 * v:.{digits}f}"


# Varied settings that already have a column of their own in the results table.
STANDARD_COLUMNS = {"learning_rate": "learning_rate", "num_train_epochs": "epochs", "max_steps": "epochs",
                    "total_batch_size": "total_batch", "warmup_steps": "warmup", "warmup_ratio": "warmup",
                    "lr_scheduler_type": "scheduler", "model_max_length": "max_length"}


def extra_varied(varied_keys: list[str]) -> list[str]:
    """The varied settings that need a column besides the standard ones."""
    return [k for k in varied_keys if k not in STANDARD_COLUMNS]


def results_table(rows: list[dict[str, Any]], varied_keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """The one results table: ``(headers, cells)``, one row per run, the best run's name in bold.

    Columns: run, the varied settings without a standard column, the standard settings, the final
    training loss, the four IFEval figures in percent, and ``best`` (the status of unfinished runs).
    """
    best = best_index(rows)
    cols = extra_varied(varied_keys)
    headers = (["run"] + cols + ["lr", "epochs", "total batch", "warmup", "scheduler", "max length",
                                 "final train loss"] + [FIGURE_LABELS[f] + " %" for f in METRICS] + ["best"])
    cells = []
    for i, r in enumerate(rows):
        row = [f"**{r['run']}**" if i == best else r["run"]] + [fmt_num(r.get(k)) for k in cols]
        row += [fmt_num(r[k]) for k in SETTING_COLUMNS]
        row += [fmt_num(r["final_train_loss"])] + [pct(r[f], missing="") for f in METRICS]
        row.append("**best**" if i == best else ("" if r["status"] == "done" else r["status"]))
        cells.append(row)
    return headers, cells


def markdown_table(headers: list[str], cells: list[list[str]]) -> str:
    """A Markdown table; ``|`` inside cells is escaped and newlines become spaces."""
    def row(cs: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cs) + " |"

    return "\n".join([row(headers), "|" + "|".join("---" for _ in headers) + "|"] + [row(c) for c in cells]) + "\n"


def results_markdown(rows: list[dict[str, Any]], varied_keys: list[str]) -> str:
    return markdown_table(*results_table(rows, varied_keys))


def write_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """(Re)write ``results.csv`` and ``results.md`` from the finished runs of a sweep directory."""
    sd = SweepDir(Path(sweep_dir))
    man = read_json(sd.manifest)
    varied = man.get("varied", [])
    rows = [results_row(r, varied) for r in expand_run_dirs([sd.root], quiet=True)]
    best = best_index(rows)
    for i, r in enumerate(rows):
        r["best"] = i == best
    buf = io.StringIO()
    fields = list(rows[0].keys()) if rows else ["run"] + varied + ["status"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(sd.results_csv, buf.getvalue())
    n = rows[best].get("n_prompts") if best is not None else None
    md = [f"# Sweep results: {sd.root}", "",
          f"{len(rows)} finished run(s) of {len(man.get('runs', []))}. IFEval accuracies in percent"
          + (f" on {n} prompts" if n else "") + "; the best run by prompt-level strict accuracy is in bold.", "",
          results_markdown(rows, varied)]
    atomic_write_text(sd.results_md, "\n".join(md))
    return rows
