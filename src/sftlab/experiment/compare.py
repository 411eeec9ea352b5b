"""Two ``sftlab eval`` outputs compared on the prompts they share: ``sftlab compare``.

Why: a base and a fine-tuned model scored on a second IFEval prompt set need the same paired
statistics as the report (paired standard errors over prompts for prompt-level figures, over
instructions for instruction-level ones) and the same trained/held-out split of the instruction
types, without a run directory around them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.task import METRICS
from sftlab.eval.tasks import DEFAULT_BENCHMARK, get_task
from sftlab.experiment.typesplit import CategorySplit, type_split
from sftlab.layout import TRAIN_CONFIG, EvalDir, TrainDir
from sftlab.report.evals import (
    EvalData,
    benchmark_of,
    common_prompts,
    group_figures,
    instruction_deltas,
    load_eval,
    paired_figures,
)
from sftlab.report.results import FIGURE_LABELS
from sftlab.utils import read_json


def _model_of(ev: EvalData) -> str | None:
    m = ev.summary.get("model")
    return m.get("spec") if isinstance(m, dict) else m


def default_train_dir(ev: EvalData) -> Path | None:
    """The eval's model when that is an ``sftlab train`` output (it has a resolved ``sftlab_config.yaml``)."""
    m = ev.summary.get("model")
    candidates = [m.get("path"), m.get("spec")] if isinstance(m, dict) else [m]
    gen = EvalDir(ev.dir).generation
    if gen.is_file():
        g = read_json(gen)
        candidates.append(g.get("model_path") if isinstance(g, dict) else None)
    for c in candidates:
        if isinstance(c, str) and c and TrainDir(Path(c)).config.is_file():
            return Path(c)
    return None


def _pct(v: float) -> float | None:
    return None if math.isnan(v) else 100 * v


def _paired_json(f: dict[str, Any]) -> dict[str, Any]:
    """One paired figure in percent and points, with the delta over its standard error (None when undefined)."""
    se = f["paired_se"]
    z = f["delta"] / se if se and not math.isnan(se) else None
    return {"n": f["n"], "baseline_pct": _pct(f["baseline"]), "finetuned_pct": _pct(f["finetuned"]),
            "delta_points": _pct(f["delta"]), "paired_se_points": _pct(se), "z": z, "won": f["won"], "lost": f["lost"]}


def _load(path: str | Path, which: str) -> EvalData:
    try:
        return load_eval(path)
    except SftlabError as e:
        raise SftlabError(f"--{which}: {e}") from None


def _one_benchmark(base: EvalData, ft: EvalData):
    """The task both evaluations scored; two benchmarks are a one-line error (their prompts never pair)."""
    a, b = benchmark_of(base), benchmark_of(ft)
    if a != b:
        raise SftlabError(f"--baseline {base.dir} scored {a} but --finetuned {ft.dir} scored {b}; compare two "
                          f"evaluations of one benchmark")
    return get_task(a)


def compare_evals(baseline: str | Path, finetuned: str | Path, train_dir: str | Path | None = None) -> dict[str, Any]:
    """Every number ``sftlab compare`` prints, in percent and points (the ``--json`` document).

    Per-type groups: the trained/held-out split of the fine-tuned model's ``augment:`` block for a
    benchmark without categories (IFEval), the benchmark's categories otherwise (IFBench).
    """
    base, ft = _load(baseline, "baseline"), _load(finetuned, "finetuned")
    task = _one_benchmark(base, ft)
    common = common_prompts(ft, base)
    if not common:
        raise SftlabError(f"{base.dir} and {ft.dir} share no prompt; score both models on the same "
                          f"{task.title} inputs")
    td, source = (Path(train_dir), "--train-dir") if train_dir else (default_train_dir(ft), "the fine-tuned model")
    if td is not None and not TrainDir(td).config.is_file():
        raise SftlabError(f"--train-dir {td} is not an 'sftlab train' output (no {TRAIN_CONFIG})")
    split = CategorySplit(task.categories) if task.categories else (type_split(td) if td is not None else None)
    figures = paired_figures(base, ft, common)
    per_type = [{"id": r["id"], "group": split.group_of(r["id"]) if split else None, "n": r["n"],
                 "strict_before_pct": 100 * r["strict_before"], "strict_after_pct": 100 * r["strict_after"],
                 "delta_strict_points": 100 * r["d_strict"],
                 "loose_before_pct": 100 * r["loose_before"], "loose_after_pct": 100 * r["loose_after"],
                 "delta_loose_points": 100 * r["d_loose"]}
                for r in instruction_deltas(base, ft, common) if not r["id"].endswith(":*")]
    groups = group_figures(base, ft, common, split) if split else None
    return {
        "benchmark": task.name,
        "baseline": {"dir": str(base.dir), "model": _model_of(base), "prompts": len(base.strict)},
        "finetuned": {"dir": str(ft.dir), "model": _model_of(ft), "prompts": len(ft.strict)},
        "shared_prompts": len(common),
        "shared_instructions": figures["inst_level_strict_acc"]["n"],
        "metrics": {m: {"label": FIGURE_LABELS[m], **_paired_json(figures[m])} for m in METRICS},
        "train_dir": str(td) if td is not None else None,
        "train_dir_from": source if td is not None else None,
        "type_split": ({"trained": list(split.trained), "held_out": list(split.held_out)}
                       if split is not None and not task.categories else None),
        "grouped_by": "category" if task.categories else ("type_split" if split is not None else None),
        "groups": {g: {"types": v["types"], "instructions": v["instructions"], "strict": _paired_json(v["strict"]),
                       "loose": _paired_json(v["loose"])} for g, v in groups.items()} if groups is not None else None,
        "per_type": per_type,
    }


