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
about a fifth of a decoding step's time at SmolLM2's size), or the head is kept exact by rescoring
(``head="rescored"``, :func:`RescoredHead`). The embedding stays float32 (a lookup).
"""

from __future__ import annotations

from typing import Any

#: The generation dtype that means "float32 model, int8 dynamic-quantised linear layers".
INT8 = "int8"


#: How the LM head is computed under int8: quantised like the rest, kept float32, or int8 candidates
#: rescored exactly in float32 (:class:`RescoredHead`).
HEAD_MODES = ("int8", "float32", "rescored")
#: Candidates the int8 head proposes for exact rescoring.
RESCORE_TOP_K = 8


def quantize_int8(model: Any, *, head: str = "int8") -> Any:
    """``model`` (float32, on the CPU) with its linear layers dynamically quantised to int8, in place
    as far as PyTorch allows (the returned model is the one to use). ``head`` (:data:`HEAD_MODES`):
    the LM head in int8 too, kept in float32, or ``rescored``."""
    import warnings

    import torch

    if next(model.parameters()).device.type != "cpu":
        from sftlab.errors import SftlabError

        raise SftlabError("dtype int8 (dynamic quantisation) runs on the CPU only; use bfloat16 or float32 on a GPU")
    model = model.float().eval()
    # torch.ao.quantization announces its move to torchao on every call (a screenful per evaluation);
    # the API still works in the torch this project pins, so those notices are silenced here only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        if head == "int8":
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        quantize_dynamic(model.get_decoder(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        if head == "rescored":
            model.set_output_embeddings(RescoredHead(model.get_output_embeddings()))
        return model


def _rescored_head_class():
    import torch

    class _RescoredHead(torch.nn.Module):
        """A greedy-only LM head: int8 logits pick ``k`` candidates, float32 rescores them exactly.

        Why: the head over SmolLM2's 49,152 tokens is about a fifth of a float32 decoding step and runs
        2.6x faster in int8 (measured on AVX2); its rounding, though, can swap two nearly tied tokens.
        Rescoring the int8 head's top ``k`` with the float32 rows (``k x hidden`` multiply-adds per row)
        gives the float32 argmax whenever it is among them, which int8's ~1% logit error makes all but
        certain. Every other logit is ``-inf``: this head serves greedy decoding only.
        """

        def __init__(self, linear: Any, k: int = RESCORE_TOP_K) -> None:
            from torch.ao.quantization import quantize_dynamic

            super().__init__()
            self.weight = linear.weight  # float32, still tied to the embedding when it was
            self.bias = linear.bias
            self.k = k
            approx = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
            approx.load_state_dict(linear.state_dict())
            self.approx = quantize_dynamic(torch.nn.Sequential(approx), {torch.nn.Linear}, dtype=torch.qint8)

        def forward(self, hidden: Any) -> Any:
            rough = self.approx(hidden)
            top = rough.topk(self.k, dim=-1).indices
            exact = (self.weight[top] @ hidden.unsqueeze(-1)).squeeze(-1)
            if self.bias is not None:
                exact = exact + self.bias[top]
            return torch.full_like(rough, float("-inf")).scatter_(-1, top, exact)

    return _RescoredHead


def RescoredHead(linear: Any, k: int = RESCORE_TOP_K) -> Any:  # noqa: N802 - a class built lazily
    """The greedy-only int8-then-float32 head around ``linear`` (see ``_RescoredHead``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _rescored_head_class()(linear, k)


def is_int8(model: Any) -> bool:
    """True when some layer of ``model`` is a dynamically quantised linear layer."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in model.modules())
