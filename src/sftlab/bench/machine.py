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
    import torch

    n = 1024 if quick else 2048
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "matmul_n": n,
        "matmul_gflops_fp32": round(matmul_gflops(n, "float32"), 1),
        "matmul_gflops_bf16": round(matmul_gflops(n, "bfloat16"), 1),
    }
    return info