# ---- text ---------------------------------------------------------------------------------------


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in [headers, *rows])


def _paired_cells(f: dict[str, Any]) -> list[str]:
    return [_num(f["baseline_pct"]), _num(f["finetuned_pct"]), _num(f["delta_points"], "+.1f"),
            _num(f["paired_se_points"]), _num(f["z"], "+.2f"), str(f["won"]), str(f["lost"])]


def _groups_table(groups: dict[str, Any], first: str) -> str:
    return text_table([first, "types", "instructions", "strict base %", "strict ft %", "Δ strict", "paired SE",
                       "Δ/SE", "won", "lost", "loose base %", "loose ft %", "Δ loose"],
                      [[g, str(v["types"]), str(v["instructions"]), *_paired_cells(v["strict"]),
                        _num(v["loose"]["baseline_pct"]), _num(v["loose"]["finetuned_pct"]),
                        _num(v["loose"]["delta_points"], "+.1f")] for g, v in groups.items()])


def _types_text(res: dict[str, Any]) -> list[str]:
    split, groups = res["type_split"], res["groups"]
    if res.get("grouped_by") == "category":
        lines = ["instruction types by category (none of them is drawn by sftlab's augmentation); "
                 "instruction-level, pooled per category", _groups_table(groups, "category"), ""]
    elif split is None:
        why = (f"{res['train_dir']} has no augment: block" if res["train_dir"]
               else "the fine-tuned model is not an 'sftlab train' output (pass --train-dir DIR)")
        lines = [f"instruction types: no trained/held-out split: {why}"]
    else:
        lines = [f"instruction types: {len(split['trained'])} trained, {len(split['held_out'])} held out, from the "
                 f"augment: block of {res['train_dir']} ({res['train_dir_from']}); instruction-level, pooled per group",
                 _groups_table(groups, "group"), ""]
    order = {g: i for i, g in enumerate(groups or ())}
    rows = sorted(res["per_type"], key=lambda r: (order.get(r["group"], 0), -r["delta_strict_points"], r["id"]))
    lines.append(text_table(["instruction type", "group", "n", "strict base %", "strict ft %", "Δ strict",
                             "loose base %", "loose ft %", "Δ loose"],
                            [[r["id"], r["group"] or "-", str(r["n"]), _num(r["strict_before_pct"]),
                              _num(r["strict_after_pct"]), _num(r["delta_strict_points"], "+.1f"),
                              _num(r["loose_before_pct"]), _num(r["loose_after_pct"]),
                              _num(r["delta_loose_points"], "+.1f")] for r in rows]))
    return lines


def format_comparison(res: dict[str, Any]) -> str:
    """The printed comparison: the four figures with paired standard errors, then the per-type split."""
    b, f = res["baseline"], res["finetuned"]
    name = res.get("benchmark", DEFAULT_BENCHMARK)
    on = "" if name == DEFAULT_BENCHMARK else f" on {get_task(name).title}"  # IFEval's line reads as before
    head = (f"{res['shared_prompts']} prompts shared ({res['shared_instructions']} instructions){on}: "
            f"baseline {b['dir']} "
            f"(model {b['model']}, {b['prompts']} prompts), fine-tuned {f['dir']} (model {f['model']}, "
            f"{f['prompts']} prompts)")
    rows = [[m["label"], f"{m['n']} {'prompts' if k.startswith('prompt') else 'instructions'}", *_paired_cells(m)]
            for k, m in res["metrics"].items()]
    table = text_table(["figure", "paired over", "baseline %", "fine-tuned %", "Δ points", "paired SE", "Δ/SE",
                        "won", "lost"], rows)
    return "\n".join([head, table, "", *_types_text(res)])
