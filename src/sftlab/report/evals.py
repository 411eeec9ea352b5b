"""IFEval verdicts read back per prompt, the figures on a set of prompts, and their noise.

Comparisons between the baseline and a fine-tuned model are made on the prompts both were scored
on, from the per-prompt verdicts, so a run evaluated on a different subset cannot produce a
misleading delta. The figures themselves come from :func:`sftlab.eval.ifeval.aggregate`, the same code
that wrote each ``summary.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.ifeval import METRICS, aggregate
from sftlab.eval.tasks import DEFAULT_BENCHMARK
from sftlab.experiment.typesplit import CategorySplit, TypeSplit
from sftlab.layout import EvalDir
from sftlab.report.results import RunRecord, best_index, results_row
from sftlab.utils import read_json, read_jsonl


@dataclass
class EvalData:
    """One model's IFEval verdicts, keyed by prompt (the official result files carry no key)."""

    dir: Path
    summary: dict[str, Any]
    strict: dict[str, dict[str, Any]]
    loose: dict[str, dict[str, Any]]
    keys: dict[str, Any]

    def follows_all(self, prompts: list[str], *, loose: bool = False) -> list[bool]:
        """Prompt-level outcome per prompt (strict unless ``loose``): every instruction followed."""
        rows = self.loose if loose else self.strict
        return [bool(rows[p]["follow_all_instructions"]) for p in prompts]


def benchmark_of(ev: EvalData) -> str:
    """The benchmark an evaluation scored (summaries written before benchmarks existed are IFEval's)."""
    return str(ev.summary.get("benchmark") or DEFAULT_BENCHMARK)


def load_eval(eval_dir: str | Path) -> EvalData:
    d = EvalDir(Path(eval_dir))
    if not d.summary.is_file():
        raise SftlabError(f"{d.root} is not a finished evaluation (no {d.summary.name}); run 'sftlab eval' into it "
                          f"first")
    summary = read_json(d.summary)
    strict = {r["prompt"]: r for r in read_jsonl(d.results_strict)}
    loose = {r["prompt"]: r for r in read_jsonl(d.results_loose)}
    if not strict or not loose:
        raise SftlabError(f"{d.root}: {d.results_strict.name} / {d.results_loose.name} missing or empty")
    keys = {r["prompt"]: r.get("key") for r in read_jsonl(d.responses) if "prompt" in r}
    return EvalData(d.root, summary, strict, loose, keys)


def common_prompts(ev: EvalData, base: EvalData) -> list[str]:
    """The prompts both evaluations scored, in ``ev``'s order."""
    return [p for p in ev.strict if p in base.strict and p in ev.loose and p in base.loose]


def _aggregate_on(ev: EvalData, prompts: list[str]) -> dict[str, Any]:
    return aggregate([ev.strict[p] for p in prompts], [ev.loose[p] for p in prompts])


def figures_on(ev: EvalData, prompts: list[str]) -> dict[str, Any]:
    """The four IFEval figures on ``prompts`` (non-empty), with ``n_prompts`` and ``n_instructions``."""
    agg = _aggregate_on(ev, prompts)
    return {"n_prompts": agg["counts"]["prompts"], "n_instructions": agg["counts"]["instructions"],
            **agg["metrics"]}


def per_instruction(ev: EvalData, prompts: list[str]) -> dict[str, dict[str, Any]]:
    """Count and strict/loose accuracy per instruction id and per category (shown as ``category:*``)."""
    per = _aggregate_on(ev, prompts)["per_instruction"]
    out = {}
    for table, suffix in (("by_category", ":*"), ("by_id", "")):
        for name, v in per[table].items():
            out[name + suffix] = {"n": v["count"], "strict": v["strict_acc"], "loose": v["loose_acc"]}
    return out


def instruction_deltas(base: EvalData, ev: EvalData, prompts: list[str]) -> list[dict[str, Any]]:
    """Per instruction id and category (``category:*``): n, strict and loose accuracy before and after,
    and their changes (``d_strict``, ``d_loose``), as fractions; in :func:`per_instruction`'s order."""
    before, after = per_instruction(base, prompts), per_instruction(ev, prompts)
    return [{"id": k, "n": b["n"], "strict_before": b["strict"], "strict_after": after[k]["strict"],
             "loose_before": b["loose"], "loose_after": after[k]["loose"],
             "d_strict": after[k]["strict"] - b["strict"], "d_loose": after[k]["loose"] - b["loose"]}
            for k, b in before.items()]


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def paired_se(a: list[bool], b: list[bool]) -> float:
    """Standard error of mean(b - a) for paired 0/1 outcomes on the same prompts."""
    n = len(a)
    if n < 2:
        return float("nan")
    d = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    m = sum(d) / n
    var = sum((x - m) ** 2 for x in d) / (n - 1)
    return math.sqrt(var / n)


