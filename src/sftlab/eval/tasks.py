"""The benchmark registry: every task ``sftlab eval --benchmark`` and ``eval.benchmarks`` accept."""

from __future__ import annotations

from sftlab.errors import SftlabError, suggest
from sftlab.eval.task import Task

#: Benchmark names, the default first: the one home of the choice set.
BENCHMARKS = ("ifeval", "ifbench")
DEFAULT_BENCHMARK = BENCHMARKS[0]


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; an unknown name is a one-line error listing the known ones."""
    if name == "ifeval":
        from sftlab.eval.ifeval import TASK

        return TASK
    if name == "ifbench":
        from sftlab.eval.ifbench import TASK

        return TASK
    raise SftlabError(f"unknown benchmark '{name}'{suggest(name, list(BENCHMARKS))}; choose one of "
                      f"{', '.join(BENCHMARKS)}")
