"""Loss curves as PNG files: the one plotter that training (``loss_curve.png``) and the report share."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sftlab.utils import atomic_write_bytes


def plot_loss_curve(records: list[dict[str, Any]], path: str | Path, title: str = "") -> bool:
    """Training loss per step (and eval loss when present) to a PNG, written atomically; IFEval
    figures logged during training (``ifeval_prompt_strict``/``ifeval_inst_strict``) on a second axis."""
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    ifeval = [r for r in records if r.get("ifeval_prompt_strict") is not None]
    if not train and not evals:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", lw=1.2)
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ifeval:
        ax2 = ax.twinx()
        for key, label, style, color in (("ifeval_prompt_strict", "IFEval prompt strict", "s--", "C2"),
                                         ("ifeval_inst_strict", "IFEval instruction strict", "^--", "C3")):
            ax2.plot([r["step"] for r in ifeval], [r[key] for r in ifeval], style, label=label, lw=1.0, color=color)
        ax2.set_ylabel("IFEval accuracy (sample)")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
