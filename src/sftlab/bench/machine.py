"""The machine the benchmarks ran on, and its measured matmul peak (the denominator of MFU)."""

from __future__ import annotations

import os
import time
from typing import Any

from sftlab.utils import cpu_model


def matmul_gflops(n: int = 2048, dtype: str = "float32", reps: int = 5) -> float:
    """Best-of-``reps`` GFLOP/s of an ``n x n`` by ``n x n`` matmul (2 n^3 flops) on the CPU."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, dtype=dt)
    b = torch.randn(n, n, dtype=dt)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def run(quick: bool = False) -> dict[str, Any]:
    """The machine's facts and measured peak; the peak is also cached for every command's start line."""
    import torch

    from sftlab.models.hardware import cpu_kind, save_peak

    n = 1024 if quick else 2048
    kind = cpu_kind()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_kind": kind.name,
        "cpu_isa": kind.isa,
        "native_bf16": kind.native_bf16,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "matmul_n": n,
        "matmul_gflops_fp32": round(matmul_gflops(n, "float32"), 1),
        # emulated bf16 (no native instructions) runs near 1 GFLOP/s: a smaller matrix measures the same rate
        "matmul_n_bf16": n if kind.native_bf16 else 512,
        "matmul_gflops_bf16": round(matmul_gflops(n if kind.native_bf16 else 512, "bfloat16",
                                                  reps=5 if kind.native_bf16 else 2), 1),
    }
    if info["cuda"] is None:
        save_peak(kind, info["torch_threads"], info["matmul_gflops_fp32"], info["matmul_gflops_bf16"])
    return info
