"""The IFBench task: AllenAI's out-of-distribution instruction-following benchmark, scored officially.

IFBench (Pyatkin et al., "Generalizing Verifiable Instruction Following", NeurIPS 2025) pairs held-out
WildChat prompts with 58 verifiable constraint types that are *not* IFEval's (word-count ranges,
stop-word ratios, palindromes, sub-bullets, ...). Its inputs have IFEval's format; its data is ODC-BY-1.0
(attribution: Allen Institute for AI). The paper's headline is prompt-level **loose** accuracy.

The checkers are the official ones, from the ``if-verifiable`` package
(``if_verifiable.ifbench.instructions_registry.INSTRUCTION_DICT``); nothing is vendored. The
per-prompt loop is the one IFEval shares (:mod:`sftlab.eval.scoring`), which is the official
``evaluation_lib`` loop that ``if_verifiable.common.evaluate_instructions`` also runs: kwargs with
``None`` dropped (the released file lists every possible argument, mostly null; ``n_start: 0`` is a
real value and stays), the prompt passed to checkers that ask for it, strict on the response as it
is, loose on any of the same eight variants. Differences from ``evaluate_instructions``: sftlab does
not strip ``<think>`` blocks (the official scorer does not either), and it seeds the random draws
that argument-less ``build_description`` calls make (``random.randint``/``choice``), per (prompt,
instruction index), so verdicts never depend on order or on the run.

NLTK: ``words:start_verb`` needs ``taggers/averaged_perceptron_tagger_eng``, ``ratio:stop_words``
needs ``corpora/stopwords``, several checkers ``tokenizers/punkt_tab``. ``if_verifiable``'s utilities
call ``nltk.download`` at import time for whatever is missing (also for the old ``punkt`` pickle no
checker uses); sftlab checks the three first and imports with downloading switched off.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.task import Task

IFBENCH_HUB_ID = "allenai/IFBench_test"
#: IFBench's constraint categories (the instruction id prefixes), in the order tables show them.
CATEGORIES = ("count", "format", "ratio", "repeat", "sentence", "words", "custom")
#: (NLTK resource path, package name) the IFBench checkers need locally.
NLTK_RESOURCES = (
    ("tokenizers/punkt_tab", "punkt_tab"),
    ("corpora/stopwords", "stopwords"),
    ("taggers/averaged_perceptron_tagger_eng", "averaged_perceptron_tagger_eng"),
)


def ensure_nltk_data() -> None:
    """Every NLTK package the IFBench checkers need is installed locally; else a one-line error, no download."""
    from sftlab.utils import setup_nltk_data

    setup_nltk_data()
    import nltk

    for resource, package in NLTK_RESOURCES:
        try:
            nltk.data.find(resource)
        except LookupError:
            raise SftlabError(
                f"NLTK's {package} data ({resource}) is not installed locally, and IFBench scoring needs it; "
                f"looked in: {', '.join(map(str, nltk.data.path))}; point NLTK_DATA at a folder that holds it "
                f"(here: ../shared/nltk_data) or install it once with: python -m nltk.downloader {package}"
            ) from None


@contextmanager
def _no_downloads():
    """``nltk.download`` as a no-op while if_verifiable's utilities import (they call it for missing data)."""
    import nltk

    real = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = real


def instruction_registry() -> dict[str, Any]:
    """if_verifiable's IFBench ``INSTRUCTION_DICT`` (instruction id -> checker class), imported safely."""
    ensure_nltk_data()
    with _no_downloads():
        from if_verifiable.ifbench import instructions_registry

    return instructions_registry.INSTRUCTION_DICT


def scorer_info() -> dict:
    from importlib.metadata import version

    return {
        "checkers": f"if-verifiable {version('if-verifiable')} (if_verifiable.ifbench)",
        "adjustments": [
            "random draws of argument-less build_description calls seeded per (prompt, instruction index)",
        ],
    }


TASK = Task(
    name="ifbench", title="IFBench", hub_id=IFBENCH_HUB_ID, headline="prompt_level_loose_acc",
    offline_hint="Offline? Pass the local JSONL with --data (e.g. ../shared/ifbench/IFBench_test.jsonl)",
    registry=instruction_registry, ensure_data=ensure_nltk_data, scorer_info=scorer_info,
    unmatched_is_error=False, categories=CATEGORIES,
)
