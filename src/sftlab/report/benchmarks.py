"""The report's other benchmarks (IFBench) beside IFEval: sections 6 to 8 gain their figures.

An experiment that evaluated on ``eval.benchmarks: [ifeval, ifbench]`` keeps each other benchmark's
evaluation beside IFEval's, in the same place with the benchmark as suffix
(:func:`sftlab.layout.eval_dir_name`: ``baseline_eval_ifbench/`` beside ``baseline_eval/``,
``eval_ifbench/`` beside a sweep run's ``eval/``). Where the baseline and every run have one, the
report compares them exactly as it compares IFEval (per-prompt verdicts on shared prompts, paired
standard errors) and shows both side by side; the best run stays the one IFEval picked, so the
second benchmark tests that choice instead of making another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sftlab.eval.tasks import BENCHMARKS, DEFAULT_BENCHMARK, get_task
from sftlab.experiment.typesplit import CategorySplit
from sftlab.layout import EvalDir, eval_dir_name
from sftlab.report.comparison import _example_blocks, _instruction_table, _se_line, choose_examples
from sftlab.report.document import Block, Bullets, P, Table, plus_minus, signed
from sftlab.report.evals import (
    Comparison,
    compare,
    group_figures,
    instruction_deltas,
    load_eval,
    paired_figures,
)
from sftlab.report.results import FIGURE_LABELS, RunRecord, pct
from sftlab.utils import plural


def sibling(eval_dir: Path, benchmark: str) -> Path:
    """Where the same evaluation on ``benchmark`` lives."""
    return eval_dir.parent / eval_dir_name(eval_dir.name, benchmark)


def other_comparisons(base_dir: Path, records: list[RunRecord], ifeval: Comparison,
                      varied_keys: list[str]) -> dict[str, Comparison]:
    """Each other benchmark the baseline and every run were evaluated on, compared like IFEval."""
    out: dict[str, Comparison] = {}
    for b in BENCHMARKS:
        if b == DEFAULT_BENCHMARK or not EvalDir(sibling(base_dir, b)).summary.is_file():
            continue
        dirs = [sibling(r.eval_dir, b) for r in records if r.eval_dir is not None]
        if len(dirs) != len(records) or not all(EvalDir(d).summary.is_file() for d in dirs):
            continue
        c = compare(load_eval(sibling(base_dir, b)), records, varied_keys, eval_dirs=dirs)
        c.best = ifeval.best
        out[b] = c
    return out


def _headline_row(name: str, c: Comparison) -> list[Any]:
    task = get_task(name)
    common = c.commons[c.best]
    f = paired_figures(c.base, c.evals[c.best], common)[task.headline]
    return [task.title, FIGURE_LABELS[task.headline], f["n"], pct(f["baseline"]), pct(f["finetuned"]),
            signed(f["delta"]), plus_minus(f["paired_se"]), f["won"], f["lost"]]


def headline_blocks(ifeval: Comparison, others: dict[str, Comparison], data: dict[str, Any]) -> list[Block]:
    """Section 6's side-by-side table: each benchmark's headline figure, baseline vs the best run."""
    comps = {DEFAULT_BENCHMARK: ifeval, **others}
    rows = [_headline_row(n, c) for n, c in comps.items()]
    data["headline"] = [dict(zip(("benchmark", "figure", "n", "baseline", "finetuned", "delta_points",
                                  "paired_se_points", "won", "lost"), r, strict=True)) for r in rows]
    return [P(f"Both benchmarks side by side, baseline vs the best run `{ifeval.best_record.name}` (chosen on "
              f"IFEval), each on its headline figure (the one its paper reports; IFBench: prompt-level loose). "
              f"IFBench's 58 constraint types are none of IFEval's, so it measures transfer beyond the types the "
              f"training data may carry."),
            Table(["benchmark", "figure", "prompts", "baseline %", "fine-tuned %", "Δ", "paired SE", "won", "lost"],
                  rows)]


def figures_blocks(name: str, c: Comparison, data: dict[str, Any]) -> list[Block]:
    """Section 6 for another benchmark: its four figures per run, and the paired standard errors."""
    title = get_task(name).title
    headers = ["figure", "baseline"]
    for r in c.records:
        headers += [f"`{r.name}`", "Δ"]
    rows = []
    for k in FIGURE_LABELS:
        row = [FIGURE_LABELS[k], pct(c.base_figs[c.best][k])]
        for rf, bf in zip(c.run_figs, c.base_figs, strict=True):
            row += [pct(rf[k]), signed(rf[k] - bf[k])]
        rows.append(row)
    se_lines, paired = [], {}
    for r, ev, common in zip(c.records, c.evals, c.commons, strict=True):
        pf = paired_figures(c.base, ev, common)
        paired[r.name] = pf
        se_lines += [_se_line(r.name, "strict", pf["prompt_level_strict_acc"]),
                     _se_line(r.name, "loose", pf["prompt_level_loose_acc"])]
    data.setdefault("benchmarks", {}).setdefault(name, {}).update(
        {"baseline_figures": c.base_figs[c.best], "run_figures": c.run_figs, "paired": paired,
         "baseline_dir": str(c.base.dir)})
    n = c.base_figs[c.best]
    return [P(f"**{title}** accuracies in percent on {n['n_prompts']} prompts ({n['n_instructions']} "
              f"instructions); Δ = fine-tuned minus baseline, in points:"), Table(headers, rows), Bullets(se_lines)]


def per_type_blocks(name: str, c: Comparison, data: dict[str, Any]) -> list[Block]:
    """Section 7 for another benchmark: paired figures per category, then per instruction id."""
    task = get_task(name)
    base, ev, common = c.base, c.evals[c.best], c.commons[c.best]
    groups = group_figures(base, ev, common, CategorySplit(task.categories))
    lines = [f"**{g}** ({plural(v['types'], 'type')}, {plural(v['instructions'], 'instruction')}): strict "
             f"{pct(v['strict']['baseline'])}% → {pct(v['strict']['finetuned'])}% (Δ {signed(v['strict']['delta'])}, "
             f"paired standard error {plus_minus(v['strict']['paired_se'])}); loose {pct(v['loose']['baseline'])}% → "
             f"{pct(v['loose']['finetuned'])}% (Δ {signed(v['loose']['delta'])})" for g, v in groups.items()]
    ids = [r for r in instruction_deltas(base, ev, common) if not r["id"].endswith(":*")]
    ids.sort(key=lambda x: (x["id"].split(":")[0], -x["d_strict"], -x["d_loose"], x["id"]))
    data.setdefault("benchmarks", {}).setdefault(name, {}).update({"categories": groups, "per_instruction": ids})
    return [P(f"**{task.title}**, baseline vs `{c.best_record.name}` on {len(common)} prompts, instruction-level, "
              f"pooled per category (the id before the colon; none of these types is drawn by sftlab's "
              f"augmentation):"), Bullets(lines), P(f"{task.title} by instruction id:"), _instruction_table(ids)]


def example_blocks(name: str, c: Comparison, data: dict[str, Any]) -> list[Block]:
    """Section 8 for another benchmark: before/after examples chosen as for IFEval."""
    title = get_task(name).title
    rec, base, ev, common = c.best_record, c.base, c.evals[c.best], c.commons[c.best]
    ch = choose_examples(base, ev, common, k=2)
    blocks: list[Block] = [P(f"**{title}**: {ch['n_wins']} of {len(common)} prompts gained by `{rec.name}` "
                             f"({'followed completely' if ch['kind'] == 'full' else 'more instructions followed'}), "
                             f"{ch['n_losses']} lost; up to two gains and one loss:")]
    for i, p in enumerate(ch["wins"], 1):
        blocks += _example_blocks(f"{title} example {i}", p, base, ev, rec.name, title)
    for p in ch["regression"]:
        blocks += _example_blocks(f"{title} regression", p, base, ev, rec.name, title)
    data.setdefault("benchmarks", {}).setdefault(name, {})["examples"] = {
        "wins": [base.keys.get(p) or p[:60] for p in ch["wins"]],
        "regression": [base.keys.get(p) or p[:60] for p in ch["regression"]]}
    return blocks
