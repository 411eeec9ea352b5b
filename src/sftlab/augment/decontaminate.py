"""Decontamination against the benchmarks' prompts (IFEval, and IFBench when given): word n-gram overlap.

Why: training on text that shares an ``ngram``-word sequence with a prompt it is scored on would inflate
that score; conversations (and added instruction wording) that overlap are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from sftlab.augment.text import words_of


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of ``text`` (lowercased, punctuation-insensitive); a text shorter than n has none."""
    w = words_of(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


class Decontaminator:
    """Flags text that shares an n-gram with any IFEval prompt."""

    def __init__(self, prompts: Iterable[str], n: int = 8):
        self.n = n
        self.index: set[tuple[str, ...]] = set()
        for p in prompts:
            self.index |= ngrams(p, n)

    def hits(self, text: str) -> bool:
        w = words_of(text)
        return any(tuple(w[i:i + self.n]) in self.index for i in range(len(w) - self.n + 1))

    def conversation_hits(self, messages: list[dict[str, str]]) -> bool:
        """User and system text only: that is what the prompt side of training sees."""
        return any(self.hits(m["content"]) for m in messages if m["role"] in ("user", "system"))


def load_ifeval_prompts(spec: str) -> list[str]:
    """The prompt texts of an IFEval inputs file (or hub id), for decontamination."""
    return load_benchmark_prompts("ifeval", spec)


def load_benchmark_prompts(benchmark: str, spec: str) -> list[str]:
    """The prompt texts of a benchmark's inputs file (or hub id), for decontamination."""
    from sftlab.eval.inputs import load_inputs
    from sftlab.eval.tasks import get_task

    return [inp["prompt"] for inp in load_inputs(get_task(benchmark), spec)]
