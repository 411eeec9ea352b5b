"""Data specs: what ``data:`` and ``eval_data:`` may say, validated into :class:`DataSpec` objects.

A value is either one source string (a file, a directory, ``sharegpt`` or a hub id, as always)
or a list whose items are source strings or mappings::

    data:
      - path: HuggingFaceTB/smoltalk        # hub id, local file or directory, or sharegpt
        name: all                           # hub subset (config)
        split: train                        # default train (a local source has only train)
        format: messages                    # auto | messages | sharegpt | alpaca | prompt_completion
        columns: {messages: conversation}   # sftlab field -> the dataset's column
        max_samples: 5000                   # the first N usable conversations of this source
        weight: 2                           # share of the mix (>= 0)

Every mistake is a one-line :class:`~sftlab.errors.ConfigError` that names where it is
(``data[1].format``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sftlab.data.formats import COLUMN_KEYS, FORMATS
from sftlab.data.readers import LOCAL_SPLIT, SHAREGPT_NAME, data_files
from sftlab.data.readers import source_fingerprint as _one_fingerprint
from sftlab.errors import ConfigError, SftlabError, suggest


@dataclass(frozen=True)
class DataSpec:
    """One data source and how to read it."""

    path: str
    name: str | None = None
    split: str = LOCAL_SPLIT
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    max_samples: int | None = None
    weight: float | None = None  # None: unset (see sftlab.data.mixture for what that means)

    def label(self) -> str:
        """A short name for statistics: the path, plus subset and split when they are not the defaults."""
        extra = [x for x in (self.name, None if self.split == LOCAL_SPLIT else self.split) if x]
        return self.path + (f" [{'/'.join(extra)}]" if extra else "")

    def __hash__(self) -> int:  # columns is a dict: hash what identifies the spec
        return hash((self.path, self.name, self.split, self.format, tuple(sorted(self.columns.items())),
                     self.max_samples, self.weight))


SPEC_KEYS = tuple(f.name for f in fields(DataSpec))


def _check_type(where: str, key: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be {what}, got {value!r}")


def _parse_columns(where: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.columns must be a mapping of sftlab field to column name, got {value!r}")
    out: dict[str, str] = {}
    for ours, theirs in value.items():
        if ours not in COLUMN_KEYS:
            raise ConfigError(f"{where}.columns: unknown field '{ours}'{suggest(str(ours), COLUMN_KEYS)} "
                              f"(fields: {', '.join(COLUMN_KEYS)})")
        if not isinstance(theirs, str) or not theirs:
            raise ConfigError(f"{where}.columns.{ours} must be a column name, got {theirs!r}")
        out[str(ours)] = theirs
    return out


def _parse_one(item: Any, where: str) -> DataSpec:
    if isinstance(item, str):
        if not item.strip():
            raise ConfigError(f"{where} is an empty string; give a file, directory, 'sharegpt' or a hub id")
        return DataSpec(path=item)
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be a source string or a mapping with a 'path', got {item!r}")
    for key in item:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'{suggest(str(key), SPEC_KEYS)} "
                              f"(keys: {', '.join(SPEC_KEYS)})")
    if not item.get("path"):
        raise ConfigError(f"{where} has no 'path' (a file, directory, 'sharegpt' or a hub id)")
    _check_type(where, "path", item["path"], (str,), "a string")
    fmt = item.get("format") or "auto"
    if fmt not in FORMATS:
        raise ConfigError(f"{where}.format: unknown format '{fmt}'{suggest(str(fmt), FORMATS)} "
                          f"(formats: {', '.join(FORMATS)})")
    for key in ("name", "split"):
        if item.get(key) is not None:
            _check_type(where, key, item[key], (str,), "a string")
    max_samples = item.get("max_samples")
    if max_samples is not None:
        _check_type(where, "max_samples", max_samples, (int,), "a positive integer")
        if max_samples < 1:
            raise ConfigError(f"{where}.max_samples must be a positive integer, got {max_samples}")
    weight = item.get("weight")
    if weight is not None:
        _check_type(where, "weight", weight, (int, float), "a number >= 0")
        if weight < 0 or weight != weight or weight == float("inf"):
            raise ConfigError(f"{where}.weight must be a finite number >= 0, got {weight}")
    return DataSpec(path=item["path"], name=item.get("name"), split=item.get("split") or LOCAL_SPLIT, format=fmt,
                    columns=_parse_columns(where, item.get("columns")), max_samples=max_samples,
                    weight=None if weight is None else float(weight))


def parse_data_specs(value: Any, where: str = "data") -> list[DataSpec]:
    """``data:`` / ``eval_data:`` as a list of :class:`DataSpec`.

    ``value`` is one source string (today's form), one mapping, a :class:`DataSpec`, or a list of
    those. Raises :class:`ConfigError` (one line, naming ``where[i].key``) for anything invalid.
    """
    if isinstance(value, DataSpec):
        return [value]
    if isinstance(value, (str, Mapping)):
        return [_parse_one(value, where)]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a source string or a list of sources, got {type(value).__name__}")
    if not value:
        raise ConfigError(f"{where} is an empty list; give at least one source")
    return [v if isinstance(v, DataSpec) else _parse_one(v, f"{where}[{i}]") for i, v in enumerate(value)]


def describe_data(value: Any) -> str:
    """A one-line description of a ``data:`` value for reports: the source, or the mix's sources."""
    if isinstance(value, str) or value is None:
        return str(value or "")
    try:
        specs = parse_data_specs(value)
    except SftlabError:
        return str(value)
    if len(specs) == 1:
        return specs[0].label()
    parts = [s.label() + ("" if s.weight is None else f" (weight {s.weight:g})") for s in specs]
    return f"a mix of {len(specs)} sources: " + ", ".join(parts)


def spec_fingerprint(spec: DataSpec) -> dict[str, Any]:
    """What identifies one spec's content for cache keys: its options plus its files or hub id."""
    out = asdict(spec)
    out["content"] = _one_fingerprint(spec.path)
    return out


def specs_fingerprint(specs: Any) -> dict[str, Any]:
    """The cache-key input for a list of specs (or anything :func:`parse_data_specs` accepts).

    A single plain source string gives exactly :func:`source_fingerprint` of it, so caches built
    before data specs existed stay valid.
    """
    if isinstance(specs, str):
        return _one_fingerprint(specs)
    parsed = parse_data_specs(specs)
    return {"kind": "specs", "specs": [spec_fingerprint(s) for s in parsed]}


def source_fingerprint(source: Any) -> dict[str, Any]:
    """:func:`sftlab.data.readers.source_fingerprint` for a source string, :func:`specs_fingerprint` otherwise."""
    return specs_fingerprint(source)


def is_local(spec: DataSpec) -> bool:
    """Whether a spec reads local files or the bundled ShareGPT (not the hub)."""
    return spec.path == SHAREGPT_NAME or data_files(spec.path) is not None
