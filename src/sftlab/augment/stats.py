"""Statistics of an augmentation run: per type attempted/emitted/dropped by reason, per conversation outcome.

Why: every instruction that was not emitted is counted with its reason (the ``DROP_*`` keys or an
entry's :class:`~sftlab.augment.entry.Skip` reason), so the printed summary and the stats file show
what the catalogue yields on real data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Why an instruction was not emitted (stats["types"][id]["dropped"] keys).
DROP_EMPTY = "empty reply"
DROP_EMPTY_PROMPT = "empty prompt"
DROP_FAILED_CHECK = "failed the IFEval checker"
DROP_PARTNER = "another instruction of the example failed"
DROP_OVERLAP = "instruction wording overlaps an IFEval prompt"


def decontaminated_against(description: str | None) -> str:
    """The benchmarks a ``decontamination`` description names (``8-gram overlap with 541 IFEval and 300
    IFBench prompts`` -> ``IFEval and IFBench``); IFEval for records written before IFBench was added."""
    names = [n for n in ("IFEval", "IFBench") if n in (description or "")]
    return " and ".join(names or ["IFEval"])


def describe_hygiene(counts: dict[str, int]) -> str:
    """``cut_off 12 (reply cut off mid-sentence), ...``: each rule's count with its reason, largest first."""
    from sftlab.augment.hygiene import REASONS

    return ", ".join(f"{rule} {n} ({REASONS.get(rule, rule)})"
                     for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class AugmentStats:
    """What happened: per type attempted/emitted/dropped by reason, and per conversation outcome."""

    conversations_in: int = 0
    decontaminated: int = 0
    decontamination: str = "off"
    chosen_plain: int = 0
    augmented: int = 0
    kept_plain_after_failure: int = 0
    written: int = 0
    openers_stripped: int = 0
    hygiene: dict[str, int] = field(default_factory=dict)  # conversations dropped per hygiene rule
    instructions_per_example: dict[int, int] = field(default_factory=dict)
    types: dict[str, dict[str, Any]] = field(default_factory=dict)

    def type_row(self, iid: str) -> dict[str, Any]:
        return self.types.setdefault(iid, {"attempted": 0, "emitted": 0, "dropped": {}})

    def drop(self, iid: str, reason: str) -> None:
        row = self.type_row(iid)
        row["dropped"][reason] = row["dropped"].get(reason, 0) + 1

    def hygiene_drop(self, rule: str) -> None:
        self.hygiene[rule] = self.hygiene.get(rule, 0) + 1

    @property
    def hygiene_dropped(self) -> int:
        return sum(self.hygiene.values())

    @property
    def plain(self) -> int:
        return self.chosen_plain + self.kept_plain_after_failure

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plain"] = self.plain
        if self.hygiene:  # absent when nothing was dropped: the stats of runs without hygiene read as before
            d["hygiene"] = dict(sorted(self.hygiene.items(), key=lambda kv: (-kv[1], kv[0])))
            d["hygiene_dropped"] = self.hygiene_dropped
        else:
            del d["hygiene"]
        d["instructions_per_example"] = {str(k): v for k, v in sorted(self.instructions_per_example.items())}
        d["types"] = {k: {**v, "dropped": dict(sorted(v["dropped"].items(), key=lambda kv: -kv[1]))}
                      for k, v in sorted(self.types.items())}
        return d

    def format(self) -> str:
        """The printed summary: conversation counts, then one row per type."""
        lines = [
            f"conversations: {self.conversations_in} in, {self.decontaminated} dropped by decontamination "
            f"({self.decontamination}), "
            + (f"{self.hygiene_dropped} by hygiene, " if self.hygiene else "")
            + f"{self.written} written: {self.augmented} augmented, {self.plain} plain "
            f"({self.chosen_plain} by the ratio, {self.kept_plain_after_failure} after every attempt failed)",
            *([f"chatty openings removed from replies: {self.openers_stripped}"] if self.openers_stripped else []),
            *([f"dropped by hygiene: {describe_hygiene(self.hygiene)}"] if self.hygiene else []),
            "instructions per augmented example: " + (", ".join(
                f"{k}: {v}" for k, v in sorted(self.instructions_per_example.items())) or "none"),
            "",
            f"{'instruction type':<46}{'attempted':>10}{'emitted':>9}  dropped by reason",
        ]
        for iid, row in sorted(self.types.items()):
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(row["dropped"].items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(f"{iid:<46}{row['attempted']:>10}{row['emitted']:>9}  {reasons or '-'}")
        return "\n".join(lines)
