"""The choice sets of training, each in one place: the loss implementation and the batch padding.

Kept in a module with no imports so that the config reader, the collator and the loss (which
imports torch) can all name them without pulling each other in.
"""

from __future__ import annotations

#: ``reference``: logits for the whole batch, then cross-entropy; ``chunked``: the same loss a chunk of
#: positions at a time, without the full logits tensor (see :mod:`sftlab.train.loss`).
LOSSES = ("reference", "chunked")
#: ``longest``: pad each batch to its longest example; ``max_length``: every batch to ``max_length``.
PADDINGS = ("longest", "max_length")
