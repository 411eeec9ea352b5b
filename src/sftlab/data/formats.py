"""Record formats: turn one raw record into raw turns, whatever layout it comes in.

``messages`` (OpenAI: a ``messages`` list of ``role``/``content``), ``sharegpt`` (a
``conversations`` list of ``from``/``value``; either turn layout is accepted in both),
``alpaca`` (``instruction``, optional ``input`` appended to the instruction after a blank line,
``output``, optional ``system`` and ``history`` of ``[instruction, output]`` pairs) and
``prompt_completion`` (``prompt`` and ``completion``, each a string or a list of messages, as
TRL's conversational prompt-completion). ``auto`` decides per record: a conversation field, else
``instruction`` + ``output``, else ``prompt`` + ``completion``.

``columns`` maps sftlab's field names to the record's (``{instruction: question}`` reads the
instruction from ``question``); a mapped column missing from a record is a one-line error naming
the file, the record and the column (except for the optional ``input``, ``system``, ``history``
and ``id``, which may be absent). A conversation format reads a mapped ``system`` column
(``columns: {system: sys}``, LLaMA-Factory's ShareGPT ``system`` column) as the conversation's system turn.
"""

from __future__ import annotations

from typing import Any

from sftlab.data.readers import Record
from sftlab.errors import DataError

FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion")
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "prompt_completion": ("prompt", "completion"),
}
"""The sftlab field names each format reads (the keys ``columns`` may map), besides ``id``."""
COLUMN_KEYS = ("id",) + tuple(dict.fromkeys(f for fields in FORMAT_FIELDS.values() for f in fields))


def _error(rec: Record, message: str, field: str | None = None) -> DataError:
    return DataError(rec.path, f"{rec.where()}: {message}", line=rec.line, field=field)


def remap_columns(rec: Record, columns: dict[str, str] | None) -> dict[str, Any]:
    """The record with each mapped column copied under sftlab's name (``{ours: theirs}``)."""
    data = rec.data
    if not isinstance(data, dict):
        raise _error(rec, f"expected an object, got {type(data).__name__}")
    if not columns:
        return data
    out = dict(data)
    for ours, theirs in columns.items():
        if theirs not in data:
            if ours in ("input", "system", "history", "id"):  # optional fields may be absent
                continue
            raise _error(rec, f"missing column '{theirs}' (mapped to {ours})", field=theirs)
        out[ours] = data[theirs]
    return out


def detect_format(data: dict[str, Any], conversation_field: str) -> str | None:
    """The format of one record for ``format: auto``, or ``None`` when nothing fits."""
    if data.get(conversation_field) is not None or data.get("messages") is not None:
        return "conversation"
    if "instruction" in data and "output" in data:
        return "alpaca"
    if "prompt" in data and "completion" in data:
        return "prompt_completion"
    return None


def _text(rec: Record, data: dict, key: str, fmt: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if not required:
            return None
        if key not in data:
            raise _error(rec, f"record has no '{key}' field (format {fmt})", field=key)
        raise _error(rec, f"'{key}' must be a string, got null", field=key)
    if not isinstance(value, str):
        raise _error(rec, f"'{key}' must be a string, got {type(value).__name__}", field=key)
    return value if value or required else None


def alpaca_turns(rec: Record, data: dict) -> list[dict[str, str]]:
    """system?, (user, assistant) per history pair, user (instruction + input), assistant (output)."""
    instruction = _text(rec, data, "instruction", "alpaca", required=True)
    extra = _text(rec, data, "input", "alpaca", required=False)
    output = _text(rec, data, "output", "alpaca", required=True)
    system = _text(rec, data, "system", "alpaca", required=False)
    turns = [{"role": "system", "content": system}] if system else []
    history = data.get("history") or []
    if not isinstance(history, list):
        raise _error(rec, f"'history' must be a list of [instruction, output] pairs, got {type(history).__name__}",
                     field="history")
    for k, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise _error(rec, "each history entry must be a pair of strings", field=f"history[{k}]")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return turns + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _side(rec: Record, data: dict, key: str, role: str) -> list:
    if key not in data or data[key] is None:
        raise _error(rec, f"record has no '{key}' field (format prompt_completion)", field=key)
    value = data[key]
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise _error(rec, f"'{key}' must be a string or a list of messages, got {type(value).__name__}", field=key)


def prompt_completion_turns(rec: Record, data: dict) -> tuple[list, str]:
    """Prompt then completion as one list of raw turns (a string prompt is a user turn, a string
    completion an assistant turn; lists are messages)."""
    return _side(rec, data, "prompt", "user") + _side(rec, data, "completion", "assistant"), "prompt+completion"


def conversation_turns(rec: Record, data: dict, fields: tuple[str, ...]) -> tuple[Any, str]:
    for name in fields:
        if name in data and data[name] is not None:
            return data[name], name
    wanted = " or ".join(f"'{f}'" for f in fields)
    if isinstance(data.get("text"), str):  # TRL's language-modelling records: say why, not just what
        raise _error(rec, f"record has no {wanted} field but a plain 'text': sftlab trains on conversations "
                     "(messages, sharegpt, alpaca or prompt/completion records), not on plain text "
                     "(no continued pre-training)", field=fields[0])
    raise _error(rec, f"record has no {wanted} field", field=fields[0])


def with_system_column(rec: Record, data: dict, turns: Any, columns: dict[str, str] | None) -> Any:
    """A conversation's turns with the record's mapped ``system`` column as its first turn (LLaMA-Factory's
    ShareGPT ``system`` column), unless the conversation already starts with a system turn."""
    if not columns or "system" not in columns or not isinstance(turns, list):
        return turns
    system = _text(rec, data, "system", "sharegpt", required=False)
    if not system:
        return turns
    first = turns[0] if turns and isinstance(turns[0], dict) else {}
    if str(first.get("role", first.get("from", ""))).lower() == "system":
        return turns
    key = ("from", "value") if "from" in first else ("role", "content")
    return [{key[0]: "system", key[1]: system}, *turns]


def record_turns(rec: Record, fmt: str, conversation_field: str, columns: dict[str, str] | None = None
                 ) -> tuple[Any, str]:
    """``(raw turns, field they came from)`` for one record; turns are validated by ``parse_turns``."""
    data = remap_columns(rec, columns)
    if fmt == "auto":
        fmt = detect_format(data, conversation_field) or "conversation"
    if fmt == "alpaca":
        return alpaca_turns(rec, data), "instruction/output"
    if fmt == "prompt_completion":
        return prompt_completion_turns(rec, data)
    if fmt == "messages":
        fields: tuple[str, ...] = ("messages",)
    elif fmt == "sharegpt":
        fields = (conversation_field,) if conversation_field == "conversations" else (conversation_field, "conversations")
    else:
        fields = (conversation_field,) if conversation_field == "messages" else (conversation_field, "messages")
    turns, name = conversation_turns(rec, data, fields)
    return with_system_column(rec, data, turns, columns), name
