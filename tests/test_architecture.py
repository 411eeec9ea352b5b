"""The shape of ``src/sftlab``: no import cycles among its modules, no oversized modules or functions.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a module, inside functions included (a lazy import still ties two
modules together), relative imports resolved; only imports under ``if TYPE_CHECKING:`` are left out,
since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "sftlab"

#: Limits for every module of the package (lines of a file, lines of a function or method).
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

#: Modules allowed over MAX_MODULE_LINES, each with the reason (none today); delete an entry as soon as
#: its module fits.
MODULE_ALLOWLIST: dict[str, str] = {
}
#: Functions allowed over MAX_FUNCTION_LINES ("module.qualified_name"), each with the reason.
FUNCTION_ALLOWLIST: dict[str, str] = {
}
#: Import edges left out of the cycle check, each with the reason; delete an entry once it is gone.
EDGE_ALLOWLIST: dict[tuple[str, str], str] = {
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules that module ``name`` imports."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # The longest prefix of ``target`` that is one of our modules (``sftlab.x.func`` -> ``sftlab.x``).
        parts = target.split(".")
        for i in range(len(parts), 0, -1):
            cand = ".".join(parts[:i])
            if cand in modules:
                found.add(cand)
                return

    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    add(alias.name)
            continue
        if node.level:  # relative: from the containing package, one level up per extra dot
            package = name.split(".") if is_package else name.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        if origin.split(".")[0] != PACKAGE:
            continue
        for alias in node.names:  # ``from sftlab import x``: x may be a module or a name
            add(f"{origin}.{alias.name}")
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    names = set(files)
    return {name: imports_of(name, path, names) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path = [root]
        iters = [iter(sorted(graph[root]))]
        state[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def function_lengths(path: Path):
    """``(qualified name, lines)`` of every function and method in a file (nested ones included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                yield qual, child.end_lineno - child.lineno + 1
                yield from walk(child, qual + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


# --------------------------------------------------------------------------------------------------


def test_the_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sftlab import d\n"
                              "def f():\n    from sftlab import b\n")
    (pkg / "b.py").write_text("import sftlab.sub.c as c\nfrom .d import x\n")
    (pkg / "sub" / "c.py").write_text("from ..a import f\nfrom sftlab.sub import e\n")
    (pkg / "d.py").write_text("x = 1\n")
    (pkg / "sub" / "e.py").write_text("")
    names = {"sftlab", "sftlab.a", "sftlab.b", "sftlab.d", "sftlab.sub", "sftlab.sub.c", "sftlab.sub.e"}
    got = {n: imports_of(n, p, names) for n, p in {
        "sftlab.a": pkg / "a.py", "sftlab.b": pkg / "b.py", "sftlab.sub": pkg / "sub" / "__init__.py",
        "sftlab.sub.c": pkg / "sub" / "c.py"}.items()}
    assert got == {"sftlab.a": {"sftlab.b"}, "sftlab.b": {"sftlab.sub.c", "sftlab.d"},
                   "sftlab.sub": {"sftlab.sub.c"}, "sftlab.sub.c": {"sftlab.a", "sftlab.sub.e"}}
    assert find_cycle(got) == ["sftlab.a", "sftlab.b", "sftlab.sub.c", "sftlab.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_cycles_among_sftlab_modules():
    graph = import_graph()
    assert len(graph) > 20 and "sftlab.train.config" in graph["sftlab.train.recipe"]
    stale = [e for e in EDGE_ALLOWLIST if e[1] not in graph.get(e[0], ())]
    assert not stale, f"allowlisted imports that are gone (remove them from EDGE_ALLOWLIST): {stale}"
    for a, b in EDGE_ALLOWLIST:
        graph[a] = graph[a] - {b}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_the_line_limit():
    too_long = {}
    for name, path in module_files().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES and name not in MODULE_ALLOWLIST:
            too_long[name] = n
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    stale = [m for m in MODULE_ALLOWLIST if m in module_files()
             and len(module_files()[m].read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES]
    assert not stale, f"allowlisted modules that now fit (remove them from MODULE_ALLOWLIST): {stale}"


def test_no_function_over_the_line_limit():
    too_long, seen = {}, set()
    for name, path in module_files().items():
        for qual, n in function_lengths(path):
            key = f"{name}.{qual}"
            if n > MAX_FUNCTION_LINES:
                seen.add(key)
                if key not in FUNCTION_ALLOWLIST:
                    too_long[key] = n
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    stale = sorted(set(FUNCTION_ALLOWLIST) - seen)
    assert not stale, f"allowlisted functions that now fit or are gone (remove them): {stale}"


# ------------------------------------------------------------------------------- one home per value

#: The only modules allowed directly in ``src/sftlab/``; everything else lives in a stage package.
TOP_LEVEL_MODULES = {"__init__", "__main__", "errors", "utils", "layout"}

#: Modules allowed to spell artifact file names themselves, each with the reason (none today).
ARTIFACT_NAME_ALLOWLIST: dict[str, str] = {
}


def artifact_file_names() -> dict[str, str]:
    """``{NAME: value}`` of every file name :mod:`sftlab.layout` defines: its module-level string
    constants that name a file (with an extension, or a marker such as ``DONE``). Directory names
    (``train``, ``cache``, ``runs``...) are ordinary words and are left out."""
    tree = ast.parse((SRC / PACKAGE / "layout.py").read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            value = node.value.value
            if "." in value or value.isupper():
                out[node.targets[0].id] = value
    return out


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """``id()`` of the docstring constants of a module and its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def artifact_literals(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, literal)`` for every string literal that *is* an artifact file name or a path ending
    in one (``"summary.json"``, ``"runs/x/summary.json"``, the ``"/summary.json"`` of
    ``f"{d}/summary.json"``). Docstrings are skipped, and so is a name mentioned inside prose (a help
    text, a message: ``"see summary.json"``): those describe files, they do not locate them."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            tail = node.value.rsplit("/", 1)[-1]
            if tail in names:
                found.append((node.lineno, node.value))
    return sorted(found)


def test_the_artifact_name_scanner_finds_names_used_as_paths():
    names = {"summary.json", "DONE"}
    source = ('"""Writes summary.json."""\n'
              'def f(d):\n    """Reads ``summary.json``."""\n'
              '    a = d / "summary.json"\n    b = f"{d}/summary.json"\n    c = "see summary.json for the figures"\n'
              '    return a, b, c, d / "DONE", "summary.jsonl"\n')
    assert artifact_literals(source, names) == [(4, "summary.json"), (5, "/summary.json"), (7, "DONE")]
    got = artifact_file_names()
    assert got["EVAL_SUMMARY"] == "summary.json" and got["DONE"] == "DONE" and "TRAIN" not in got


def test_no_module_at_the_top_level_but_the_named_few():
    top = {p.stem for p in (SRC / PACKAGE).glob("*.py")}
    assert TOP_LEVEL_MODULES <= top, f"missing: {TOP_LEVEL_MODULES - top}"
    assert top == TOP_LEVEL_MODULES, (f"modules at the top of {PACKAGE}/ that belong in a stage package: "
                                      f"{sorted(top - TOP_LEVEL_MODULES)}")


def test_artifact_file_names_come_from_layout():
    """No module but ``layout.py`` spells a file name that layout defines, as a path. Allowed: docstrings,
    comments, and names mentioned inside prose (help texts, messages), which describe files rather than
    locate them (see :func:`artifact_literals`); the temporary ARTIFACT_NAME_ALLOWLIST above."""
    names = set(artifact_file_names().values())
    offenders, used = [], set()
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        rel = path.relative_to(SRC / PACKAGE).as_posix()
        if rel == "layout.py":
            continue
        hits = artifact_literals(path.read_text(encoding="utf-8"), names)
        if hits and rel in ARTIFACT_NAME_ALLOWLIST:
            used.add(rel)
        elif hits:
            offenders += [f"{rel}:{line}: {text!r}" for line, text in hits]
    assert not offenders, "artifact file names spelled outside sftlab.layout (use its constants):\n" + "\n".join(offenders)
    stale = sorted(set(ARTIFACT_NAME_ALLOWLIST) - used)
    assert not stale, f"allowlisted modules that no longer spell artifact names (remove them): {stale}"


def _is_minus_100(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value == -100 and not isinstance(node.value, bool):
        return True
    return (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and node.operand.value == 100 and not isinstance(node.operand.value, bool))


def test_one_ignore_index_and_no_bare_minus_100():
    """The label of an untrained token is defined once (``sftlab.prep.masking_parts.IGNORE_INDEX``);
    every other module imports it, and no code writes ``-100`` for it (prose in strings may)."""
    definitions, bare = [], []
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined_values = set()
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AnnAssign, ast.AugAssign)) else []
            if any(isinstance(t, ast.Name) and t.id == "IGNORE_INDEX" for t in targets):
                definitions.append(name)
                defined_values.add(id(node.value))
        bare += [f"{name}:{n.lineno}" for n in ast.walk(tree) if _is_minus_100(n) and id(n) not in defined_values]
    assert definitions == ["sftlab.prep.masking_parts"], f"IGNORE_INDEX defined in: {definitions}"
    assert not bare, f"bare -100 (use IGNORE_INDEX): {bare}"
