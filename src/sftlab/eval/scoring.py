"""Scoring verifiable instructions, deterministically: one loop for IFEval and IFBench.

Both benchmarks' official scorers run the same per-prompt loop (``evaluation_lib`` in Google's
``instruction_following_eval`` and in AllenAI's IFBench; ``if_verifiable.common.evaluate_instructions``
repeats it): build each instruction's checker from the input's keyword arguments (and the prompt,
for checkers that ask for it), then *strict* checks the response as it is, *loose* accepts any of
eight variants with the first/last line and ``*`` removed. sftlab writes that loop once, here, with
the two adjustments :mod:`sftlab.eval.ifeval` explains (kwargs: only ``None`` dropped; every random
draw seeded per (prompt, instruction index), so verdicts never depend on order or on the run).
The checker classes come from the task (:attr:`sftlab.eval.task.Task.registry`).
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.task import METRICS
from sftlab.layout import EvalDir
from sftlab.utils import atomic_write_json, atomic_write_text

__all__ = ["METRICS", "RESULT_FIELDS", "aggregate", "check_instruction", "clean_kwargs", "format_table",
           "loose_variants", "score_responses", "seeded_checkers", "write_results"]

RESULT_FIELDS = ("instruction_id_list", "prompt", "response", "follow_all_instructions", "follow_instruction_list")
LANGDETECT_SEED = 0


@contextmanager
def seeded_checkers(seed: int) -> Iterator[None]:
    """Seed every randomness source the checkers use, then restore the caller's state."""
    import langdetect

    factory = langdetect.DetectorFactory
    old_state = random.getstate()
    old_seed = factory.seed
    random.seed(seed)
    factory.seed = LANGDETECT_SEED
    try:
        yield
    finally:
        random.setstate(old_state)
        factory.seed = old_seed


def _seed_for(prompt: str, index: int) -> int:
    return zlib.crc32(f"{index}\x1f{prompt}".encode())


def clean_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Drop the hub's ``None`` padding; keep everything else exactly as given (see module docstring)."""
    return {k: v for k, v in (kwargs or {}).items() if v is not None}


def loose_variants(response: str) -> list[str]:
    """The eight variants the official loose scorer tries: first/last line removed, ``*`` removed."""
    lines = response.split("\n")
    no_first = "\n".join(lines[1:]).strip()
    no_last = "\n".join(lines[:-1]).strip()
    no_both = "\n".join(lines[1:-1]).strip()
    base = [response, no_first, no_last, no_both]
    return [base[0], base[0].replace("*", ""), no_first, no_last, no_both,
            no_first.replace("*", ""), no_last.replace("*", ""), no_both.replace("*", "")]


def check_instruction(registry: dict[str, Any], inp: dict[str, Any], index: int, response: str,
                      variants: list[str]) -> tuple[bool, bool]:
    """(strict, loose) verdict for instruction ``index`` of ``inp``, deterministically seeded."""
    instruction_id = inp["instruction_id_list"][index]
    with seeded_checkers(_seed_for(inp["prompt"], index)):
        checker = registry[instruction_id](instruction_id)
        checker.build_description(**clean_kwargs(inp["kwargs"][index]))
        args = checker.get_instruction_args()
        if args and "prompt" in args:  # as the official scorer does
            checker.build_description(prompt=inp["prompt"])
        strict = bool(response.strip() and checker.check_following(response))
        loose = strict or any(bool(r.strip() and checker.check_following(r)) for r in variants)
    return strict, loose


def score_responses(inputs: list[dict], responses: dict[str, str], registry: dict[str, Any],
                    title: str = "IFEval") -> dict:
    """Score ``responses`` (prompt -> response) on ``inputs``; every input needs a response.

    Returns ``{"strict": [...], "loose": [...], "metrics": {...}, "counts": {...},
    "per_instruction": {"by_id": ..., "by_category": ...}}``; the row lists are in the official
    ``eval_results_*.jsonl`` format, in input order.
    """
    if not inputs:
        raise SftlabError(f"no {title} inputs to score")
    missing = [inp["key"] for inp in inputs if inp["prompt"] not in responses]
    if missing:
        raise SftlabError(f"{len(missing)} {title} prompt(s) have no response (keys {missing[:5]}...)")
    strict_rows, loose_rows = [], []
    for inp in inputs:
        response = responses[inp["prompt"]]
        variants = loose_variants(response)
        verdicts = [check_instruction(registry, inp, i, response, variants)
                    for i in range(len(inp["instruction_id_list"]))]
        for rows, j in ((strict_rows, 0), (loose_rows, 1)):
            follow = [v[j] for v in verdicts]
            rows.append({"instruction_id_list": inp["instruction_id_list"], "prompt": inp["prompt"],
                         "response": response, "follow_all_instructions": all(follow),
                         "follow_instruction_list": follow})
    return {"strict": strict_rows, "loose": loose_rows, **aggregate(strict_rows, loose_rows)}


