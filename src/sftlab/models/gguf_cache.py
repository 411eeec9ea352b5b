"""An on-disk cache of what transformers makes of a GGUF file: the tokenizer and the float32 weights.

Loading a GGUF through transformers costs ~20 s for SmolLM2-135M, nearly all of it spent in pure
Python: the GGUF metadata (49k-token vocabulary and merges) is parsed three times (tokenizer, config,
weights) and the tensor-name map is rebuilt for every tensor; dequantising takes ~2.5 s. The converted
tokenizer (``save_pretrained``: JSON) and weights (safetensors, never pickle) reload in well under a
second, so they are kept in ``<root>/gguf/<stem>-<key>/{tokenizer,model}/``.

- ``<root>`` is ``$SFTLAB_CACHE``, else ``$XDG_CACHE_HOME/sftlab``, else ``~/.cache/sftlab``;
  ``SFTLAB_GGUF_CACHE=0`` turns the cache off (every load converts the GGUF again).
- ``<key>`` hashes the file's identity (resolved path, size, mtime) with :data:`CONVERSION_VERSION` and
  the versions of transformers, gguf and torch: any change gives a new entry. Entries of an older
  state of the same file are deleted when the new one is written.
- An entry is written in a temporary directory, fsynced, then renamed into place: a killed build
  leaves only a ``.tmp-*`` directory, which readers ignore (and a later build deletes after an hour).
- Each entry carries a manifest (its source, versions, the size and SHA-256 of every file). An entry
  whose manifest is missing or disagrees is rebuilt; so is one that fails to load and no longer matches
  its hashes. One that fails to load but is intact is kept and the error raised: it is the caller's
  (an ``attn_implementation`` not installed, say), and converting again would not help.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sftlab.utils import file_fingerprint, file_table, log, sha256_file, stable_hash

#: Bump when what sftlab writes into an entry changes: older entries are then ignored.
#: 2: the manifest lists each file's size and SHA-256 together (:func:`sftlab.utils.file_table`).
CONVERSION_VERSION = 2
ENV_ROOT = "SFTLAB_CACHE"
ENV_SWITCH = "SFTLAB_GGUF_CACHE"
MANIFEST = "sftlab-cache.json"
#: Pickle-based formats: an entry holding one of them is refused (safetensors and JSON only).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: A ``.tmp-*`` build directory older than this belongs to a dead process.
STALE_TMP_SECONDS = 3600

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sftlab"


def _versions() -> dict[str, str]:
    """Libraries whose upgrade could change the conversion: each is part of the key."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"sftlab_conversion": str(CONVERSION_VERSION)}
    for pkg in ("transformers", "gguf", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def expected_manifest(gguf_path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """What the manifest of a valid ``kind`` entry for this file says (files aside)."""
    return {"kind": kind, "source": file_fingerprint(gguf_path), "versions": _versions()}


def entry_dir(gguf_path: str | os.PathLike, kind: str, want: dict[str, Any] | None = None) -> Path:
    """Where the ``kind`` (``tokenizer`` or ``model``) entry of this GGUF file lives (``want``: its
    :func:`expected_manifest`, when the caller has it already)."""
    want = want or expected_manifest(gguf_path, kind)
    key = stable_hash({"source": want["source"], "versions": want["versions"]})
    return cache_root() / "gguf" / f"{Path(gguf_path).stem}-{key}" / kind


def is_valid(entry: Path, want: dict[str, Any]) -> bool:
    """A complete entry for ``want``: its manifest matches and every listed file has its size."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        if {k: manifest.get(k) for k in want} != want or not manifest.get("files"):
            return False
        return all((entry / name).stat().st_size == row["size"] for name, row in manifest["files"].items())
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def intact(entry: Path) -> bool:
    """Every file still has the SHA-256 recorded when the entry was written (read only after a failure)."""
    try:
        files = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))["files"]
        return bool(files) and all(sha256_file(entry / name) == row["sha256"] for name, row in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def discard(entry: Path) -> None:
    """Delete an entry: moved aside first, so that no reader ever sees it half deleted."""
    if not entry.exists():
        return
    aside = entry.parent / f".tmp-discard-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        entry.rename(aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean_stale(parent: Path) -> None:
    """Delete build directories left by killed processes (old ``.tmp-*`` siblings)."""
    now = time.time()
    for p in parent.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _prune_superseded(entry: Path, source: dict[str, Any]) -> None:
    """Delete entries made from an earlier state (size or mtime) of the same GGUF path."""
    keep = entry.parent
    for other in keep.parent.glob("*"):
        if other == keep or other.name.startswith(".") or not other.is_dir():
            continue
        for manifest in other.glob(f"*/{MANIFEST}"):
            try:
                old = json.loads(manifest.read_text(encoding="utf-8")).get("source", {})
            except (OSError, ValueError, AttributeError):
                continue
            if old.get("path") == source["path"] and old != source:
                shutil.rmtree(other, ignore_errors=True)
                break


def build(entry: Path, want: dict[str, Any], save: Callable[[Path], None]) -> None:
    """Write an entry atomically: ``save(tmp_dir)`` fills a temporary directory, which is renamed."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(entry.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    try:
        save(tmp)
        files = file_table(tmp)
        pickled = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
        if pickled or not files:
            raise OSError(f"refusing to cache {pickled or 'nothing'}: safetensors and JSON only")
        manifest = {**want, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        if is_valid(entry, want):  # a concurrent build got there first
            return
        discard(entry)  # an invalid entry in the way
        try:
            tmp.rename(entry)
        except OSError:
            if not is_valid(entry, want):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune_superseded(entry, want["source"])


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def _convert_into(entry: Path, want: dict[str, Any], convert: Callable[[], Any],
                  write: Callable[[Any, Path], None], gguf_name: str) -> bool:
    """Convert the GGUF and write the entry; False when it cannot be written (the caller loads directly)."""
    if not _writable(entry.parent):
        return False
    log(f"converting {gguf_name} ({entry.name}) once into the cache {entry}")
    converted = convert()
    try:
        build(entry, want, lambda tmp: write(converted, tmp))
    except Exception as e:  # noqa: BLE001 - a full disk must not stop a load that can go on without
        log(f"cannot write the GGUF cache ({type(e).__name__}: {e}); loading from the GGUF file")
        return False
    return True


def load_through_cache(gguf_path: str | os.PathLike, kind: str, *, convert: Callable[[], Any],
                       write: Callable[[Any, Path], None], load: Callable[[Path], T], direct: Callable[[], T]) -> T:
    """``load(entry)`` from the ``kind`` entry of this GGUF file, built first (``write(convert(), dir)``)
    when missing or broken; ``direct()`` (converting the GGUF again) when the cache is off or unwritable.

    Errors of ``convert`` are the GGUF file's own and propagate as they would from a direct load.
    """
    if not enabled():
        return direct()
    try:
        want = expected_manifest(gguf_path, kind)
        entry = entry_dir(gguf_path, kind, want)
    except OSError:
        return direct()
    for _ in range(2):
        if not is_valid(entry, want) and not _convert_into(entry, want, convert, write, Path(gguf_path).name):
            return direct()
        try:
            return load(entry)
        except Exception as e:  # noqa: BLE001 - a damaged entry is rebuilt from the GGUF source
            if intact(entry):
                raise
            log(f"the GGUF cache entry {entry} is damaged ({type(e).__name__}: {e}); rebuilding it")
            discard(entry)
    return direct()
