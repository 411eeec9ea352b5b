"""The one YAML reader of sftlab's configs: ``yaml.safe_load`` semantics with bounds.

PyYAML's safe loader builds only plain data, but it trusts the document's shape: a mapping nested a
thousand deep ends in ``RecursionError``, a self-referencing alias builds a cyclic list that every
later walk (overrides, deep copies, the saved config) recurses into forever, a "billion laughs"
anchor bomb (nine aliases of nine aliases ...) expands to 9^9 nodes, and a duplicate key silently
keeps the last value. :class:`BoundedSafeLoader` refuses each of these with a message naming the
line, so a hostile or mistyped config costs a one-line error instead of a hang or a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sftlab.errors import ConfigError

#: Deepest nesting of blocks and lists accepted (real configs use three or four levels).
MAX_DEPTH = 64
#: Largest config file read (real configs: a few KB).
MAX_FILE_BYTES = 16 << 20
#: Most nodes the document may hold once every alias is expanded (real configs: a few hundred).
MAX_EXPANDED_NODES = 100_000


class YamlLimitError(yaml.YAMLError):
    """A document beyond :data:`MAX_DEPTH`, :data:`MAX_EXPANDED_NODES`, with a cyclic alias or a
    duplicate key; the message is one line and names the line(s)."""


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with bounded depth and alias expansion, and duplicate keys refused."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML hook
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:  # noqa: D102 - PyYAML hook
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:  # noqa: D102
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            if key in seen:
                raise YamlLimitError(f"duplicate key '{key}' at line {_line(key_node)} (first at line {seen[key]})")
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of ``root`` with every alias expanded (memoised per node, so an anchor bomb is
    counted in time linear in the document) and refuse a cycle (an alias inside its own anchor)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # Iterative post-order walk: a deep document must not overflow the interpreter's stack here.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            children = _children(node)
            sizes[nid] = 1 + sum(sizes[id(c)] for c in children)
            active.discard(nid)
            if sizes[nid] > MAX_EXPANDED_NODES:
                raise YamlLimitError(f"aliases expand to more than {MAX_EXPANDED_NODES:,} values "
                                     f"(the node at line {_line(node)})")
            continue
        if nid in sizes:
            continue
        if nid in active:
            raise YamlLimitError(f"alias refers to itself (the anchor at line {_line(node)})")
        active.add(nid)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise YamlLimitError(f"alias refers to itself (the anchor at line {_line(child)})")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` through :class:`BoundedSafeLoader` (raises ``yaml.YAMLError``)."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_config_file(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The YAML mapping in ``path`` (bounded safe loader), with clear errors for missing or malformed files.

    ``what`` names the file in errors ("sweep config", "base training config", ...). Floats written
    without a dot (``2e-5``, which YAML 1.1 reads as a string) come back as floats.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} file {p} does not exist")
    if not p.is_file():  # a directory, a FIFO (reading it would block) or a device
        raise ConfigError(f"{what} file {p} is not a regular file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{what} file {p} is larger than {MAX_FILE_BYTES >> 20} MB; not a config")
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid UTF-8 (undecodable byte at offset {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
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
