"""Generation with int8 weights on CPUs without native bf16 (``--dtype int8``): dynamic quantisation.

Why: on a CPU without AVX512-BF16 or AMX, bf16 is emulated (about 1 GFLOP/s) and ``dtype: auto`` falls
back to float32; decoding then reads every weight as 4 bytes per step. Dynamic int8 quantisation
(PyTorch's ``quantize_dynamic``: weights stored as int8 with one scale per output row, activations
quantised on the fly per batch, fbgemm's AVX2 int8 kernels) reads a quarter of the bytes and runs the
matmuls in int8. It is not the exact path: greedy outputs change where two tokens are nearly tied, so
``int8`` is never chosen by ``auto``; its IFEval fidelity against float32 is measured like bf16's
(prompt-level strict within 2 points on 200+ prompts) before anyone should rely on it.

Activations are quantised with one scale per call, over the whole batch: a row's rounding depends on
the other rows decoded with it, so int8 responses (like bf16's near-ties, unlike float32's) can depend
on batching.

Every ``nn.Linear`` is quantised: the 30 decoder layers' projections and the LM head (49,152 x 576,
about a fifth of a decoding step's FLOPs at SmolLM2's size). The embedding stays float32 (a lookup).
"""

from __future__ import annotations

from typing import Any

#: The generation dtype that means "float32 model, int8 dynamic-quantised linear layers".
INT8 = "int8"


def quantize_int8(model: Any, *, head: bool = True) -> Any:
    """``model`` (float32, on the CPU) with its linear layers dynamically quantised to int8, in place
    as far as PyTorch allows (the returned model is the one to use). ``head=False`` keeps the LM head
    in float32 (the decoder's projections only)."""
    import warnings

    import torch

    if next(model.parameters()).device.type != "cpu":
        from sftlab.errors import SftlabError

        raise SftlabError("dtype int8 (dynamic quantisation) runs on the CPU only; use bfloat16 or float32 on a GPU")
    model = model.float().eval()
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated")
        from torch.ao.quantization import quantize_dynamic

        if head:
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        decoder = model.get_decoder()
        quantize_dynamic(decoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return model


def is_int8(model: Any) -> bool:
    """True when some layer of ``model`` is a dynamically quantised linear layer."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in model.modules())
