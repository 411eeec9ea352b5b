"""Batching: pad unpadded features to a common length for training.

Padding every example to ``max_length`` wastes compute on pad tokens; padding each batch only
to its longest sequence (optionally rounded up to a multiple of 8 for tensor-core friendly
shapes) does not change the loss, since pad positions carry label -100 and attention 0.
Padding is on the right: positions of real tokens then start at 0 for every example, which is
what causal-LM training expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sftlab.errors import ConfigError

IGNORE_INDEX = -100
PADDINGS = ("longest", "max_length")


@dataclass
class SFTDataCollator:
    """``collator(list_of_features) -> {"input_ids", "labels", "attention_mask"}`` as LongTensors.

    ``padding="longest"`` pads to the longest example of the batch (rounded up to
    ``pad_to_multiple_of``); ``"max_length"`` pads every batch to ``max_length``. Examples longer
    than ``max_length`` (when given) are cut on the right. Other keys (``id``...) are ignored;
    a missing ``attention_mask`` counts every token as real and missing ``labels`` train on all.
    """

    pad_token_id: int
    padding: str = "longest"
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ConfigError(f"padding must be 'longest' or 'max_length', got '{self.padding}'")
        if self.padding == "max_length" and not self.max_length:
            raise ConfigError("padding='max_length' needs max_length")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"max_length must be positive, got {self.max_length}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be positive, got {self.pad_to_multiple_of}")

    def target_length(self, lengths: Sequence[int]) -> int:
        """The padded length for a batch whose examples have these lengths."""
        if self.padding == "max_length":
            return int(self.max_length)  # type: ignore[arg-type]
        n = max(lengths) if lengths else 0
        if self.max_length is not None:
            n = min(n, self.max_length)
        m = self.pad_to_multiple_of
        if m and n % m:
            n += m - n % m
        return n

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("cannot collate an empty batch")
        rows = []
        for f in features:
            ids = _as_list(f["input_ids"])
            labels = _as_list(f["labels"]) if f.get("labels") is not None else list(ids)
            attn = _as_list(f["attention_mask"]) if f.get("attention_mask") is not None else [1] * len(ids)
            if not (len(ids) == len(labels) == len(attn)):
                raise ValueError(
                    f"feature lengths differ: input_ids {len(ids)}, labels {len(labels)}, attention_mask {len(attn)}"
                )
            if self.max_length is not None and len(ids) > self.max_length:
                ids, labels, attn = ids[: self.max_length], labels[: self.max_length], attn[: self.max_length]
            rows.append((ids, labels, attn))
        length = self.target_length([len(r[0]) for r in rows])
        batch = {
            "input_ids": torch.full((len(rows), length), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
        }
        for i, (ids, labels, attn) in enumerate(rows):
            n = len(ids)
            batch["input_ids"][i, :n] = torch.as_tensor(ids, dtype=torch.long)
            batch["labels"][i, :n] = torch.as_tensor(labels, dtype=torch.long)
            batch["attention_mask"][i, :n] = torch.as_tensor(attn, dtype=torch.long)
        return batch


def _as_list(x: Any) -> list[int]:
    if hasattr(x, "tolist"):
        return list(x.tolist())
    return list(x)
