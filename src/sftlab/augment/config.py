"""Settings of an augmentation run (:class:`AugmentConfig`) and instruction-type name resolution.

Why: ``sftlab augment`` and a training config's ``augment:`` block share one validated settings
object; names are checked against the catalogue up front, so a typo fails before any work is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sftlab.augment.catalogue import ALL_TYPES, CATALOGUE, LEFT_OUT, OWN_CATALOGUE
from sftlab.augment.hygiene import HYGIENE_RULES
from sftlab.augment.phrasing import PHRASINGS
from sftlab.errors import ConfigError, check_choice, suggest

AUGMENT_VERSION = 1
"""Bumped whenever the catalogue or the construction changes, so cached augmented data is rebuilt."""


@dataclass
class AugmentConfig:
    """Settings of ``sftlab augment`` and of a training config's ``augment:`` block.

    ``types``: instruction ids to draw from (None = the whole catalogue); full ids, the part after
    the colon (``no_comma``) or a category (``change_case``). ``holdout_types``: never used, so an
    evaluation can tell transfer to unseen constraint types from learning trained ones.
    ``ratio``: fraction of (decontaminated) conversations that get instructions; the rest stay plain.
    ``type_weights``: relative draw weights, ``{name: weight}`` with names as in ``types`` or a kind
    (``transform``: the reply is rewritten; ``relabel``: the instruction is fitted to the reply as it
    is); weights of matching names multiply, unnamed types weigh 1. None draws uniformly.
    ``ngram``: decontamination n-gram length in words. ``decontaminate``: on by default; effective
    whenever ``ifeval_data`` (or ``ifeval_prompts``) is given. ``ifbench_data``: IFBench inputs (a file or
    hub id) whose prompts are decontaminated against as well; ``sftlab run``/``sweep`` (and ``train`` on a
    config whose ``eval.benchmarks`` names ifbench) set it to the IFBench prompts they evaluate on.
    ``replies``: ``dataset`` keeps the data's replies; ``model`` has the model being fine-tuned answer
    each single-turn prompt itself first (:mod:`sftlab.augment.replies`, self-distillation), with up to
    ``reply_max_new_tokens`` new tokens; the augmentation then works on those answers.
    ``strip_openers``: remove a chatty opening ("Sure, here's ...:") from every final reply, plain or
    augmented (:func:`sftlab.augment.text.strip_opener`).

    Issue #24's switches, all off by default (so older configs make the same data):
    ``hygiene``: rules of :data:`sftlab.augment.hygiene.HYGIENE_RULES` (or ``all``) that drop, and
    count, conversations not worth learning from. ``preserve_content``: transforms keep code, URLs,
    identifiers, formulas, links and headings intact, or are skipped and counted. ``phrasing``:
    ``v1`` words each instruction after the request in one of three or four ways; ``v2`` draws from
    eight or more phrasings per type, terse or polite, placed before or after the request or in a
    system message, several constraints sometimes as a numbered list. ``own_types``: sftlab's own
    constraint types (``sftlab:*``, with sftlab's checkers) join the default pool (naming them in
    ``types`` works either way). ``binding``: relabelled thresholds that constrain, counts on the
    reply without other instructions' additions, two genuinely different responses, titles that name
    the subject, endings and postscripts that fit the reply.
    """

    types: list[str] | None = None
    holdout_types: list[str] = field(default_factory=list)
    max_instructions: int = 3
    ratio: float = 1.0
    type_weights: dict[str, float] | None = None
    seed: int = 0
    ngram: int = 8
    decontaminate: bool = True
    ifeval_data: str | None = None
    ifbench_data: str | None = None
    replies: str = "dataset"
    reply_max_new_tokens: int = 256
    strip_openers: bool = False
    hygiene: list[str] = field(default_factory=list)
    preserve_content: bool = False
    phrasing: str = "v1"
    own_types: bool = False
    binding: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.types, str):
            self.types = [t for t in self.types.split(",") if t.strip()]
        if isinstance(self.holdout_types, str):
            self.holdout_types = [t for t in self.holdout_types.split(",") if t.strip()]
        self.holdout_types = list(self.holdout_types or [])
        if not isinstance(self.max_instructions, int) or self.max_instructions not in INSTRUCTION_COUNTS:
            *most, last = INSTRUCTION_COUNTS
            raise ConfigError(f"augment max_instructions must be {', '.join(map(str, most))} or {last}, "
                              f"got {self.max_instructions!r}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, int | float) or not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"augment ratio must be a number from 0 to 1 (fraction augmented), got {self.ratio!r}")
        if not isinstance(self.ngram, int) or isinstance(self.ngram, bool) or self.ngram < 3:
            raise ConfigError(f"augment ngram must be an integer of at least 3, got {self.ngram!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"augment seed must be an integer, got {self.seed!r}")
        for flag in ("strip_openers", "preserve_content", "own_types", "binding"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"augment {flag} must be true or false, got {getattr(self, flag)!r}")
        self.hygiene = resolve_hygiene(self.hygiene)
        check_choice("augment phrasing", self.phrasing, PHRASINGS)
        check_choice("augment replies", self.replies, REPLY_SOURCES)
        check_reply_max_new_tokens(self.reply_max_new_tokens)
        # Validate names now: a typo must fail before any work is done.
        self.active_types()
        self.draw_weights()

    @property
    def self_distills(self) -> bool:
        """Whether the model being fine-tuned answers the prompts itself first (``replies: model``)."""
        return self.replies == "model"

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None) -> AugmentConfig:
        """Build from a config file's ``augment:`` mapping; unknown keys are one-line errors."""
        if block is None:
            return cls()
        if not isinstance(block, dict):
            raise ConfigError(f"augment must be a mapping of settings, got {type(block).__name__}")
        valid = [f for f in cls.__dataclass_fields__]
        for key in block:
            if key not in valid:
                raise ConfigError(f"unknown augment key '{key}'{suggest(str(key), valid)}")
        return cls(**block)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for cache keys and stats); includes :data:`AUGMENT_VERSION`.

        Issue #24's switches appear only when set, so a config that leaves them off keeps the cache
        key (and stats) it had before they existed: its data is the same.
        """
        d = {**asdict(self), "version": AUGMENT_VERSION}
        for key, default in NEW_SWITCH_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        return d

    @property
    def options(self) -> frozenset[str]:
        """The construction switches an entry reads (``Job.options``): ``preserve_content``, ``binding``."""
        return frozenset(k for k in ("preserve_content", "binding") if getattr(self, k))

    def cache_info(self) -> dict[str, Any]:
        """What identifies the augmented data for a preprocessing cache key: the settings, the
        catalogue version, and the IFEval file's identity (its prompts decide what is dropped)."""
        from pathlib import Path

        from sftlab.utils import file_fingerprint

        info = self.to_dict()
        if self.ifeval_data and Path(self.ifeval_data).expanduser().is_file():
            info["ifeval_file"] = file_fingerprint(Path(self.ifeval_data).expanduser())
        if self.decontaminate and self.ifbench_data and Path(self.ifbench_data).expanduser().is_file():
            info["ifbench_file"] = file_fingerprint(Path(self.ifbench_data).expanduser())
        return info

    def active_types(self) -> list[str]:
        """The instruction ids drawn from: ``types`` (or all) minus ``holdout_types``, catalogue order."""
        default = [*CATALOGUE, *(OWN_CATALOGUE if self.own_types else ())]
        chosen = resolve_types(self.types, what="types") if self.types is not None else default
        held = resolve_types(self.holdout_types, what="holdout_types")
        both = [t for t in chosen if t in held and self.types is not None]
        if both:
            raise ConfigError(f"instruction type '{both[0]}' is in both types and holdout_types")
        out = [t for t in chosen if t not in held]
        if not out and self.ratio > 0:
            raise ConfigError("no instruction types left to augment with (check types and holdout_types)")
        return out

    def draw_weights(self) -> list[float] | None:
        """One weight per :meth:`active_types` id (None when ``type_weights`` is unset: uniform).

        Why multiplicative: ``{transform: 3, no_comma: 2}`` then means what it reads as (no_comma,
        a transform, weighs 6) whatever the order of the keys.
        """
        if self.type_weights is None:
            return None
        if not isinstance(self.type_weights, dict) or not self.type_weights:
            raise ConfigError("augment type_weights must be a mapping of instruction types (or 'transform', "
                              f"'relabel') to positive numbers, got {self.type_weights!r}")
        pool = self.active_types()
        weights = dict.fromkeys(pool, 1.0)
        for name, w in self.type_weights.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < float("inf"):
                raise ConfigError(f"augment type_weights: '{name}' needs a positive number, got {w!r} "
                                  "(to never use a type, put it in holdout_types)")
            hits = ([i for i in ALL_TYPES if ALL_TYPES[i].kind == name] if name in KINDS
                    else resolve_types([name], what="type_weights"))
            for iid in hits:
                if iid in weights:
                    weights[iid] *= float(w)
        return [weights[i] for i in pool]


