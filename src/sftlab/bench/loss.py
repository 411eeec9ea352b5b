"""Chunked cross-entropy vs full-vocabulary logits: peak memory growth and time of forward + backward.

Both sides start from the same final hidden states ``h`` (``seq x hidden``) and output projection
``W`` (``vocab x hidden``), both requiring gradients, on one sequence whose every shifted position is
a target (the worst case for the chunked loss, which skips ``-100`` positions):

- naive: ``logits = h @ W.T`` then :func:`sftlab.train.loss.cross_entropy_loss` (full ``seq x vocab`` logits);
- chunked: :func:`sftlab.train.loss.chunked_cross_entropy_loss`.

Peak memory on the CPU: PyTorch's CPU allocations bypass ``tracemalloc``, so we read the process's
resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) after resetting it to the current
RSS (writing ``5`` to ``/proc/self/clear_refs``), and report the growth over the RSS before the call,
after ``malloc_trim(0)`` has handed freed heap pages back (else reusing them would not show).
The method is calibrated in the same run by allocating a tensor of known size (``calibration_*``).
On CUDA, ``torch.cuda.max_memory_allocated`` is used instead. Both sides include the weight's
gradient (``vocab x hidden`` float32, 113 MB for SmolLM2), which no method avoids. Sizes in the
result (``*_mb``) are MiB (2**20 bytes): the full float32 logits of 2048 x 49,152 are 402 MB = 384 MiB.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(key: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0  # kB -> MiB
    raise RuntimeError(f"{key} not in {_STATUS}")


def _hwm_supported() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return _status_mb("VmHWM") > 0
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed malloc memory back to the OS, so that reusing it later shows up as RSS growth.

    Without this, blocks freed by an earlier call stay resident and a later allocation that fits in
    them does not raise the RSS: the growth would be under-counted.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: growth may be under-counted, never over-counted
        pass


def _peak_growth_mb(fn: Callable[[], Any], device: str) -> float:
    """Peak memory above the starting level while ``fn`` runs (its results are dropped afterwards)."""
    import torch

    gc.collect()
    _release_free_heap()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del out
        return (peak - base) / 2**20
    _CLEAR_REFS.write_text("5")  # VmHWM := current RSS
    base = _status_mb("VmRSS")
    out = fn()
    peak = _status_mb("VmHWM")
    del out
    gc.collect()
    return peak - base


def _time_once(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call. CPU time is the steadier figure on a machine
    shared with other jobs: it does not count the time this process waits for a core."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    del out
    return dt, dc


def run(
    quick: bool = False,
    seq_len: int = 2048,
    vocab: int = 49152,
    hidden: int = 576,
    *,
    chunk_size: int | None = None,
    device: str = "cpu",
    reps: int | None = None,
) -> dict[str, Any]:
    """Measure naive vs chunked forward + backward, side by side in this process.

    ``quick`` keeps the shapes (the figures are about them) and only takes fewer timing repetitions.
    Times are medians over ``reps`` interleaved repetitions, wall clock and process CPU time.
    """
    import torch

    from sftlab.train.loss import DEFAULT_CHUNK_SIZE, chunked_cross_entropy_loss, cross_entropy_loss

    chunk = int(chunk_size or DEFAULT_CHUNK_SIZE)
    reps = int(reps or (2 if quick else 5))
    if not device.startswith("cuda") and not _hwm_supported():
        raise RuntimeError("peak-memory measurement needs /proc/self/clear_refs and VmHWM (Linux)")

    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(1, seq_len, hidden, generator=gen) * 1.0).to(device).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) * hidden**-0.5).to(device).requires_grad_()
    labels = torch.randint(0, vocab, (1, seq_len), generator=gen).to(device)

    def naive():
        loss = cross_entropy_loss(h @ w.t(), labels)
        gh, gw = torch.autograd.grad(loss, (h, w))
        return loss.detach(), gh, gw

    def chunked():
        loss = chunked_cross_entropy_loss(h, w, labels, chunk_size=chunk)
        gh, gw = torch.autograd.grad(loss, (h, w))
        return loss.detach(), gh, gw

    # Correctness side by side, and warm-up (thread pools, kernel selection, allocator).
    ln, ghn, gwn = naive()
    lc, ghc, gwc = chunked()
    max_loss_diff = float((ln - lc).abs())
    max_grad_diff = float(max((ghn - ghc).abs().max(), (gwn - gwc).abs().max()))
    del ln, ghn, gwn, lc, ghc, gwc

    # Calibration: a tensor of known size must read as that size.
    calib_mb = 256.0
    calib = _peak_growth_mb(lambda: torch.ones(int(calib_mb * 2**20 / 4), device=device), device)

    naive_mb = _peak_growth_mb(naive, device)
    chunked_mb = _peak_growth_mb(chunked, device)

    times = _interleaved_medians(naive, chunked, reps, device)
    return {
        "seq_len": seq_len,
        "vocab": vocab,
        "hidden": hidden,
        "device": device,
        "chunk_size": chunk,
        "reps": reps,
        "memory_method": "cuda.max_memory_allocated" if device.startswith("cuda") else "VmHWM after clear_refs=5",
        "calibration_expected_mb": calib_mb,
        "calibration_measured_mb": round(calib, 1),
        "full_logits_fp32_mb": round(seq_len * vocab * 4 / 2**20, 1),
        "weight_grad_fp32_mb": round(vocab * hidden * 4 / 2**20, 1),
        "naive_peak_mb": round(naive_mb, 1),
        "chunked_peak_mb": round(chunked_mb, 1),
        "memory_ratio_naive_over_chunked": round(naive_mb / max(chunked_mb, 1e-9), 2),
        **times,
        "torch_threads": torch.get_num_threads(),
        "max_abs_loss_diff": max_loss_diff,
        "max_abs_grad_diff": max_grad_diff,
    }


def _interleaved_medians(naive: Any, chunked: Any, reps: int, device: str) -> dict[str, float]:
    """Median wall and CPU seconds of each side, timed in turn so background load hits both alike."""
    t_naive: list[tuple[float, float]] = []
    t_chunked: list[tuple[float, float]] = []
    for _ in range(reps):
        t_naive.append(_time_once(naive, device))
        t_chunked.append(_time_once(chunked, device))
    naive_s = statistics.median(t for t, _ in t_naive)
    chunked_s = statistics.median(t for t, _ in t_chunked)
    naive_cpu_s = statistics.median(c for _, c in t_naive)
    chunked_cpu_s = statistics.median(c for _, c in t_chunked)
    return {
        "naive_s": round(naive_s, 4),
        "chunked_s": round(chunked_s, 4),
        "time_ratio_chunked_over_naive": round(chunked_s / naive_s, 3),
        "naive_cpu_s": round(naive_cpu_s, 4),
        "chunked_cpu_s": round(chunked_cpu_s, 4),
        "cpu_time_ratio_chunked_over_naive": round(chunked_cpu_s / naive_cpu_s, 3),
    }


if __name__ == "__main__":  # pragma: no cover
    print(run())
