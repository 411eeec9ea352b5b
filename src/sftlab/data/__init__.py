"""Conversation data: read sources, convert record formats, normalise roles and turns, mix specs.

The package is split by job; every public name is importable from ``sftlab.data``:

* :mod:`sftlab.data.readers`: files (JSON, JSONL, Parquet, CSV), directories, the hub, ShareGPT.
* :mod:`sftlab.data.formats`: messages, sharegpt, alpaca, prompt_completion records -> turns.
* :mod:`sftlab.data.normalize`: roles (tool turns included) and the normalised shape.
* :mod:`sftlab.data.loading`: one source -> :class:`LoadResult`, with skips counted.
* :mod:`sftlab.data.specs`: ``data:`` / ``eval_data:`` values -> :class:`DataSpec`.
* :mod:`sftlab.data.mixture`: several specs -> one seeded mix (:func:`load_mixture`).
"""

from sftlab.data.formats import COLUMN_KEYS, FORMATS, detect_format, record_turns
from sftlab.data.loading import LoadResult, format_skips, load_source
from sftlab.data.mixture import load_conversations, load_mixture, mix_quotas
from sftlab.data.normalize import (
    DROP_LATE_SYSTEM,
    DROP_LEADING,
    DROP_MAX_ROUNDS,
    DROP_ORPHAN_ASSISTANT,
    DROP_ORPHAN_TOOL,
    DROP_REPLACED_USER,
    DROP_TOOL_NO_REPLY,
    ROLE_ALIASES,
    SKIP_NO_ROUND,
    SKIP_UNKNOWN_ROLES,
    conversation_shape,
    fit_to_template,
    fold_tool_turns,
    map_role,
    normalize_messages,
    normalize_turns,
    parse_turns,
    template_has_tool_role,
    with_system_prompt,
)
from sftlab.data.readers import (
    DATA_SUFFIXES,
    SHAREGPT_NAME,
    data_files,
    iter_json_array_items,
    iter_jsonl,
    iter_records,
    load_hub_split,
)
from sftlab.data.specs import DataSpec, describe_data, parse_data_specs, source_fingerprint, specs_fingerprint

__all__ = [
    "COLUMN_KEYS", "DATA_SUFFIXES", "DROP_LATE_SYSTEM", "DROP_LEADING", "DROP_MAX_ROUNDS", "DROP_ORPHAN_ASSISTANT",
    "DROP_ORPHAN_TOOL", "DROP_REPLACED_USER", "DROP_TOOL_NO_REPLY", "FORMATS", "ROLE_ALIASES", "SHAREGPT_NAME",
    "SKIP_NO_ROUND", "SKIP_UNKNOWN_ROLES", "DataSpec", "LoadResult", "conversation_shape", "data_files",
    "detect_format", "fit_to_template", "fold_tool_turns", "format_skips", "iter_json_array_items", "iter_jsonl",
    "iter_records", "load_conversations", "load_hub_split", "load_mixture", "load_source", "map_role",
    "mix_quotas", "normalize_messages", "normalize_turns", "parse_data_specs", "parse_turns", "record_turns",
    "source_fingerprint", "specs_fingerprint", "template_has_tool_role", "with_system_prompt", "describe_data",
]
