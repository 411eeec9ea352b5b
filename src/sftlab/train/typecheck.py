"""Does a config value fit a type annotation? The checks behind "config key 'x' must be float".

Config values come from YAML (and ``--key value`` overrides parsed as YAML); the annotations come
from sftlab's dataclasses and ``transformers.TrainingArguments``. Checking them here, before anything
runs, turns a typo into a one-line error instead of a failure deep inside the Trainer.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from typing import Any

from sftlab.errors import ConfigError


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(tp).replace("typing.", ""))


def _coerce_union(value: Any, tp: Any, lenient: bool) -> tuple[bool, Any]:
    args = typing.get_args(tp)
    for a in args:  # exact matches win over coercions
        ok, v = _coerce(value, a, lenient=False)
        if ok:
            return True, v
    if lenient:
        for a in args:
            ok, v = _coerce(value, a, lenient=True)
            if ok:
                return True, v
    return False, value


def _coerce_number(value: Any, tp: Any, lenient: bool) -> tuple[bool, Any]:
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if lenient and isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True, float(value) if isinstance(value, int) else value
    if lenient and isinstance(value, str):
        try:
            return True, float(value)
        except ValueError:
            return False, value
    return False, value


def _coerce(value: Any, tp: Any, *, lenient: bool) -> tuple[bool, Any]:
    """Does ``value`` fit annotation ``tp``? Returns (ok, value, converted when ``lenient``).

    Strict pass first, lenient second (see :func:`check_value`): the lenient pass turns strings such
    as ``2e-5`` into floats, because YAML 1.1 (PyYAML) reads a float without a dot as a string.
    """
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True, value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, lenient)
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp in (int, float):
        return _coerce_number(value, tp, lenient)
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            return False, value
        args = typing.get_args(tp)
        if args and args[0] is not Ellipsis:
            out = []
            for item in value:
                ok, v = _coerce(item, args[0], lenient=lenient)
                if not ok:
                    return False, value
                out.append(v)
            return True, out
        return True, value
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = {m.value for m in tp} | {m.name for m in tp}
        if lenient and value is False and "no" in values:
            return True, "no"  # YAML 1.1 reads `eval_strategy: no` as false
        return (isinstance(value, str) and value in values), value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, dict), value
    return True, value  # complex annotations (callables, configs): leave to TrainingArguments


def check_value(key: str, value: Any, tp: Any) -> Any:
    ok, v = _coerce(value, tp, lenient=False)
    if not ok:
        ok, v = _coerce(value, tp, lenient=True)
    if not ok:
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return v