def check_reply_max_new_tokens(n: Any) -> None:
    """``reply_max_new_tokens`` must be a positive integer: one check for the config and for
    :func:`sftlab.augment.replies.self_distill`, which callers may reach without an :class:`AugmentConfig`."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"augment reply_max_new_tokens must be a positive integer, got {n!r}")


REPLY_SOURCES = ("dataset", "model")
"""``replies``: keep the dataset's replies, or let the model answer the prompts itself (:mod:`sftlab.augment.replies`)."""

NEW_SWITCH_DEFAULTS: dict[str, Any] = {"hygiene": [], "preserve_content": False, "phrasing": "v1",
                                       "own_types": False, "binding": False, "ifbench_data": None}
"""Issue #24's switches and their defaults (off: the data of configs that predate them)."""


def resolve_hygiene(value: Any) -> list[str]:
    """``hygiene`` as a list of rule names: ``all``, a comma list or a list; unknown names are one-line errors."""
    if value is None or value is False:
        return []
    if value is True or value == "all" or value == ["all"]:
        return list(HYGIENE_RULES)
    names = [t.strip() for t in value.split(",") if t.strip()] if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise ConfigError(f"augment hygiene must be 'all' or a list of rules ({', '.join(HYGIENE_RULES)}), "
                          f"got {value!r}")
    for name in names:
        if name not in HYGIENE_RULES:
            raise ConfigError(f"unknown augment hygiene rule '{name}'{suggest(str(name), list(HYGIENE_RULES))} "
                              f"(rules: {', '.join(HYGIENE_RULES)}, or all)")
    return [r for r in HYGIENE_RULES if r in names]

INSTRUCTION_COUNTS = (1, 2, 3)
"""How many instructions one conversation may get: ``max_instructions`` (``sftlab augment --max-instructions``)."""

KINDS = ("transform", "relabel")
"""Names ``type_weights`` accepts besides instruction types: every entry of that kind."""


def resolve_types(names: Iterable[str], *, what: str = "types") -> list[str]:
    """Full instruction ids for ``names`` (full ids, short names after the colon, or categories)."""
    by_short: dict[str, list[str]] = {}
    for iid in ALL_TYPES:
        category, short = iid.split(":", 1)
        by_short.setdefault(short, []).append(iid)
        by_short.setdefault(category, []).append(iid)
    out: list[str] = []
    for raw in names:
        name = str(raw).strip()
        if name in ALL_TYPES:
            hits = [name]
        elif name in by_short:
            hits = by_short[name]
        else:
            hint = f" ({LEFT_OUT[name]})" if name in LEFT_OUT else suggest(name, [*ALL_TYPES, *by_short])
            raise ConfigError(f"unknown instruction type '{name}' in {what}{hint}")
        out.extend(h for h in hits if h not in out)
    return out
