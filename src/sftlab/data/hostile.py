"""Guards the readers put between a hostile file and the rest of sftlab.

Each guard turns an input that used to end in a traceback or a hang into a one-line
:class:`~sftlab.errors.DataError` naming the file and line, or repairs it and says so:

* JSON nested deeper than the interpreter's recursion limit (``RecursionError`` in ``json``) and
  integer literals over Python's 4,300-digit conversion limit (``ValueError``): located errors.
* Lone UTF-16 surrogates (JSON ``"\\ud800"`` escapes decode to them; no UTF-8 file can hold one):
  replaced by U+FFFD in every string of the record and the record counted as repaired. Never passed
  on, because the tokenizer refuses such a string (``TextEncodeInput`` TypeError) and every writer
  fails on it (``UnicodeEncodeError``).
* A FIFO, socket or device given as a data file: refused (reading a FIFO blocks forever).
* CSV rows with the wrong number of columns, and a last row cut inside a quoted field: the pandas
  reader behind ``datasets`` fills a short row with empty cells and trains on it.
"""

from __future__ import annotations

import csv
import json
import re
import stat
from pathlib import Path
from typing import Any

from sftlab.errors import DataError

#: A JSON ``\\u`` escape of a UTF-16 surrogate: the only way a lone surrogate reaches a decoded string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def decode_json(text: str, where: str, line: int | None = None) -> Any:
    """``json.loads(text)`` with every failure a :class:`DataError` naming ``where`` and the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(where, f"invalid JSON: {e.msg} (column {e.colno})",
                        line=line if line is not None else e.lineno) from None
    except RecursionError:
        raise DataError(where, "invalid JSON: nested too deeply", line=line) from None
    except ValueError as e:  # an integer literal beyond the interpreter's digit limit
        raise DataError(where, f"invalid JSON: {str(e).splitlines()[0]}", line=line) from None


def may_hold_surrogates(text: str) -> bool:
    """Cheap pre-check on raw JSON text: could decoding it yield a lone surrogate?"""
    return _SURROGATE_ESCAPE.search(text) is not None


def _fix_str(s: str, count: list[int]) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    # A proper pair escaped as two \\u escapes decodes to one code point already; anything left is lone.
    count[0] += 1
    return _SURROGATE.sub(REPLACEMENT, s)


def repair_surrogates(obj: Any) -> tuple[Any, int]:
    """``obj`` with every lone surrogate (in strings and mapping keys) replaced by U+FFFD, and the
    number of strings changed. Iterative: a deep record must not overflow the stack here."""
    count = [0]

    def fix(v: Any) -> Any:
        return _fix_str(v, count) if isinstance(v, str) else v

    root = [obj]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        v = parent[key]
        if isinstance(v, str):
            parent[key] = fix(v)
        elif isinstance(v, list):
            stack.extend((v, i) for i in range(len(v)))
        elif isinstance(v, dict):
            if any(isinstance(k, str) and _SURROGATE.search(k) for k in v):
                fixed = {fix(k): x for k, x in v.items()}
                if len(fixed) == len(v):
                    v.clear()
                    v.update(fixed)
            stack.extend((v, k) for k in list(v))
    return root[0], count[0]


def check_regular_file(path: Path) -> None:
    """A data path that exists but is no regular file or directory (FIFO, socket, device) is refused."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: the reader says so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise DataError(str(path), f"is {kind}, not a regular file; give a data file or directory")


def check_csv_rows(path: Path) -> None:
    """Every CSV row has the header's number of columns; a quoted field left open at the end of the
    file (a cut-off last row) is an error naming the line."""
    try:
        f = open(path, encoding="utf-8", newline="")  # closed by the with below
    except OSError:
        return  # the table reader reports it
    with f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return
            width = len(header)
            for row in reader:
                if row and len(row) != width:
                    raise DataError(str(path), f"CSV row has {len(row)} columns, the header has {width}"
                                    f"{' (a truncated last row?)' if len(row) < width else ''}",
                                    line=reader.line_num)
        except csv.Error as e:
            raise DataError(str(path), f"malformed CSV: {e}", line=reader.line_num) from None
        except UnicodeDecodeError as e:
            raise DataError(str(path), f"not valid UTF-8 (undecodable byte at offset {e.start})") from None
