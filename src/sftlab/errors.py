"""User-facing errors.

Anything the user can fix (bad data, bad config, a missing file) raises a subclass of
:class:`SftlabError`. The CLI prints its message as one line on stderr and exits with
status 2, without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib

EXIT_USER_ERROR = 2


def suggest(key: str, valid: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name, or ``""`` when none is close.

    Every "unknown key/type/format" error appends it, so a typo costs one glance.
    """
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class SftlabError(Exception):
    """An error caused by the user's input, reported as one clear line."""


class ConfigError(SftlabError):
    """A configuration problem: unknown key, wrong type, impossible arithmetic."""


class DataError(SftlabError):
    """Malformed input data, located by file, line (for JSONL) and field."""

    def __init__(self, path: str, message: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = self.path
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``.

    Every choice set (masking strategy, truncation, loss, padding, dtype...) is checked through this
    one function, so a wrong value reads the same wherever it was written.
    """
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}{suggest(str(value), choices)}")
