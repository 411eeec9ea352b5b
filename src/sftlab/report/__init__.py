"""The experiment report, written from the runs themselves: ``report.md`` and a self-contained ``report.html``.

Every number in the report is read from files the other stages wrote (``train_summary.json``,
``metrics.jsonl``, ``sftlab_config.yaml``, ``stats.json``, ``eval_results_{strict,loose}.jsonl``, ``summary.json``)
or measured while the report is written (the self-checks of :mod:`sftlab.report.selfcheck`); nothing is
typed in by hand, and the analysis only says what those numbers support.

Modules: :mod:`~sftlab.report.document` (blocks, sections, Markdown and HTML rendering),
:mod:`~sftlab.report.evals` (per-prompt verdicts, figures on shared prompts, standard errors),
:mod:`~sftlab.report.plots`, and the sections: :mod:`~sftlab.report.sections` (1-3, 5),
:mod:`~sftlab.report.data` (4), :mod:`~sftlab.report.comparison` (6-8), :mod:`~sftlab.report.analysis` (9).

Sections (fixed): 1 Environment, 2 Method and checks, 3 Training configuration, 4 Data, 5 Loss curves,
6 Baseline vs fine-tuned, 7 Per-instruction results, 8 Example outputs, 9 Hyperparameters and analysis.
"""

from __future__ import annotations

from sftlab.report.document import SECTION_TITLES
from sftlab.report.evals import binomial_se, paired_se
from sftlab.report.writer import write_report

__all__ = ["SECTION_TITLES", "binomial_se", "paired_se", "write_report"]
