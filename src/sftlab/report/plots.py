"""The report's figures as PNG bytes: each run's loss curve, all runs overlaid, and the IFEval bars.

A run's loss curve is drawn by :func:`sftlab.train.loss_curve.plot_loss_curve`, the plotter training uses for
``loss_curve.png``, so the report and the training output show the same picture.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sftlab.eval.ifeval import METRICS
from sftlab.report.results import FIGURE_LABELS, RunRecord, loss_series
from sftlab.train.loss_curve import plot_loss_curve


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def plot_run_loss(rec: RunRecord, path: Path) -> bytes | None:
    """Write the run's loss curve to ``path``; its bytes (for the HTML), or None when nothing was logged."""
    if not plot_loss_curve(rec.metrics, path, title=f"Loss: {rec.name}"):
        return None
    return Path(path).read_bytes()


def plot_overlay(records: list[RunRecord]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.2))
    ax = fig.add_subplot()
    for rec in records:
        train, _ = loss_series(rec)
        if train:
            ax.plot([s for s, _ in train], [v for _, v in train], label=rec.name, lw=1.3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats / trained token)")
    ax.set_title("Training loss of all runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_ifeval(names: list[str], figs: list[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    for i, (name, f) in enumerate(zip(names, figs, strict=True)):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(METRICS))]
        ax.bar(xs, [100 * f[k] for k in METRICS], width=width, label=name)
    ax.set_xticks(range(len(METRICS)), [FIGURE_LABELS[k] for k in METRICS])
    ax.set_ylabel("IFEval accuracy (%)")
    ax.set_title("IFEval: baseline vs fine-tuned")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
