"""The choice sets of preprocessing, each in one place: masking strategies, truncation, masking methods.

They live apart from :mod:`sftlab.prep.masking` and :mod:`sftlab.prep.pipeline` so that the command
line can offer them as ``choices`` without importing the data layer at start-up. Configs check them
with :func:`sftlab.errors.check_choice`, which words every such error the same way.
"""

from __future__ import annotations

#: ``assistant``: every assistant message; ``reverse``: the user messages (see
#: :func:`sftlab.prep.masking.apply_strategy`); ``last_assistant``: only the final assistant message.
MASKING_STRATEGIES = ("assistant", "reverse", "last_assistant")
#: What preprocessing does with a conversation longer than ``max_length``: cut it on one side, drop
#: it (counted), or drop it only when augmentation gave it instructions and cut the plain ones on the right.
TRUNCATIONS = ("right", "left", "drop", "drop_augmented")
#: The sides :func:`sftlab.prep.masking.encode_conversation` can cut a long conversation on (the
#: ``drop`` choices of :data:`TRUNCATIONS` are the pipeline's, decided before encoding).
CUT_SIDES = ("right", "left")
#: Masking implementations: ``fast`` (one tokenisation) and ``prefix``, the reference; same output.
MASKING_METHODS = ("fast", "prefix")
