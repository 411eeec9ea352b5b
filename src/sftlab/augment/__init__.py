"""Verifiable instruction augmentation: add IFEval-style constraints to real prompts, with replies that satisfy them.

Why: fine-tuning a small instruct model on plain ShareGPT rounds makes IFEval *worse*; public recipes
that lift it (Tulu 3's verifiable constraints, SmolTalk's smol-constraints, AutoIF) add checkable format
instructions to ordinary prompts and train on replies that provably follow them. sftlab already holds
the verifiers (the IFEval checkers it scores with), so it can build such data offline, on a CPU, with
no model in the loop.

How: for each chosen conversation, the last user turn gains one to three instructions (IFEval's own
instruction ids and kwargs) and the final assistant reply is made to satisfy them, in one of two
exact ways:

* **relabelling in hindsight** (``relabel`` entries): the reply is left alone and the instruction's
  parameters are read off it with the checkers' own counters (word and sentence counts with a true
  relation, keywords that occur, words that do not, letter counts, the detected language, ...);
* **deterministic transforms** (``transform`` entries): the reply is rewritten mechanically
  (lowercase, no commas, quotation marks, a postscript, ``<<title>>``, JSON, ``SECTION X`` blocks,
  bullets, ``***`` paragraphs, ...).

Transforms run in a fixed ``stage`` order chosen so that later steps keep earlier instructions
satisfied (e.g. the ending phrase after the postscript, case changes after both, quotation marks
last), relabels run after every transform, and pairs that IFEval itself never combines
(``lm_eval``'s ``INSTRUCTION_CONFLICTS``, plus a few this module's transforms cannot serve together)
are never drawn together. Whatever the construction, every emitted example is re-checked with
:func:`sftlab.ifeval.check_instruction`, the very function ``sftlab eval`` scores with (seeded
checkers, kwargs as given), in strict mode; an example that fails is dropped and counted, so
nothing unverified is ever written.

Decontamination: a conversation whose user (or system) text shares an ``ngram``-word sequence
(default 8, as Tulu 3) with any IFEval prompt is dropped, and so is an augmented prompt whose added
wording would; words are lowercased and punctuation is ignored.

Everything is a pure function of (conversations, config): each conversation draws from its own
``random.Random`` seeded by ``(seed, index)``, so the same seed gives byte-identical output.

Layout (one job per module; imports only point down this list, so there is no cycle):

* :mod:`~sftlab.augment.pipeline`: ``augment_one``, ``augment_conversations``, ``augment_loaded``,
  ``records_to_jsonl``, verification;
* :mod:`~sftlab.augment.config`: ``AugmentConfig``, instruction-type name resolution;
* :mod:`~sftlab.augment.decontaminate`: n-gram overlap with IFEval prompts;
* :mod:`~sftlab.augment.stats`: ``AugmentStats`` and the drop reasons;
* :mod:`~sftlab.augment.catalogue`: ``CATALOGUE``, ``LEFT_OUT``, phrasings, conflicts;
* :mod:`~sftlab.augment.relabel`: relabelling entries (keywords, counts, language);
* :mod:`~sftlab.augment.transforms`: transform entries (case and punctuation, start and end, structure);
* :mod:`~sftlab.augment.text`: word, paragraph, code and language helpers, true thresholds;
* :mod:`~sftlab.augment.entry`: ``Job``, ``Result``, ``Skip``, ``Entry`` (the contract of an entry).

Underscore names are private to the package: sibling modules share them, callers outside use the
names re-exported here. Sibling modules import each other by full module path
(``sftlab.augment.text``), never through this package.
"""

from sftlab.augment.catalogue import CATALOGUE, EXTRA_CONFLICTS, LEFT_OUT, conflicts
from sftlab.augment.config import AUGMENT_VERSION, AugmentConfig, resolve_types
from sftlab.augment.decontaminate import Decontaminator, load_ifeval_prompts, ngrams
from sftlab.augment.entry import Entry, Job, Result, Skip
from sftlab.augment.pipeline import (
    MAX_ATTEMPTS,
    augment_conversations,
    augment_loaded,
    augment_one,
    records_to_jsonl,
    verify,
)
from sftlab.augment.stats import (
    DROP_EMPTY,
    DROP_EMPTY_PROMPT,
    DROP_FAILED_CHECK,
    DROP_OVERLAP,
    DROP_PARTNER,
    AugmentStats,
)
from sftlab.augment.text import detect_language, has_code, paragraphs, true_threshold, words_of
from sftlab.augment.transforms import MAX_REPEAT_PROMPT_CHARS, title_for

__all__ = [
    "AUGMENT_VERSION", "CATALOGUE", "DROP_EMPTY", "DROP_EMPTY_PROMPT", "DROP_FAILED_CHECK", "DROP_OVERLAP",
    "DROP_PARTNER", "EXTRA_CONFLICTS", "LEFT_OUT", "MAX_ATTEMPTS", "MAX_REPEAT_PROMPT_CHARS",
    "AugmentConfig", "AugmentStats", "Decontaminator", "Entry", "Job", "Result", "Skip",
    "augment_conversations", "augment_loaded", "augment_one", "conflicts", "detect_language", "has_code",
    "load_ifeval_prompts", "ngrams", "paragraphs", "records_to_jsonl", "resolve_types", "title_for",
    "true_threshold", "verify", "words_of",
]
