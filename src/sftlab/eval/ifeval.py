"""The IFEval task: lm-evaluation-harness's checkers, made deterministic and official-conformant.

The instruction checkers come from ``lm_eval.tasks.ifeval`` (a maintained copy of Google's
``instruction_following_eval``); nothing is vendored. The per-prompt loop is sftlab's own (:mod:`sftlab.eval.scoring`, shared with
IFBench), written to match the official ``evaluation_lib`` (strict: the response as is; loose: any of eight
variants with the first/last line and ``*`` removed), with two deliberate differences from
``lm_eval.tasks.ifeval.utils``:

1. *kwargs.* lm_eval drops every falsy kwarg (``if v``) before ``build_description``; the official
   scorer passes the input's kwargs as they are. The two agree on the released data, but a
   legitimate ``0`` (``let_frequency: 0``, ``num_highlights: 0``) would silently become a *random*
   threshold in lm_eval. sftlab drops only ``None`` (the padding the hub's ``google/IFEval`` adds
   for unused arguments), which is exactly the official input format.
2. *Randomness.* Two official checkers draw random values while scoring: ``keywords:letter_frequency``
   replaces a non-letter (prompts 1122 and 1129 ask for ``#`` and ``!``) with a random letter, and
   ``langdetect`` samples n-grams at random (``language:response_language``, ``change_case:english_*``).
   Every argument-less ``build_description`` also draws (``random.choice``/``randint``, and
   ``instructions_util.generate_keywords`` via ``random.sample``). sftlab seeds Python's ``random``
   per (prompt, instruction index) and sets ``langdetect.DetectorFactory.seed = 0`` around each
   check, restoring the caller's state afterwards, so the same responses always get the same
   verdicts, independent of order. Strict and loose share one seeded instruction, so loose is
   never below strict (the official scorer draws twice and can disagree with itself).

NLTK's ``punkt_tab`` must be installed locally: ``lm_eval``'s ``instructions_util`` downloads it at
import time otherwise, so :func:`ensure_punkt` checks first and fails with instructions.
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.inputs import load_inputs, read_responses_for_scoring, sample_order, select_inputs
from sftlab.eval.scoring import (
    METRICS,
    RESULT_FIELDS,
    aggregate,
    check_instruction,
    clean_kwargs,
    format_table,
    loose_variants,
    seeded_checkers,
    write_results,
)
from sftlab.eval.scoring import score_responses as _score
from sftlab.eval.task import Task

# The scoring and input helpers are re-exported: callers that score IFEval import them from here.
__all__ = ["IFEVAL_HUB_ID", "METRICS", "RESULT_FIELDS", "TASK", "aggregate", "check_instruction", "clean_kwargs",
           "ensure_punkt", "format_table", "instruction_registry", "load_ifeval_inputs", "loose_variants",
           "read_responses_for_scoring", "sample_order", "score_responses", "seeded_checkers", "select_inputs",
           "write_results"]

IFEVAL_HUB_ID = "google/IFEval"
PUNKT_HINT = (
    "NLTK's punkt_tab tokenizer data is not installed locally, and IFEval scoring needs it; "
    "point NLTK_DATA at a folder that holds tokenizers/punkt_tab (here: ../shared/nltk_data) "
    "or install it once with: python -m nltk.downloader punkt_tab"
)


def ensure_punkt() -> None:
    """Make sure ``punkt_tab`` is found locally *before* lm_eval's ifeval modules are imported."""
    from sftlab.utils import setup_nltk_data

    setup_nltk_data()
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError as e:
        raise SftlabError(PUNKT_HINT) from e


def instruction_registry() -> dict[str, Any]:
    """lm_eval's ``INSTRUCTION_DICT`` (instruction id -> checker class), imported safely."""
    ensure_punkt()
    from lm_eval.tasks.ifeval import instructions_registry

    return instructions_registry.INSTRUCTION_DICT


def scorer_info() -> dict:
    from importlib.metadata import version

    return {
        "checkers": f"lm_eval {version('lm_eval')} (lm_eval.tasks.ifeval)",
        "adjustments": [
            "kwargs: only None values dropped (official input format), not every falsy value as lm_eval does",
            "random draws seeded per (prompt, instruction index); langdetect DetectorFactory.seed = 0",
        ],
    }


TASK = Task(
    name="ifeval", title="IFEval", hub_id=IFEVAL_HUB_ID, headline="prompt_level_strict_acc",
    offline_hint="Offline? Pass the local JSONL with --ifeval-data (e.g. ../shared/ifeval/input_data.jsonl)",
    registry=instruction_registry, ensure_data=ensure_punkt, scorer_info=scorer_info,
)


def load_ifeval_inputs(path_or_id: str) -> list[dict]:
    """IFEval inputs from a JSONL file or the hub (see :func:`sftlab.eval.inputs.load_inputs`)."""
    return load_inputs(TASK, path_or_id)


def score_responses(inputs: list[dict], responses: dict[str, str]) -> dict:
    """Score IFEval ``responses`` (prompt -> response); see :func:`sftlab.eval.scoring.score_responses`."""
    return _score(inputs, responses, instruction_registry(), TASK.title)