def instruction_pairs(base: EvalData, ev: EvalData, prompts: list[str], *,
                      loose: bool = False) -> list[tuple[str, bool, bool]]:
    """``(instruction id, baseline followed, fine-tuned followed)`` for every instruction of ``prompts``."""
    out = []
    for p in prompts:
        b, f = (base.loose[p], ev.loose[p]) if loose else (base.strict[p], ev.strict[p])
        if b["instruction_id_list"] != f["instruction_id_list"]:
            raise SftlabError(f"the prompt {p[:60]!r} carries different instructions in {base.dir} and {ev.dir}; "
                              f"both must be scored on the same IFEval inputs")
        out += zip(b["instruction_id_list"], map(bool, b["follow_instruction_list"]),
                   map(bool, f["follow_instruction_list"]), strict=True)
    return out


def _paired(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Rates, difference, paired standard error and won/lost counts of paired 0/1 outcomes."""
    n = len(a)
    before, after = (sum(a) / n, sum(b) / n) if n else (float("nan"), float("nan"))
    return {"n": n, "baseline": before, "finetuned": after, "delta": after - before, "paired_se": paired_se(a, b),
            "won": sum(1 for x, y in zip(a, b, strict=True) if y and not x),
            "lost": sum(1 for x, y in zip(a, b, strict=True) if x and not y)}


def paired_figures(base: EvalData, ev: EvalData, prompts: list[str]) -> dict[str, dict[str, Any]]:
    """Each of the four IFEval figures on ``prompts``, paired: prompt-level figures pair the prompts'
    outcomes, instruction-level ones the instructions' (``n`` counts the units)."""
    out = {}
    for metric in METRICS:
        loose = "loose" in metric
        if metric.startswith("prompt_level"):
            a, b = base.follows_all(prompts, loose=loose), ev.follows_all(prompts, loose=loose)
        else:
            pairs = instruction_pairs(base, ev, prompts, loose=loose)
            a, b = [x for _, x, _ in pairs], [y for _, _, y in pairs]
        out[metric] = _paired(a, b)
    return out


def group_figures(base: EvalData, ev: EvalData, prompts: list[str],
                  split: TypeSplit | CategorySplit) -> dict[str, dict[str, Any]]:
    """Instruction-level strict and loose figures, paired, per group of :mod:`sftlab.experiment.typesplit`
    (``types``: the distinct ids of the group on these prompts); groups absent from the prompts are left out."""
    out: dict[str, dict[str, Any]] = {}
    strict, loose = instruction_pairs(base, ev, prompts), instruction_pairs(base, ev, prompts, loose=True)
    for g in split.groups:
        idx = [i for i, (iid, _, _) in enumerate(strict) if split.group_of(iid) == g]
        if not idx:
            continue
        out[g] = {"types": len({strict[i][0] for i in idx}), "instructions": len(idx),
                  "strict": _paired([strict[i][1] for i in idx], [strict[i][2] for i in idx]),
                  "loose": _paired([loose[i][1] for i in idx], [loose[i][2] for i in idx])}
    return out


def noise_verdict(d: float, se: float) -> str:
    """Whether a paired difference ``d`` with standard error ``se`` stands out of the noise."""
    if se is None or math.isnan(se):
        return "too few prompts to judge noise"
    if se == 0:
        return "no prompt changed" if d == 0 else "every changed prompt moved the same way"
    z = d / se
    if abs(z) < 2:
        return f"within noise (|Δ| < 2 standard errors, z = {z:.1f})"
    return f"beyond 2 standard errors (z = {z:.1f})"


@dataclass
class Comparison:
    """The baseline against every run, on the prompts each run shares with it: what sections 6 to 9 report.

    ``rows`` are the runs' results rows (:func:`sftlab.report.results.results_row`) with the IFEval figures
    recomputed on those shared prompts; ``best`` indexes the best of them.
    """

    base: EvalData
    records: list[RunRecord]
    evals: list[EvalData]
    commons: list[list[str]]
    run_figs: list[dict[str, Any]]
    base_figs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    varied_keys: list[str]
    best: int = 0

    @property
    def best_record(self) -> RunRecord:
        return self.records[self.best]


def compare(base: EvalData, records: list[RunRecord], varied_keys: list[str],
            eval_dirs: list[Path] | None = None) -> Comparison:
    """Load each run's verdicts and recompute its figures and the baseline's on the prompts they share.

    ``eval_dirs`` (one per record) replaces the records' own evaluations: another benchmark's.
    """
    dirs = eval_dirs if eval_dirs is not None else [r.eval_dir for r in records]
    evals = [load_eval(d) for d in dirs]  # type: ignore[arg-type]
    rows = [results_row(r, varied_keys) for r in records]
    commons, run_figs, base_figs = [], [], []
    for ev in evals:
        common = common_prompts(ev, base)
        if not common:
            raise SftlabError(f"{ev.dir} and the baseline {base.dir} share no prompt; evaluate both on the same data")
        commons.append(common)
        run_figs.append(figures_on(ev, common))
        base_figs.append(figures_on(base, common))
    for row, f in zip(rows, run_figs, strict=True):
        row.update({k: f[k] for k in METRICS})
        row["n_prompts"] = f["n_prompts"]
    best = best_index(rows)
    assert best is not None
    return Comparison(base, records, evals, commons, run_figs, base_figs, rows, varied_keys, best)
