"""``sftlab bench``: sftlab against the naive pipeline, side by side, in one process run.

Each part lives in its own module and exposes ``run(quick: bool) -> dict``:

- ``machine``: CPU model, cores, measured float32 (and bf16) matmul GFLOP/s, the peak that MFU is read against;
- ``preprocess``: fast-path masking vs the prefix re-tokenisation reference (conversations/s, identical outputs);
- ``train``: real tokens/s padding to the longest in a length-grouped batch vs padding to max length;
- ``loss``: chunked cross-entropy vs full-vocabulary logits (peak memory growth and time);
- ``generate``: batched generation vs one prompt at a time (tokens/s, identical greedy outputs).

Figures are ratios measured in the same run on the same machine; nothing here is asserted by tests
except that the suite runs and writes valid JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from sftlab.utils import atomic_write_json

PARTS: tuple[str, ...] = ("machine", "preprocess", "loss", "generate", "train")


def run_suite(*, quick: bool = False, parts: list[str] | None = None, json_path: str | Path | None = None,
              sizes: dict[str, dict[str, Any]] | None = None, out=None) -> dict[str, Any]:
    """Run the chosen parts in order; each result is printed as soon as it is measured.

    ``sizes`` passes keyword arguments to a part's ``run`` (tests shrink the work to tiny shapes).

    A part that fails is recorded with its error and the others still run; the returned dict
    carries ``"errors"`` so the CLI can exit non-zero.
    """
    out = out or sys.stdout
    chosen = list(parts or PARTS)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        from sftlab.errors import SftlabError

        raise SftlabError(f"unknown bench part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    results: dict[str, Any] = {"quick": quick, "provenance": provenance()}
    errors: dict[str, str] = {}
    for name in chosen:
        print(f"== bench {name}{' (quick)' if quick else ''}", file=out, flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"sftlab.bench.{name}")
            res = mod.run(quick=quick, **(sizes or {}).get(name, {}))
        except Exception as e:  # keep measuring the other parts
            errors[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            continue
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        results[name] = res
        if name == "machine":
            results["matmul_gflops"] = res.get("matmul_gflops_fp32")
        _print_part(name, res, out)
        if json_path:  # keep what was measured even if a later part crashes
            atomic_write_json(json_path, {**results, "errors": errors})
    results["errors"] = errors
    if json_path:
        atomic_write_json(json_path, results)
    return results


def provenance() -> dict[str, Any]:
    """Which code produced a result file: sftlab's version and, in a git checkout, the commit (with
    ``-dirty`` when the working tree has changes), so a figure can always be traced to its code."""
    import subprocess

    from sftlab import __version__

    out: dict[str, Any] = {"sftlab_version": __version__, "commit": None,
                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return out
    if commit:
        out["commit"] = commit + ("-dirty" if dirty else "")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)[:120]
    return str(v)


def _print_part(name: str, res: dict[str, Any], out) -> None:
    width = max((len(k) for k in res), default=10)
    for k, v in res.items():
        print(f"  {k:<{width}}  {_fmt(v)}", file=out)
    out.flush()
