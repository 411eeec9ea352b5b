"""sftlab: supervised fine-tuning of small chat models, correctly and measurably.

The package follows the data's path, one module a stage:
data -> masking -> collate -> loss -> train -> generate -> ifeval -> sweep -> report,
with ``cli`` on top and ``bench`` beside. ``models`` resolves model specs (hub ids, local
directories, GGUF files and the offline alias) for both training and evaluation.
"""

__version__ = "0.1.0"
