"""What a benchmark task is to sftlab: its inputs, its checkers, its metrics, its headline.

lm-evaluation-harness keeps the task (inputs, scoring), the model and the evaluator that bridges
them apart; sftlab does likewise. A benchmark module (:mod:`sftlab.eval.ifeval`, :mod:`sftlab.eval.ifbench`)
defines one :class:`Task`; :mod:`sftlab.eval.tasks` names them; :mod:`sftlab.eval.bridge` loads a
model, generates and scores through whichever task it is given. Both benchmarks are "verifiable
instructions": a prompt carries instruction ids with keyword arguments, and a checker class per id
decides whether a response follows it (:mod:`sftlab.eval.scoring`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The four figures every verifiable-instruction benchmark reports, in sftlab's order.
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


@dataclass(frozen=True)
class Task:
    """One benchmark. Callables are zero-argument so nothing heavy is imported until a task is used."""

    name: str  # as the user types it: --benchmark NAME, eval.benchmarks: [NAME]
    title: str  # as tables print it
    hub_id: str  # the default inputs (online)
    headline: str  # one of METRICS: the figure the benchmark's paper reports
    offline_hint: str  # what to pass instead of the hub id when offline
    registry: Callable[[], dict[str, Any]]  # instruction id -> checker class (imports the checkers safely)
    ensure_data: Callable[[], None]  # local NLTK data the checkers need, checked before any generation
    scorer_info: Callable[[], dict[str, Any]]  # recorded in summary.json: which checkers, which adjustments
    #: Whether a responses row whose prompt is not among the inputs is an error (IFEval) or counted
    #: and reported (IFBench: its own released sample responses carry a broken row).
    unmatched_is_error: bool = True
    metrics: tuple[str, ...] = METRICS
    #: Categories per-type tables group by (``sftlab compare``, the report); empty: the trained/held-out split.
    categories: tuple[str, ...] = ()

    def category(self, instruction_id: str) -> str:
        """An instruction's category: its id up to the colon (``count:word_count_range`` -> ``count``)."""
        return instruction_id.split(":", 1)[0]
