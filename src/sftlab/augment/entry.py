"""The contract of one catalogue entry: what it is given (:class:`Job`), what it returns (``Result``),
what it raises when it cannot serve a reply (:class:`Skip`), and how it is described (:class:`Entry`).

Why a module of its own: the entry functions (``relabel``, ``transforms``), the helpers they share
(``text``), the table (``catalogue``) and the pipeline all speak these types; keeping them at the
bottom of the import graph lets every other module depend on them without a cycle.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Skip(Exception):
    """An instruction cannot be satisfied on this reply; ``reason`` goes to the statistics."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Job:
    """What an entry sees: the original request, the reply so far, the other chosen ids, a seeded rng.

    ``options``: the construction switches that are on (``preserve_content``, ``binding``; see
    :class:`sftlab.augment.config.AugmentConfig`). ``source``: the reply before any entry ran, so a
    relabel can count on the reply itself, not on what other instructions added ("" = ``reply``).
    """

    prompt: str
    reply: str
    ids: tuple[str, ...]
    rng: random.Random
    options: frozenset[str] = field(default_factory=frozenset)
    source: str = ""

    @property
    def original(self) -> str:
        return self.source or self.reply

    def on(self, option: str) -> bool:
        return option in self.options


Result = tuple[str, dict[str, Any]]
"""(new reply, IFEval kwargs) returned by every entry's function."""


@dataclass(frozen=True)
class Entry:
    """One supported IFEval instruction id.

    ``fn`` returns the (possibly rewritten) reply and the kwargs, or raises :class:`Skip`.
    ``phrasings`` are ``str.format`` templates over ``fields(kwargs, rng)`` (default: the kwargs).
    ``stage`` orders application; relabels (stage 100) run after every transform.
    """

    id: str
    kind: str  # "relabel" or "transform"
    stage: int
    fn: Callable[[Job], Result]
    phrasings: tuple[str, ...]
    fields: Callable[[dict[str, Any], random.Random], dict[str, Any]] | None = None
