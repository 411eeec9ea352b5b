"""Configuration files and command-line overrides: the one reader and the one override parser.

Every sftlab config is a YAML mapping (training, ``sftlab run``, sweeps); every command takes
``--key value`` overrides on top of it. Both are parsed here, once, so that ``--lr 2e-5`` means the
same number to ``train``, ``run`` and ``sweep``.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from sftlab.errors import ConfigError


def suggest(key: str, valid: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid key, or ``""`` when none is close."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def read_config_file(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The YAML mapping in ``path`` (safe loader), with clear errors for missing or malformed files.

    ``what`` names the file in errors ("sweep config", "base training config", ...). Floats written
    without a dot (``2e-5``, which YAML 1.1 reads as a string) come back as floats.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid UTF-8 (undecodable byte at offset {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} file {p} must be a mapping of keys to values, got {type(raw).__name__}")
    return fix_floats(raw)


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def fix_floats(obj: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; turn such strings back into floats."""
    if isinstance(obj, dict):
        return {k: fix_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fix_floats(v) for v in obj]
    if isinstance(obj, str) and _FLOAT_RE.match(obj.strip()):
        return float(obj)
    return obj


def parse_value(raw: str) -> Any:
    """One override value: a YAML scalar or flow collection (``1e-4``, ``true``, ``null``, ``[a, b]``)."""
    if raw == "":
        return ""
    try:
        return fix_floats(yaml.safe_load(raw))
    except yaml.YAMLError:
        return raw


def split_overrides(tokens: list[str]) -> list[tuple[str, str]]:
    """``["--lr", "1e-4", "--lora.r=8", "--packing"]`` -> ``[("lr", "1e-4"), ("lora.r", "8"), ("packing", "true")]``.

    The one tokeniser of command-line overrides; values stay raw strings. A flag with no value means
    ``true``; dashes in keys become underscores.
    """
    pairs: list[tuple[str, str]] = []
    items = list(tokens)
    i = 0
    while i < len(items):
        tok = items[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument '{tok}': overrides are written --key value (or --key=value)")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            raw = items[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        pairs.append((key.replace("-", "_"), raw))
    return pairs


def parse_overrides(overrides: list[str] | dict | None, *, nested: bool = True) -> dict[str, Any]:
    """Command-line overrides as a mapping.

    ``["--lr", "1e-4", "--lora.r=8", "--packing"]`` -> ``{"lr": 1e-4, "lora": {"r": 8}, "packing": True}``
    (``nested=False`` keeps dotted keys flat: ``{"lora.r": 8}``, for callers that route keys first).
    A mapping is taken as already parsed.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    flat = {key: parse_value(raw) for key, raw in split_overrides(overrides)}
    return apply_overrides({}, flat) if nested else flat


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` inside nested mappings, creating them as needed."""
    parts = key.split(".")
    cur = cfg
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set '{key}': '{p}' is not a block")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with each (possibly dotted) key of ``overrides`` set."""
    out = copy.deepcopy(cfg)
    for k, v in overrides.items():
        set_dotted(out, k, copy.deepcopy(v))
    return out


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, blocks merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
