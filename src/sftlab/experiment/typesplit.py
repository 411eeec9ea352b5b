"""Which IFEval instruction types a fine-tuned model was trained on, from its training config.

Why: a gain on the types the training data carried says little about transfer; the report and
``sftlab compare`` split per-type results into trained, held-out and other types with this one
function, so both read a config's ``augment:`` block the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.augment.config import AugmentConfig, resolve_types
from sftlab.errors import SftlabError
from sftlab.layout import TRAIN_CONFIG, TrainDir
from sftlab.train.config import read_config_file

TRAINED = "trained"
HELD_OUT = "held-out"
OTHER = "other"
#: The groups in the order tables show them.
GROUPS = (TRAINED, HELD_OUT, OTHER)


@dataclass(frozen=True)
class TypeSplit:
    """Instruction ids drawn from in training (``trained``) and kept out on purpose (``held_out``).

    Every other id is ``other``: not in training because ``types`` restricted the draw.
    """

    trained: tuple[str, ...]
    held_out: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        return GROUPS

    def group_of(self, instruction_id: str) -> str:
        if instruction_id in self.trained:
            return TRAINED
        return HELD_OUT if instruction_id in self.held_out else OTHER


@dataclass(frozen=True)
class CategorySplit:
    """Instruction types grouped by category (the id up to the colon), in the benchmark's order.

    Why not trained/held-out: sftlab's augmentation draws IFEval's types only, so on IFBench every
    type is held out; what a reader wants there is which *kind* of constraint moved.
    """

    categories: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        return (*self.categories, OTHER)

    def group_of(self, instruction_id: str) -> str:
        category = instruction_id.split(":", 1)[0]
        return category if category in self.categories else OTHER


def type_split(source: str | Path | Mapping[str, Any] | None) -> TypeSplit | None:
    """The split for a training output dir or its resolved config mapping; None without an ``augment:`` block.

    A directory without ``sftlab_config.yaml`` is not a training output: a one-line error.
    """
    if source is None:
        return None
    if isinstance(source, Mapping):
        config: Mapping[str, Any] = source
    else:
        td = TrainDir(Path(source))
        if not td.config.is_file():
            raise SftlabError(f"{td.root} is not an 'sftlab train' output (no {TRAIN_CONFIG})")
        config = read_config_file(td.config, "resolved training config")
    block = config.get("augment")
    if block is None:
        return None
    cfg = AugmentConfig.from_dict(dict(block) if isinstance(block, Mapping) else block)
    return TypeSplit(trained=tuple(cfg.active_types()),
                     held_out=tuple(resolve_types(cfg.holdout_types, what="holdout_types")))
