"""Small helpers shared by every stage: atomic writes, stable hashing, environment facts."""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError

#: Encoding error handler of every sftlab writer: a lone UTF-16 surrogate (a JSON ``"\\ud800"`` escape in
#: the input, kept in a response or an id) becomes U+FFFD instead of a ``UnicodeEncodeError`` mid-write.
SURROGATES_REPLACED = "sftlab-surrogates-replaced"


def _replace_surrogates(e: UnicodeError) -> tuple[bytes, int]:
    # Bytes, not "\ufffd": CPython's UTF-8 encoder takes only ASCII text back from an error handler.
    if isinstance(e, UnicodeEncodeError):
        return "\ufffd".encode() * (e.end - e.start), e.end
    raise e


codecs.register_error(SURROGATES_REPLACED, _replace_surrogates)


def disk_full_error(path: str | os.PathLike, needed: int, e: OSError) -> SftlabError | None:
    """A one-line error for a full disk while writing ``needed`` bytes to ``path``, else None."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    try:
        free = os.statvfs(Path(path).parent).f_bavail * os.statvfs(Path(path).parent).f_frsize
    except OSError:
        free = 0
    return SftlabError(f"no space left on device writing {path}: needs {needed:,} bytes, {free:,} free; free some "
                       "space and run the same command again")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` so that a reader sees either the old file or the whole new one.

    A temporary file in the same directory is written, flushed, fsynced and renamed over
    the target: a process killed half-way never leaves a truncated JSON behind that a later
    step would trust.
    """
    atomic_write_bytes(path, text.encode("utf-8", errors=SURROGATES_REPLACED))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically: temporary file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        full = disk_full_error(path, len(data), e) if isinstance(e, OSError) else None
        if full is not None:
            raise full from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]


def plural(n: int, noun: str) -> str:
    """``"1 type"``, ``"3 types"``: report sentences and augmented instructions alike."""
    return f"{n} {noun if n == 1 else noun + 's'}"


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_table(root: str | os.PathLike, *, exclude: str | None = None) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` (but one named ``exclude``, a manifest) with its size and SHA-256:
    what a cache manifest records and is checked against."""
    table = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.name != exclude:
            table[p.relative_to(root).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return table


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a file for cache keys: resolved path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def environment_info() -> dict[str, Any]:
    """Device and library versions, for summaries and the report's environment section."""
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
        else:
            info["device"] = f"CPU ({cpu_model()}, {os.cpu_count()} cores)"
            info["gpu_count"] = 0
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def log(msg: str) -> None:
    """A progress message on stderr (like the progress bars), so that stdout stays for results."""
    import sys

    print(msg, file=sys.stderr, flush=True)


def setup_nltk_data() -> None:
    """Point NLTK at a local punkt_tab when none is configured.

    Looks for ``../shared/nltk_data`` next to the checkout (this project's offline asset)
    only when ``NLTK_DATA`` is unset; never downloads.
    """
    if os.environ.get("NLTK_DATA"):
        return
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "nltk_data"
        if cand.is_dir():
            os.environ["NLTK_DATA"] = str(cand)
            return


def append_jsonl(path: str | os.PathLike, records: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Append JSON lines and make them durable before returning (flush + fsync).

    The one writer of sftlab's append-only logs (``metrics.jsonl``, ``responses.jsonl``): a kill can
    only tear the last line, which :func:`read_jsonl` drops.
    """
    rows = [records] if isinstance(records, dict) else list(records)
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8", errors=SURROGATES_REPLACED)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            full = disk_full_error(path, len(blob), e)
            if full is None:
                raise
            try:  # no torn line left behind: the file ends after its last complete record
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise full from None
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or a :class:`SftlabError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or undecodable bytes
        raise SftlabError(f"cannot read {path}: {e}") from e


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file sftlab appends to (``metrics.jsonl``, ``responses.jsonl``).

    A missing file is empty; a half-written last line (a run killed mid-write) is ignored; any other
    bad line is an error naming the file and line, because silently skipping it would lose records.
    """
    path = Path(path)
    out = []
    if not path.is_file():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise SftlabError(f"{path}:{i + 1}: invalid JSON: {e}") from e
    return out
