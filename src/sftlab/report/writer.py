"""``write_report``: read the runs and the baseline, build the nine sections, write every file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.layout import DONE, ReportDir, SweepDir
from sftlab.report.analysis import section_analysis
from sftlab.report.benchmarks import (
    example_blocks,
    figures_blocks,
    headline_blocks,
    other_comparisons,
    per_type_blocks,
)
from sftlab.report.comparison import section_baseline, section_examples, section_per_instruction
from sftlab.report.data import section_data
from sftlab.report.document import SECTION_TITLES, P, render_html, render_markdown
from sftlab.report.evals import Comparison, compare, load_eval
from sftlab.report.results import expand_run_dirs, varied_keys_of
from sftlab.report.sections import section_environment, section_loss, section_method, section_training
from sftlab.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, log


def _baseline_from(dirs: list[Path]) -> Path | None:
    """The baseline eval next to the runs: ``baseline_eval/`` of a sweep or an ``sftlab run`` output."""
    for d in dirs:
        e = SweepDir(d).baseline  # the same place as RunDir(d).baseline
        if e.summary.is_file():
            return e.root
    return None


def _intro(c: Comparison, base_dir: Path, generated_at: str) -> P:
    bmodel = c.base.summary.get("model")
    bmodel = bmodel.get("spec") if isinstance(bmodel, dict) else bmodel
    return P(f"Baseline: `{base_dir}` (model `{bmodel}`). "
             f"Fine-tuned run(s): {', '.join('`' + r.name + '`' for r in c.records)}. "
             f"IFEval figures are percentages on {c.run_figs[c.best]['n_prompts']} prompts; best run by prompt-level "
             f"strict accuracy: **{c.best_record.name}**. Generated {generated_at} by `sftlab report`.")


def _add_other_benchmarks(sections: list, c: Comparison, base_dir: Path, records: list, varied: list[str],
                          data: dict[str, Any]) -> None:
    """IFBench (and any other benchmark evaluated beside IFEval) into sections 6 to 8, after IFEval's."""
    others = other_comparisons(base_dir, records, c, varied)
    if not others:
        return
    sections[5].blocks[:0] = headline_blocks(c, others, data)
    for name, oc in others.items():
        sections[5].blocks += figures_blocks(name, oc, data)
        sections[6].blocks += per_type_blocks(name, oc, data)
        sections[7].blocks += example_blocks(name, oc, data)


def write_report(*, baseline: str | Path | None, runs: list[str | Path], output_dir: str | Path,
                 title: str = "sftlab report", model_check: bool = True) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, the PNG plots and ``report.json`` into ``output_dir``.

    ``runs`` are run directories (a sweep directory stands for all its finished runs); ``baseline``
    is the base model's eval directory, found next to the runs (``baseline_eval/``) when omitted.
    """
    t0 = time.time()
    run_dirs = [Path(r) for r in runs]
    records = expand_run_dirs(run_dirs)
    if not records:
        raise SftlabError(f"no finished runs to report (a sweep's runs need their {DONE} file)")
    base_dir = Path(baseline) if baseline else _baseline_from(run_dirs)
    if base_dir is None:
        raise SftlabError("no baseline evaluation: pass --baseline EVAL_DIR (an 'sftlab eval' output of the base model)")
    c = compare(load_eval(base_dir), records, varied_keys_of(run_dirs))
    out = ReportDir(Path(output_dir))
    out.root.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    data: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "baseline": str(base_dir),
                            "runs": [str(r.run_dir) for r in records]}
    sections = [
        section_environment(records, c.base),
        section_method(records, c.best, data, model_check=model_check),
        section_training(records),
        section_data(records, c.best, data),
        section_loss(records, images, out.root),
        section_baseline(c, images, data),
        section_per_instruction(c, data),
        section_examples(c, data),
        section_analysis(c, data),
    ]
    assert [s.title for s in sections] == list(SECTION_TITLES)
    _add_other_benchmarks(sections, c, base_dir, records, varied_keys_of(run_dirs), data)
    intro = [_intro(c, base_dir, data["generated_at"])]
    for name, png in images.items():
        atomic_write_bytes(out.root / name, png)
    atomic_write_text(out.markdown, render_markdown(title, intro, sections))
    atomic_write_text(out.html, render_html(title, intro, sections, images))
    data["results"] = c.rows
    data["best_run"] = c.best_record.name
    data["images"] = sorted(images)
    atomic_write_json(out.json, data)
    log(f"sftlab report: wrote {out.markdown} and {out.html} ({time.time() - t0:.1f} s)")
    return {"markdown": out.markdown, "html": out.html, "json": out.json,
            "images": [out.root / n for n in sorted(images)], "best_run": c.best_record.name, "data": data}
