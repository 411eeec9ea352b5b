"""What kind of CPU this is, and its measured matmul peak: the line every heavy command starts with.

sftlab's speed depends first on whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX): without
it ``dtype: auto`` falls back to float32, a bf16 matmul is emulated (two orders of magnitude slower)
and every wall time doubles or triples. So the kind is named up front, from ``/proc/cpuinfo``'s flags
only (reading them costs a millisecond; nothing here imports torch), and so is the fp32/bf16 matmul
peak that ``sftlab bench`` measured on this CPU, read from a small JSON cache (never pickle) that the
bench's ``machine`` part writes. ``benchmarks/results/<kind>.json`` keeps one bench run per kind.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Flags that mean native bf16 matmuls (what ``dtype: auto`` needs to pick bf16 on a CPU).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: The peak cache's file name under sftlab's cache root.
PEAK_CACHE = "cpu-peak.json"
#: Where ``sftlab bench --json`` (no file named) keeps one run per CPU kind, relative to the checkout.
RESULTS_DIR = Path("benchmarks") / "results"


@dataclass(frozen=True)
class CpuKind:
    """The CPU's model name, its widest vector unit and whether bf16 is native."""

    model: str
    isa: str  # "amx", "avx512", "avx2", "avx", "neon", "sve" or "generic"
    native_bf16: bool
    cores: int

    @property
    def name(self) -> str:
        """A file-name-safe label, e.g. ``x86-avx2`` or ``x86-avx512-bf16``: one results file per kind."""
        arch = "arm" if self.isa in ("neon", "sve") else "x86" if self.isa != "generic" else platform.machine()
        return f"{arch}-{self.isa}" + ("-bf16" if self.native_bf16 else "")

    def describe(self) -> str:
        bf16 = "native bf16" if self.native_bf16 else "no native bf16: fp32"
        return f"{self.model}, {self.cores} cores, {bf16}"


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's feature flags (``flags`` on x86, ``Features`` on ARM); empty if unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def isa_of(flags: frozenset[str]) -> str:
    """The widest matmul-relevant vector unit the flags announce."""
    if flags & {"amx_bf16", "amx_tile"}:
        return "amx"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    if "sve" in flags:
        return "sve"
    if "asimd" in flags or "neon" in flags:
        return "neon"
    return "generic"


def cpu_kind(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> CpuKind:
    from sftlab.utils import cpu_model

    flags = cpu_flags(cpuinfo)
    return CpuKind(model=cpu_model(), isa=isa_of(flags), native_bf16=bool(flags & BF16_FLAGS),
                   cores=os.cpu_count() or 1)


def results_file(kind: CpuKind) -> Path:
    return RESULTS_DIR / f"{kind.name}.json"


def peak_cache_path() -> Path:
    from sftlab.models.gguf_cache import cache_root

    return cache_root() / PEAK_CACHE


def save_peak(kind: CpuKind, threads: int, fp32_gflops: float, bf16_gflops: float) -> None:
    """Remember what ``sftlab bench`` measured, per CPU (model and kind), for the start line."""
    from sftlab.utils import atomic_write_json, read_json

    path = peak_cache_path()
    try:
        table = read_json(path) if path.exists() else {}
    except Exception:  # a damaged cache is rewritten, never trusted
        table = {}
    if not isinstance(table, dict):
        table = {}
    table[_peak_key(kind)] = {"threads": threads, "fp32_gflops": round(fp32_gflops, 1),
                              "bf16_gflops": round(bf16_gflops, 1), "measured_at": time.strftime("%Y-%m-%d")}
    try:
        atomic_write_json(path, table)
    except OSError:  # a read-only home must not fail the bench
        pass


def cached_peak(kind: CpuKind) -> dict[str, Any] | None:
    """The peak measured on this CPU by an earlier ``sftlab bench``, or None."""
    import json

    try:
        table = json.loads(peak_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = table.get(_peak_key(kind)) if isinstance(table, dict) else None
    return entry if isinstance(entry, dict) and "fp32_gflops" in entry else None


def _peak_key(kind: CpuKind) -> str:
    return f"{kind.name}|{kind.model}"


def start_line(command: str, kind: CpuKind | None = None) -> str:
    """One short line: the command, the CPU's kind and its measured matmul peak (when known)."""
    from sftlab.utils import plural

    kind = kind or cpu_kind()
    peak = cached_peak(kind)
    if peak:
        p = (f"peak fp32 {peak['fp32_gflops']:g}, bf16 {peak['bf16_gflops']:g} GFLOP/s "
             f"({plural(peak['threads'], 'thread')}, {peak['measured_at']})")
    else:
        p = "peak not measured yet (sftlab bench --only machine)"
    return f"sftlab {command}: CPU {kind.name} ({kind.describe()}); {p}"