def aggregate(strict_rows: list[dict], loose_rows: list[dict]) -> dict:
    """Headline accuracies, the counts behind them, and accuracy per instruction id and category."""
    n_prompts = len(strict_rows)
    n_inst = sum(len(r["follow_instruction_list"]) for r in strict_rows)
    counts = {
        "prompts": n_prompts,
        "instructions": n_inst,
        "prompt_level_strict": sum(r["follow_all_instructions"] for r in strict_rows),
        "inst_level_strict": sum(sum(r["follow_instruction_list"]) for r in strict_rows),
        "prompt_level_loose": sum(r["follow_all_instructions"] for r in loose_rows),
        "inst_level_loose": sum(sum(r["follow_instruction_list"]) for r in loose_rows),
    }
    metrics = {
        "prompt_level_strict_acc": counts["prompt_level_strict"] / n_prompts,
        "inst_level_strict_acc": counts["inst_level_strict"] / n_inst,
        "prompt_level_loose_acc": counts["prompt_level_loose"] / n_prompts,
        "inst_level_loose_acc": counts["inst_level_loose"] / n_inst,
    }
    tallies: dict[str, dict[str, list[int]]] = {"by_id": {}, "by_category": {}}
    for s_row, l_row in zip(strict_rows, loose_rows, strict=True):
        for iid, s, lo in zip(s_row["instruction_id_list"], s_row["follow_instruction_list"],
                              l_row["follow_instruction_list"], strict=True):
            for table, name in (("by_id", iid), ("by_category", iid.split(":", 1)[0])):
                t = tallies[table].setdefault(name, [0, 0, 0])
                t[0] += 1
                t[1] += int(s)
                t[2] += int(lo)
    per_instruction = {
        table: {name: {"count": c, "strict_acc": s / c, "loose_acc": lo / c}
                for name, (c, s, lo) in sorted(entries.items())}
        for table, entries in tallies.items()
    }
    return {"metrics": metrics, "counts": counts, "per_instruction": per_instruction}


#: How tables name each metric (the headline note of :func:`format_table`).
METRIC_NAMES = {"prompt_level_strict_acc": "prompt-level strict", "inst_level_strict_acc": "instruction-level strict",
                "prompt_level_loose_acc": "prompt-level loose", "inst_level_loose_acc": "instruction-level loose"}


def format_table(summary: dict, title: str = "IFEval", headline: str | None = None) -> str:
    """A plain-text table: the four headline figures, then accuracy per instruction category.

    ``headline`` (a metric key) is named after the title: the figure the benchmark reports.
    """
    m, c = summary, summary["counts"]
    note = f" (headline: {METRIC_NAMES[headline]})" if headline else ""
    lines = [
        f"{title}: {c['prompts']} prompts, {c['instructions']} instructions{note}",
        f"{'':<28}{'strict':>18}{'loose':>18}",
        f"{'prompt-level accuracy':<28}"
        f"{_cell(m['prompt_level_strict_acc'], c['prompt_level_strict'], c['prompts']):>18}"
        f"{_cell(m['prompt_level_loose_acc'], c['prompt_level_loose'], c['prompts']):>18}",
        f"{'instruction-level accuracy':<28}"
        f"{_cell(m['inst_level_strict_acc'], c['inst_level_strict'], c['instructions']):>18}"
        f"{_cell(m['inst_level_loose_acc'], c['inst_level_loose'], c['instructions']):>18}",
        "",
        f"{'category':<28}{'n':>6}{'strict':>10}{'loose':>10}",
    ]
    for name, row in summary["per_instruction"]["by_category"].items():
        lines.append(f"{name:<28}{row['count']:>6}{100 * row['strict_acc']:>9.1f}%{100 * row['loose_acc']:>9.1f}%")
    return "\n".join(lines)


def _cell(acc: float, k: int, n: int) -> str:
    return f"{100 * acc:.1f}% ({k}/{n})"


def write_results(output_dir: str | Path, results: dict, extra: dict) -> dict:
    """Write ``eval_results_{strict,loose}.jsonl`` and ``summary.json``; returns the summary."""
    ed = EvalDir(Path(output_dir))
    for name, path in (("strict", ed.results_strict), ("loose", ed.results_loose)):
        text = "".join(json.dumps({k: row[k] for k in RESULT_FIELDS}, ensure_ascii=False) + "\n"
                       for row in results[name])
        atomic_write_text(path, text)
    summary = {**results["metrics"], "counts": results["counts"], **extra,
               "per_instruction": results["per_instruction"]}
    atomic_write_json(ed.summary, summary)
    return summary
