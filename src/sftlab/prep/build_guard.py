"""What keeps a preprocessing build honest when things go wrong around it.

* :func:`remove_orphans`: a build killed by SIGKILL (or a SIGTERM in an older sftlab) leaves
  ``cache/.build-<key>-<pid>-<hex>/``; the next run removes every one whose process is gone.
* :func:`install`: a finished build replaces an installed cache that was found invalid (a damaged
  cache whose manifest matches the damage must not win over the fresh build).
* :func:`build_errors`: a full disk while the build writes is a one-line error naming the path, the
  bytes written and the bytes free (the build directory is removed by the caller, so nothing
  partial is left that a later run could trust); a chat template that fails to render is one too.
* :func:`check_template`: the chat template renders a two-turn conversation before any work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError

_BUILD_DIR = re.compile(r"^\.build-[0-9a-f]+-(\d+)-[0-9a-f]+$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or a pid we cannot ask about): leave it
    return True


def remove_orphans(cache_root: Path) -> list[str]:
    """Remove ``.build-*`` directories under ``cache_root`` whose process no longer runs; their names."""
    removed = []
    if not cache_root.is_dir():
        return removed
    for d in cache_root.iterdir():
        m = _BUILD_DIR.match(d.name)
        if m and d.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def install(build_dir: Path, cache_dir: Path, key: str, *, replace: bool, is_valid: Any) -> None:
    """Move a finished build into place. ``replace``: the installed cache was found invalid and goes;
    otherwise a valid cache another process installed meanwhile wins (``is_valid(cache_dir, key)``)."""
    if replace and cache_dir.exists():
        shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        os.rename(build_dir, cache_dir)
        return
    except OSError:
        pass
    if is_valid(cache_dir, key) is None:
        return  # someone else finished the same build first; ours is discarded
    shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        os.rename(build_dir, cache_dir)
    except OSError as e:
        raise SftlabError(f"cannot install preprocess cache at {cache_dir}: {e}") from e


def is_disk_full(e: BaseException) -> bool:
    """An ENOSPC/EDQUOT however the library wrapped it (OSError, pyarrow's error, torch's RuntimeError)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left on device" in text or "Disk quota exceeded" in text


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def disk_full_message(what: str, path: Path, *, written: int, needed: int | None = None) -> str:
    """One line: the path, what was written before the disk filled, what is free, what is needed."""
    try:
        free = shutil.disk_usage(path if path.exists() else path.parent).free
    except OSError:
        free = 0
    need = f"needs about {mb(needed)}" if needed else f"needs more than the {mb(written)} written before it filled"
    return (f"no space left on device writing {what} {path}: {need}, {mb(free)} free; free some space and "
            "run the same command again")


@contextlib.contextmanager
def build_errors(build_dir: Path) -> Iterator[None]:
    """Turn a full disk or a failing chat template inside a build into a one-line error."""
    try:
        yield
    except SftlabError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise SftlabError(disk_full_message("the preprocess cache", build_dir, written=_size(build_dir))) from None
        if _is_template_error(e):
            raise SftlabError(f"the chat template failed to render a conversation: {_first_line(e)}") from None
        raise


def _is_template_error(e: BaseException) -> bool:
    try:
        from jinja2 import TemplateError
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False
    return isinstance(e, TemplateError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_template(tokenizer: Any, name: str | None) -> None:
    """Render a two-turn conversation with the tokenizer's chat template; a syntax error or a template
    that raises is a one-line error now, before any data is read."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    label = f"chat template {name}" if name else "the tokenizer's chat template"
    try:
        out = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    except Exception as e:  # jinja2 TemplateSyntaxError / TemplateError / raise_exception(...), TypeError
        raise SftlabError(f"{label} does not render a user/assistant conversation: "
                          f"{type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(out, str) or "hello" not in out:
        raise SftlabError(f"{label} leaves the assistant's reply out of a user/assistant conversation")
