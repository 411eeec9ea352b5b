"""Report section 9: the results table and what it supports about the hyperparameters.

Each statement is computed from the rows and stated with its noise level: a spread or an effect
smaller than two standard errors of a difference between two runs is called within noise.
"""

from __future__ import annotations

import math
from typing import Any

from sftlab.report.document import SECTION_TITLES, Bullets, P, Section, Table, signed
from sftlab.report.evals import Comparison, binomial_se, noise_verdict, paired_se
from sftlab.report.results import fmt_num, pct, results_table


def _best_line(c: Comparison) -> str:
    rows, br = c.rows, c.rows[c.best]
    n, p = br["n_prompts"], br["prompt_level_strict_acc"]
    tied = [r["run"] for r in rows if r["prompt_level_strict_acc"] == p]
    common = c.commons[c.best]
    d = p - c.base_figs[c.best]["prompt_level_strict_acc"]
    se = paired_se(c.base.follows_all(common), c.evals[c.best].follows_all(common))
    text = (f"Best run by prompt-level strict accuracy: **{br['run']}** with {pct(p)}% on {n} prompts "
            f"(binomial standard error ±{100 * binomial_se(p, n):.1f} points)")
    if len(tied) > 1:
        text += (f", tied with {', '.join(f'`{t}`' for t in tied if t != br['run'])} (ties are broken by "
                 f"instruction-level strict, then prompt-level loose accuracy, then sweep order)")
    return text + (f"; baseline {pct(c.base_figs[c.best]['prompt_level_strict_acc'])}%, Δ {signed(d)} points "
                   f"({noise_verdict(d, se)}).")


def setting_effects(rows: list[dict[str, Any]], varied_keys: list[str]) -> list[tuple[float, str, dict[str, float]]]:
    """For each varied setting with two or more values: (range of the mean score by value, key, means),
    largest range first."""
    effects = []
    for k in varied_keys:
        groups: dict[str, list[float]] = {}
        for r in rows:
            groups.setdefault(fmt_num(r.get(k)), []).append(r["prompt_level_strict_acc"])
        if len(groups) < 2:
            continue
        means = {v: sum(x) / len(x) for v, x in groups.items()}
        effects.append((max(means.values()) - min(means.values()), k, means))
    effects.sort(key=lambda e: -e[0])
    return effects


def _spread_lines(c: Comparison) -> list[str]:
    """What the spread of scores between runs, and each varied setting, can be said to show."""
    rows, n = c.rows, c.rows[c.best]["n_prompts"]
    scores = [r["prompt_level_strict_acc"] for r in rows]
    if max(scores) == min(scores):
        return [f"All {len(rows)} runs score the same prompt-level strict accuracy ({pct(scores[0])}%) on these "
                f"{n} prompts, so no setting measurably moved it; more prompts or longer training would be needed "
                f"to separate them."]
    pooled = sum(scores) / len(scores)
    # Two standard errors of the difference between two independent runs at the pooled accuracy.
    noise = 2 * math.sqrt(2) * binomial_se(pooled, n)
    spread = max(scores) - min(scores)
    lines = [f"Prompt-level strict accuracy ranges from {pct(min(scores))}% to {pct(max(scores))}% across "
             f"the {len(rows)} runs (spread {100 * spread:.1f} points). With {n} prompts, two runs differ "
             f"beyond noise only by more than about {100 * noise:.1f} points (2 standard errors of a "
             f"difference at the pooled accuracy {pct(pooled)}%); this spread is "
             f"{'within' if spread <= noise else 'beyond'} that."]
    effects = setting_effects(rows, c.varied_keys)
    for rng, k, means in effects:
        desc = ", ".join(f"{v}: {pct(m)}%" for v, m in means.items())
        lines.append(f"`{k}`: mean prompt-level strict accuracy by value {desc}; range {100 * rng:.1f} points "
                     f"({'within' if rng <= noise else 'beyond'} the ~{100 * noise:.1f}-point noise level).")
    if effects:
        top = effects[0]
        if top[0] > noise:
            lines.append(f"The setting that moved the score most is `{top[1]}` ({100 * top[0]:.1f} points between "
                         f"its best and worst value, averaged over the other settings).")
        else:
            lines.append(f"`{top[1]}` moved the score most ({100 * top[0]:.1f} points), but no setting's effect "
                         f"exceeds the noise level at {n} prompts; more prompts or repeated seeds are needed "
                         f"before preferring one value.")
    return lines


def _loss_line(c: Comparison) -> list[str]:
    """Whether the run with the lowest final training loss is also the best on IFEval."""
    losses = [(r["final_train_loss"], r["run"]) for r in c.rows if isinstance(r["final_train_loss"], (int, float))]
    if not losses:
        return []
    lo = min(losses)
    p = c.rows[c.best]["prompt_level_strict_acc"]
    tied = [r["run"] for r in c.rows if r["prompt_level_strict_acc"] == p]
    if lo[1] in tied:
        rel = "also among the best runs on IFEval" if len(tied) > 1 else "also the best run on IFEval"
    else:
        rel = "not the best run on IFEval"
    return [f"Lowest final training loss: `{lo[1]}` ({lo[0]:.4f}); it is {rel}."]


def section_analysis(c: Comparison, data: dict[str, Any]) -> Section:
    headers, cells = results_table(c.rows, c.varied_keys)
    blocks = [P(f"Varied settings: {', '.join(f'`{k}`' for k in c.varied_keys) or 'none'}. IFEval figures in "
                f"percent on {c.rows[c.best]['n_prompts']} prompts, on the prompts each run shares with the "
                f"baseline; the best run is in bold."),
              Table(headers, cells)]
    lines = [_best_line(c)]
    if len(c.rows) == 1:
        lines.append("Only one configuration was trained, so this report cannot say how any hyperparameter affects "
                     "the score.")
    else:
        lines += _spread_lines(c) + _loss_line(c)
    data["analysis"] = lines
    blocks.append(Bullets(lines))
    return Section(SECTION_TITLES[8], blocks)
