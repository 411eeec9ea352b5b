"""Batching: pad unpadded features to a common length, group by length, or pack.

Padding every example to ``max_length`` wastes compute on pad tokens; padding each batch only
to its longest sequence (optionally rounded up to a multiple of 8 for tensor-core friendly
shapes) does not change the loss, since pad positions carry label -100 and attention 0.
Padding is on the right: positions of real tokens then start at 0 for every example, which is
what causal-LM training expects. Length grouping (:func:`length_grouped_indices`) makes the
members of a batch similar in length so little is padded; packing (:func:`pack_examples`,
:class:`PackedCollator`) fills rows with several conversations so almost nothing is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sftlab.errors import ConfigError, check_choice
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.train.choices import PADDINGS


@dataclass
class SFTDataCollator:
    """``collator(list_of_features) -> {"input_ids", "labels", "attention_mask"}`` as LongTensors.

    ``padding="longest"`` pads to the longest example of the batch (rounded up to
    ``pad_to_multiple_of``); ``"max_length"`` pads every batch to ``max_length``. Examples longer
    than ``max_length`` (when given) are cut on the right. Other keys (``id``...) are ignored;
    a missing ``attention_mask`` counts every token as real and missing ``labels`` train on all.
    When some example has ``weights`` (per-token loss weights, see :mod:`sftlab.train.loss`), the batch
    gets a float ``weights`` tensor, padded with 0.0; examples without them weigh 1.0 per target.
    """

    pad_token_id: int
    padding: str = "longest"
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        check_choice("padding", self.padding, PADDINGS)
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
            weights = _weights_of(f, labels)
            if self.max_length is not None and len(ids) > self.max_length:
                ids, labels, attn = ids[: self.max_length], labels[: self.max_length], attn[: self.max_length]
                weights = weights[: self.max_length]
            rows.append((ids, labels, attn, weights))
        length = self.target_length([len(r[0]) for r in rows])
        batch = {
            "input_ids": torch.full((len(rows), length), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
        }
        weighted = any(f.get("weights") is not None for f in features)
        if weighted:
            batch["weights"] = torch.zeros((len(rows), length), dtype=torch.float32)
        for i, (ids, labels, attn, weights) in enumerate(rows):
            n = min(len(ids), length)
            batch["input_ids"][i, :n] = torch.as_tensor(ids[:n], dtype=torch.long)
            batch["labels"][i, :n] = torch.as_tensor(labels[:n], dtype=torch.long)
            batch["attention_mask"][i, :n] = torch.as_tensor(attn[:n], dtype=torch.long)
            if weighted:
                batch["weights"][i, :n] = torch.as_tensor(weights[:n], dtype=torch.float32)
        return batch


def _weights_of(f: dict[str, Any], labels: list[int]) -> list[float]:
    """An example's per-token weights: its ``weights``, else 1.0 on its targets and 0.0 elsewhere."""
    if f.get("weights") is not None:
        weights = [float(w) for w in _as_list(f["weights"])]
        if len(weights) != len(labels):
            raise ValueError(f"feature lengths differ: labels {len(labels)}, weights {len(weights)}")
        return weights
    return [0.0 if lab == IGNORE_INDEX else 1.0 for lab in labels]


def _as_list(x: Any) -> list[int]:
    if hasattr(x, "tolist"):
        return list(x.tolist())
    return list(x)


# --------------------------------------------------------------------------------------------------
# Length grouping and packing
# --------------------------------------------------------------------------------------------------


def length_grouped_indices(lengths: list[int], batch_size: int, seed: int, epoch: int, mega: int = 50) -> list[int]:
    """A permutation whose consecutive ``batch_size`` runs have similar lengths, seeded by (seed, epoch).

    Shuffle, cut into mega-batches of ``mega * batch_size``, sort each by length (longest first), cut
    into batches, then shuffle the order of the batches: padding stays low while every epoch (and
    every rank, and a resumed process) sees the same random order for the same seed.
    """
    import torch

    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    n = len(lengths)
    perm = torch.randperm(n, generator=g).tolist()
    size = max(1, mega * batch_size)
    batches: list[list[int]] = []
    for start in range(0, n, size):
        chunk = sorted(perm[start:start + size], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=g).tolist()
    return [i for b in order for i in batches[b]]


def pack_examples(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Pack tokenised conversations into rows of at most ``max_length`` tokens (first-fit decreasing).

    Each row carries ``position_ids`` that restart at 0 for every conversation; with no attention mask
    transformers derives a block-diagonal causal mask from those resets, so packed conversations never
    attend to each other. The first label of every conversation is set to -100: in a packed row it
    would be the target of the *previous* conversation's last token.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    weighted = any(ex.get("weights") is not None for ex in examples)  # then every row carries weights
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        if n == 0:
            continue
        for b, room in enumerate(free):
            if room >= n:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(max_length - n)
    rows = []
    for members in bins:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        weights: list[float] = []
        for i in members:
            ex = examples[i]
            lab = list(ex["labels"])
            lab[0] = IGNORE_INDEX
            ids.extend(ex["input_ids"])
            labels.extend(lab)
            pos.extend(range(len(ex["input_ids"])))
            weights.extend(_weights_of(ex, lab) if weighted else ())
        rows.append({"input_ids": ids, "labels": labels, "position_ids": pos, **({"weights": weights} if weighted else {})})
    return rows


@dataclass
class PackedCollator:
    """Pads packed rows to the longest; no attention mask, so the position resets define the attention.

    Padding gets its own position run (0, 1, ...) and ``-100`` labels: it forms a separate block that
    nothing real attends to. ``num_real_tokens`` is taken out by the trainer before the forward pass.
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, pos, weights = [], [], [], []
        weighted = any(f.get("weights") is not None for f in features)
        real = 0
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            real += n
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            pos.append(list(f["position_ids"]) + list(range(pad)))
            if weighted:
                weights.append(_weights_of(f, list(f["labels"])) + [0.0] * pad)
        out = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(pos, dtype=torch.long),
            "num_real_tokens": torch.tensor(real, dtype=torch.long),
        }
        if weighted:
            out["weights"] = torch.tensor(weights, dtype=torch.float32)
        return out
