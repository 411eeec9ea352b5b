"""Training precision: which mixed-precision flags a ``dtype`` setting means on this machine."""

from __future__ import annotations

from typing import Any

from sftlab.errors import ConfigError

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
PRECISION_LABELS = {"bf16": "bf16 mixed (fp32 weights)", "fp16": "fp16 mixed (fp32 weights)", "fp32": "fp32"}


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX-BF16).

    Without them bf16 autocast on a CPU is emulated and slower than float32, so ``dtype: auto``
    only picks it where the hardware has it.
    """
    from sftlab.models.hardware import BF16_FLAGS, cpu_flags

    return bool(cpu_flags() & BF16_FLAGS)


def resolve_precision(dtype: str) -> dict[str, Any]:
    """TrainingArguments flags for ``dtype``: mixed precision keeps float32 master weights.

    ``bf16`` means autocast to bfloat16 for the matmuls with float32 weights and optimizer state; the
    loss is always computed in float32 (``sftlab.train.loss`` upcasts). ``auto`` picks bf16 on CUDA devices
    that support it and on CPUs with native bf16 instructions, else float32. Returns the flags
    (``bf16``, ``fp16``, ``use_cpu`` when needed) plus ``precision`` (a label) and ``dtype`` (resolved).
    """
    import torch

    cuda = torch.cuda.is_available()
    if dtype == "auto":
        if cuda:
            dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            dtype = "bf16" if cpu_supports_bf16() else "fp32"
    if dtype == "fp16" and not cuda:
        raise ConfigError("dtype: fp16 needs a CUDA GPU; on CPU use dtype: bf16 (or fp32)")
    if dtype == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("dtype: bf16 is not supported by this GPU; use dtype: fp16 or fp32")
    flags: dict[str, Any] = {"bf16": dtype == "bf16", "fp16": dtype == "fp16"}
    if not cuda and dtype == "bf16":
        flags["use_cpu"] = True  # TrainingArguments refuses bf16 without a GPU unless told it is a CPU run
    flags["precision"] = PRECISION_LABELS[dtype]
    flags["dtype"] = dtype
    return flags
