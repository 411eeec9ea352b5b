"""Load one source: read its records, turn each into messages, validate and normalise them.

Two kinds of problems are kept apart on purpose:

* *Malformed input* (a file that is not JSON, a JSONL line that does not parse, undecodable
  bytes, an empty or missing file, a conversation that is not a list, a turn without a role
  or with non-string content, a mapped column that is missing) means the file is not what the
  user thinks it is. It raises :class:`~sftlab.errors.DataError` naming the file, the line
  (JSONL) and the field; guessing around a broken file would train on something nobody asked for.
* *Unusable records* in a well-formed file (no complete user -> assistant round, only
  unknown speakers) are skipped and counted by reason. ``strict=True`` turns each skip into
  an error instead.

Unknown roles (ShareGPT has a few ``bing``, ``bard`` and ``chatgpt`` turns): like the reference
pipeline we drop turns whose role we cannot map, and count them per role in
``stats["dropped_turns"]``; under ``strict`` the first one is an error, because dropping a
turn changes what the neighbouring turns pair with. Turns dropped by normalisation itself
(leading assistant turns, a user turn replaced by a later one, an assistant turn without a
user, rounds beyond ``max_rounds``) are counted there too, so nothing disappears silently.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from sftlab.data.formats import record_turns
from sftlab.data.normalize import (
    ROLE_ALIASES,
    SKIP_NO_ROUND,
    SKIP_UNKNOWN_ROLES,
    TurnError,
    normalize_turns,
    parse_turns,
    with_system_prompt,
)
from sftlab.data.readers import LOCAL_SPLIT, Record, iter_records
from sftlab.errors import DataError, SftlabError


@dataclass
class LoadResult:
    """Normalised conversations, their ids and what happened on the way."""

    conversations: list[list[dict[str, str]]]
    ids: list[str]
    stats: dict = field(default_factory=dict)
    augmented: set[str] = field(default_factory=set)  # ids that carry added instructions (augment)


def format_skips(skipped: dict[str, int]) -> str:
    """``"skipped 2: unknown role 1, no assistant reply 1"`` style summary (empty dict -> ``"skipped 0"``)."""
    total = sum(skipped.values())
    if not total:
        return "skipped 0"
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"skipped {total}: {parts}"


@dataclass
class _Tally:
    skipped: Counter = field(default_factory=Counter)
    dropped_turns: Counter = field(default_factory=Counter)
    records_read: int = 0
    system_prompt_added: int = 0
    repaired: int = 0  # records whose lone surrogates were replaced (sftlab.data.hostile)


def _convert(rec: Record, *, fmt: str, columns: dict[str, str] | None, conversation_field: str,
             max_rounds: int | None, strict: bool, tally: _Tally) -> list[dict[str, str]] | None:
    """One record as normalised messages, or ``None`` when it is skipped (counted in ``tally``)."""
    turns, used_field = record_turns(rec, fmt, conversation_field, columns)
    try:
        mapped, unknown = parse_turns(turns, field_name=used_field)
    except TurnError as e:
        raise DataError(rec.path, f"{rec.where()}: {e.message}", line=rec.line, field=e.field) from None
    if unknown and strict:
        role = next(iter(unknown)).split("'")[1]
        raise DataError(
            rec.path,
            f"{rec.where()}: unknown role '{role}' (known: {', '.join(sorted(ROLE_ALIASES))}); "
            f"drop --strict to skip such turns",
            line=rec.line,
            field=used_field,
        )
    messages, dropped = normalize_turns(mapped, max_rounds=max_rounds)
    if messages is None:
        # The whole record goes; its turns are not counted again under dropped_turns.
        reason = SKIP_UNKNOWN_ROLES if unknown else SKIP_NO_ROUND
        if strict:
            raise DataError(
                rec.path, f"{rec.where()}: {reason} (--strict turns skipped records into errors)",
                line=rec.line, field=used_field,
            )
        tally.skipped[reason] += 1
        return None
    tally.dropped_turns.update(unknown)
    tally.dropped_turns.update(dropped)
    return messages


def load_source(
    source: str,
    *,
    name: str | None = None,
    split: str = LOCAL_SPLIT,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    conversation_field: str = "conversations",
    max_samples: int | None = None,
    sample_seed: int | None = None,
    max_rounds: int | None = None,
    strict: bool = False,
    system_prompt: str | None = None,
) -> LoadResult:
    """Load, validate and normalise the conversations of one source (see :func:`load_conversations`).

    ``name``/``split`` pick a hub dataset's subset and split; ``fmt`` and ``columns`` say how a
    record reads (:mod:`sftlab.data.formats`); ``system_prompt`` is put in front of conversations
    without a system message (counted in ``stats["system_prompt_added"]``).
    """
    if max_samples is not None and max_samples < 1:
        raise SftlabError(f"max_samples must be at least 1, got {max_samples}")
    notes: list[str] = []
    tally = _Tally()
    conversations: list[list[dict[str, str]]] = []
    ids: list[str] = []
    stop_early = max_samples is not None and sample_seed is None
    for rec in iter_records(source, notes, name=name, split=split):
        tally.records_read += 1
        tally.repaired += rec.repaired > 0
        messages = _convert(rec, fmt=fmt, columns=columns, conversation_field=conversation_field,
                            max_rounds=max_rounds, strict=strict, tally=tally)
        if messages is None:
            continue
        if system_prompt:
            with_system = with_system_prompt(messages, system_prompt)
            tally.system_prompt_added += with_system is not messages
            messages = with_system
        rid = rec.data.get("id") if isinstance(rec.data, dict) else None
        if columns and columns.get("id") and isinstance(rec.data, dict):
            rid = rec.data.get(columns["id"])
        ids.append(str(rid) if rid is not None and str(rid) != "" else rec.default_id())
        conversations.append(messages)
        if stop_early and len(conversations) >= max_samples:  # type: ignore[operator]
            notes.append(f"stopped reading after {max_samples} usable conversations (max_samples)")
            break
    if tally.records_read == 0:
        raise DataError(source, "no records found")
    if max_samples is not None and sample_seed is not None and len(conversations) > max_samples:
        picked = sorted(random.Random(sample_seed).sample(range(len(conversations)), max_samples))
        notes.append(f"kept a random sample of {max_samples} of {len(conversations)} conversations (seed {sample_seed})")
        conversations = [conversations[i] for i in picked]
        ids = [ids[i] for i in picked]
    stats = {
        "source": source,
        "records_read": tally.records_read,
        "kept": len(conversations),
        "skipped": dict(tally.skipped),
        "dropped_turns": dict(tally.dropped_turns),
        "notes": notes,
    }
    if system_prompt:
        stats["system_prompt_added"] = tally.system_prompt_added
    if tally.repaired:
        stats["repaired_surrogates"] = tally.repaired
        notes.append(f"{tally.repaired} records held lone UTF-16 surrogates, replaced by U+FFFD")
    return LoadResult(conversations=conversations, ids=ids, stats=stats)
