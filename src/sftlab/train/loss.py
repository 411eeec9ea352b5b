"""Token-level causal-LM cross-entropy, written from first principles, and a chunked variant.

Two ways to get the same number:

* :func:`cross_entropy_loss` takes full logits ``(batch, seq, vocab)``. It is the reference: a
  log-sum-exp minus the target logit, in float32 (float64 for float64 inputs), summed over the positions whose label is not
  ``-100`` and divided by ``num_items_in_batch``.
* :func:`chunked_cross_entropy_loss` takes the final hidden states and the output projection and
  never builds the ``seq x vocab`` logits: a custom autograd function walks the target positions
  chunk by chunk, keeps only one log-sum-exp per position for backward, and recomputes each chunk's
  logits there. Peak memory is one chunk of logits (plus the weight's gradient, which any method pays).

Why ``num_items_in_batch`` and not a per-batch mean: with gradient accumulation (and DDP), the HF
Trainer counts the target tokens of *all* micro-batches of one optimizer step (and all processes) and
hands that count to every micro-batch. Dividing each micro-batch's *sum* by that global count makes
the accumulated gradient exactly the gradient of the token mean over the whole step. A per-micro-batch
mean would over-weight the tokens of short micro-batches.

Per-token weights (message ``weight`` keys, a ``weights`` column in the batch): each token's term
is multiplied by its weight and the weighted *sum* is still divided by ``num_items_in_batch``, which
still counts target tokens (labels other than -100), not weights. Numerator and denominator both
add up over micro-batches and processes exactly as before, so accumulation stays exact; a weight of
2.0 counts a token twice as much as a plain one, and data whose weights are all 1.0 gets the plain
loss. (Dividing by the sum of weights instead would need the Trainer to count weights.)

Trainer wiring (transformers 5.x, checked against 5.24's ``trainer.py``):

* ``Trainer(compute_loss_func=compute_loss_from_logits)``: the Trainer pops ``labels`` before the
  forward pass (so the model computes no loss of its own), counts ``labels[..., 1:] != -100`` over the
  accumulated micro-batches (gathered over processes when ``average_tokens_across_devices``), calls
  ``compute_loss_func(outputs, labels, num_items_in_batch=...)``, multiplies the result by the number
  of processes (DDP then averages gradients, which turns that back into a global token mean) and does
  *not* divide by the accumulation steps, because a ``compute_loss_func`` counts as already scaled.
* ``loss: chunked`` needs a ``Trainer`` subclass whose ``compute_loss`` calls the function returned by
  :func:`make_compute_loss`, which repeats that contract. Construct that Trainer with
  ``compute_loss_func=compute_loss_from_logits`` as well: it is what makes the Trainer count
  ``num_items_in_batch`` for every model and treat the loss as already scaled for accumulation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from sftlab.errors import SftlabError, check_choice
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.train.choices import LOSSES

#: Positions per chunk, tuned with ``sftlab.bench.loss`` (2048 tokens, vocab 49,152, hidden 576, 2 CPU
#: threads): 512 x 49,152 float32 logits are 96 MiB, peak memory 9x below full logits, time ~1.1x;
#: 256 gives 11.6x but ~1.2x the time (smaller matrix products use two threads less well).
DEFAULT_CHUNK_SIZE = 512

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "IGNORE_INDEX",
    "chunked_cross_entropy_loss",
    "chunked_loss_for_model",
    "compute_dtype",
    "compute_loss_from_logits",
    "cross_entropy_loss",
    "make_compute_loss",
]


# --------------------------------------------------------------------------------------------------
# Normalisation shared by both losses
# --------------------------------------------------------------------------------------------------


def _divide_by_items(
    nll_sum: Tensor, num_items_in_batch: int | float | Tensor | None, n_valid: Tensor
) -> Tensor:
    """``nll_sum / num_items_in_batch`` (or ``/ n_valid`` when None), and 0 when the divisor is 0.

    The zero case matters: a micro-batch (or a whole step) with no target token must give a finite
    loss whose gradient is exactly zero. ``torch.where`` routes no gradient to the branch it does not
    pick, and the picked branch never divides by zero, so no NaN appears in forward or backward.
    """
    if num_items_in_batch is None:
        denom = n_valid
    elif isinstance(num_items_in_batch, Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError(
                "num_items_in_batch must be a number or a one-element tensor, got shape "
                f"{tuple(num_items_in_batch.shape)} (torch.nn.DataParallel is not supported; use DDP via torchrun)"
            )
        denom = num_items_in_batch.reshape(())
    else:
        denom = torch.tensor(num_items_in_batch)
    # The count may come from another device (the Trainer counts on its own device).
    denom = denom.to(device=nll_sum.device, dtype=nll_sum.dtype)
    positive = denom > 0
    safe = torch.where(positive, denom, torch.ones_like(denom))
    return torch.where(positive, nll_sum / safe, nll_sum * 0.0)


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype both losses compute in: the widest of float32 and the inputs' dtypes.

    Low-precision inputs (bf16, fp16) are upcast to float32; float64 inputs stay float64, so the
    losses can be checked with ``torch.autograd.gradcheck``.
    """
    out = torch.float32
    for dt in dtypes:
        out = torch.promote_types(out, dt)
    return out


def _shift(labels: Tensor) -> Tensor:
    """Targets for a causal LM: the logits at position t predict the label at t + 1."""
    if labels.dim() < 1:
        raise ValueError("labels must have a sequence dimension")
    return labels[..., 1:]


# --------------------------------------------------------------------------------------------------
# Reference loss on full logits
# --------------------------------------------------------------------------------------------------


def cross_entropy_loss(
    logits: Tensor, labels: Tensor, num_items_in_batch: int | float | Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Mean token cross-entropy of a causal LM from full logits ``(..., seq, vocab)``.

    ``-log softmax(z)[y] = logsumexp(z) - z[y]``: the log-sum-exp subtracts the row maximum before
    exponentiating (``torch.logsumexp`` does), so large logits cannot overflow. Low-precision logits
    are upcast to float32 first (float64 logits stay float64, see :func:`compute_dtype`). Positions
    labelled ``-100`` contribute nothing; the sum is divided by ``num_items_in_batch`` (None: the
    number of valid targets here). Returns a float32 scalar (float64 for float64 logits).

    ``weights`` (same shape as ``labels``, optional) scales each token's term: the loss is then
    ``sum(weight * nll) / num_items_in_batch``, and ``num_items_in_batch`` still counts target
    tokens (labels other than -100), whatever their weights. Both parts add up over micro-batches
    and processes, so gradient accumulation stays exact; weights all 1.0 give the plain loss.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    z = logits[..., :-1, :].to(compute_dtype(logits.dtype))
    y = _shift(labels).to(z.device)
    valid = y != IGNORE_INDEX
    # Any in-range index works for ignored positions: their term is dropped by the where() below.
    safe_y = torch.where(valid, y, torch.zeros_like(y))
    lse = torch.logsumexp(z, dim=-1)
    target = z.gather(-1, safe_y.unsqueeze(-1)).squeeze(-1)
    nll = torch.where(valid, lse - target, torch.zeros_like(lse))
    if weights is not None:
        nll = nll * _shift_weights(weights, labels).to(device=nll.device, dtype=nll.dtype)
    return _divide_by_items(nll.sum(), num_items_in_batch, valid.sum())


def _shift_weights(weights: Tensor, labels: Tensor) -> Tensor:
    """Per-target weights, shifted like the labels (the weight of the token being predicted)."""
    if weights.shape != labels.shape:
        raise ValueError(f"weights {tuple(weights.shape)} and labels {tuple(labels.shape)} do not match")
    return _shift(weights)


def _logits_of(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, tuple | list) and outputs:
        logits = outputs[0]  # the Trainer pops labels, so a tuple output starts with the logits
    if not isinstance(logits, Tensor):
        raise ValueError(f"cannot find logits in model outputs of type {type(outputs).__name__}")
    return logits


def compute_loss_from_logits(
    outputs: Any, labels: Tensor | None, num_items_in_batch: int | float | Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """``Trainer(compute_loss_func=...)`` entry point: the reference loss on the model's logits.

    The Trainer has already popped ``labels`` from the inputs, so the model returned logits only, and
    ``num_items_in_batch`` counts the targets of the whole accumulated step; the Trainer itself then
    multiplies by the process count and does not divide by the accumulation steps.
    """
    if labels is None:
        raise ValueError("compute_loss_from_logits needs labels (is the 'labels' column missing?)")
    return cross_entropy_loss(_logits_of(outputs), labels, num_items_in_batch, weights)


# --------------------------------------------------------------------------------------------------
# Chunked loss from hidden states
# --------------------------------------------------------------------------------------------------


def _no_autocast(device: torch.device):
    """Matmuls here must run in the compute dtype even if the caller is inside an autocast region."""
    return torch.autocast(device_type=device.type, enabled=False)


class _ChunkedNLLSum(torch.autograd.Function):
    """Sum over rows of ``logsumexp(h W^T + b) - (h W^T + b)[y]``, one chunk of rows at a time.

    Inputs are the *valid* rows only: ``h`` is ``(n, hidden)``, ``targets`` is ``(n,)`` with no ``-100``.
    Forward keeps the per-row log-sum-exp (``n`` floats), not the logits. Backward recomputes each
    chunk's logits, turns them into ``softmax - onehot`` in place and accumulates both gradients:
    ``dh = G W`` and ``dW += G^T h`` (``db += sum G``), ``G`` scaled by the incoming gradient.
    Everything runs in :func:`compute_dtype` of the inputs (float32, or float64 for float64 inputs);
    gradients come back in the inputs' dtypes.
    """

    @staticmethod
    def forward(
        ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int,
        token_weights: Tensor | None = None,
    ) -> Tensor:
        n = h.shape[0]
        dtype = compute_dtype(h.dtype, weight.dtype, *(() if bias is None else (bias.dtype,)))
        with torch.no_grad(), _no_autocast(h.device):
            w32 = weight.to(dtype)
            b32 = None if bias is None else bias.to(dtype)
            lse = torch.empty(n, dtype=dtype, device=h.device)
            total = torch.zeros((), dtype=dtype, device=h.device)
            buf = _chunk_buffer(n, chunk_size, w32)
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                z = _chunk_logits(h[start:stop], w32, b32, buf)
                # One (chunk, vocab) buffer: shift by the row max in place, then exponentiate in place.
                row_max = z.amax(dim=-1)
                z.sub_(row_max.unsqueeze(-1))
                target = z.gather(-1, targets[start:stop].unsqueeze(-1)).squeeze(-1)
                lse_c = z.exp_().sum(dim=-1).log_()
                if token_weights is None:
                    total += (lse_c - target).sum()
                else:
                    total += ((lse_c - target) * token_weights[start:stop].to(dtype)).sum()
                lse[start:stop] = lse_c + row_max
                del z
        ctx.save_for_backward(h, weight, bias, targets, lse, token_weights)
        ctx.chunk_size = chunk_size
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        h, weight, bias, targets, lse, token_weights = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        chunk_size = ctx.chunk_size
        dtype = lse.dtype
        with torch.no_grad(), _no_autocast(h.device):
            w32 = weight.to(dtype)
            b32 = None if bias is None else bias.to(dtype)
            scale = grad_total.to(dtype)
            grad_h = torch.empty(h.shape, dtype=dtype, device=h.device) if need_h else None
            grad_w = torch.zeros(w32.shape, dtype=dtype, device=h.device) if need_w else None
            grad_b = torch.zeros(w32.shape[0], dtype=dtype, device=h.device) if need_b else None
            buf = _chunk_buffer(h.shape[0], chunk_size, w32)
            for start in range(0, h.shape[0], chunk_size):
                stop = min(start + chunk_size, h.shape[0])
                h_c = h[start:stop].to(dtype)
                g = _chunk_logits(h_c, w32, b32, buf)
                # softmax = exp(z - lse), in place, minus the one-hot target. The upstream scale is
                # applied once to the (much smaller) results below, not to every chunk of logits.
                g.sub_(lse[start:stop].unsqueeze(-1)).exp_()
                rows = torch.arange(stop - start, device=h.device)
                g[rows, targets[start:stop]] -= 1.0
                if token_weights is not None:
                    g.mul_(token_weights[start:stop].to(dtype).unsqueeze(-1))
                if need_h:
                    torch.mm(g, w32, out=grad_h[start:stop])
                if need_w:
                    grad_w.addmm_(g.t(), h_c)
                if need_b:
                    grad_b += g.sum(dim=0)
                del g
            for grad in (grad_h, grad_w, grad_b):
                if grad is not None:
                    grad.mul_(scale)
        return (
            None if grad_h is None else grad_h.to(h.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
        )


def _chunk_buffer(n: int, chunk_size: int, w32: Tensor) -> Tensor:
    """One reusable (chunk, vocab) buffer in the compute dtype: a fresh multi-MB allocation per chunk
    would be returned to the OS and page-faulted back in every time (glibc mmaps blocks that large)."""
    return torch.empty((min(chunk_size, max(n, 1)), w32.shape[0]), dtype=w32.dtype, device=w32.device)


def _chunk_logits(h: Tensor, w32: Tensor, b32: Tensor | None, buf: Tensor) -> Tensor:
    out = buf[: h.shape[0]]
    h = h.to(buf.dtype)
    if b32 is None:
        return torch.mm(h, w32.t(), out=out)
    return torch.addmm(b32, h, w32.t(), out=out)


def chunked_cross_entropy_loss(
    hidden_states: Tensor,
    weight: Tensor,
    labels: Tensor,
    num_items_in_batch: int | float | Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    bias: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """The loss of :func:`cross_entropy_loss` on ``hidden_states @ weight.T (+ bias)``, without full logits.

    ``hidden_states`` is ``(..., seq, hidden)`` (the final, normed hidden states), ``weight`` the output
    projection ``(vocab, hidden)`` (``lm_head.weight``, possibly the tied embedding), ``labels``
    ``(..., seq)``. Only the shifted positions with a real target are gathered and projected, so
    prompt tokens and padding cost nothing. Gradients flow to ``hidden_states`` and ``weight`` (and
    ``bias``) through ordinary autograd edges, so tied weights, gradient accumulation and DDP's
    gradient hooks behave as with the plain ``lm_head``. ``weights`` scales each token's term as in
    :func:`cross_entropy_loss`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden_states.shape[:-1] != labels.shape:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} and labels {tuple(labels.shape)} do not match"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden_states.shape[-1]:
        raise ValueError(
            f"weight {tuple(weight.shape)} does not project hidden size {hidden_states.shape[-1]}"
        )
    hidden = hidden_states.shape[-1]
    h = hidden_states[..., :-1, :].reshape(-1, hidden)
    y = _shift(labels).reshape(-1).to(h.device)
    valid = y != IGNORE_INDEX
    rows = valid.nonzero().squeeze(-1)
    # index_select's backward scatters the rows' gradients into zeros: masked positions get exactly 0.
    h_valid = h.index_select(0, rows)
    targets = y.index_select(0, rows)
    w_valid = None
    if weights is not None:
        w_valid = _shift_weights(weights, labels).reshape(-1).to(h.device).index_select(0, rows).detach()
    nll_sum = _ChunkedNLLSum.apply(h_valid, weight, bias, targets, int(chunk_size), w_valid)
    return _divide_by_items(nll_sum, num_items_in_batch, rows.new_tensor(rows.numel()))


# --------------------------------------------------------------------------------------------------
# Chunked loss for a (possibly wrapped) HF causal LM
# --------------------------------------------------------------------------------------------------


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare ``*ForCausalLM`` under DDP / torch.compile / peft wrappers (the same objects, not copies).

    peft injects its adapter layers *in place* into the base model, so ``get_base_model()`` is the
    model whose layers already route through LoRA.
    """
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):
            base = model.get_base_model()
            if base is model:
                break
            model = base
        else:
            break
    return model


def _check_plain_projection(base: torch.nn.Module) -> None:
    """Refuse models whose logits are not just ``lm_head(h)``: the chunked loss would silently differ."""
    cfg = getattr(base, "config", None)
    for key in ("final_logit_softcapping", "logit_softcapping"):
        if getattr(cfg, key, None):
            raise SftlabError(
                f"loss: chunked does not support {key} (set in the model config); use loss: reference"
            )
    for key, neutral in (("logit_scale", 1.0), ("logits_scaling", 1.0), ("output_multiplier_scale", 1.0)):
        value = getattr(cfg, key, None)
        if isinstance(value, int | float) and value != neutral:
            raise SftlabError(
                f"loss: chunked does not support {key}={value} (set in the model config); use loss: reference"
            )


def _decoder_of(base: torch.nn.Module) -> torch.nn.Module:
    decoder = None
    if hasattr(base, "get_decoder"):
        try:
            decoder = base.get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            decoder = None
    if decoder is None or decoder is base:
        decoder = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    if not isinstance(decoder, torch.nn.Module) or decoder is base:
        raise SftlabError(
            f"loss: chunked cannot find the decoder of {type(base).__name__}; use loss: reference"
        )
    return decoder


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def chunked_loss_for_model(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    num_items_in_batch: int | float | Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Causal-LM loss of ``model`` on ``inputs`` (which hold ``labels``) without full-vocabulary logits.

    The forward pass goes through the *outermost* module given (DDP, peft, accelerate's autocast
    wrapper all see it: DDP must run its own forward to synchronise gradients, and accelerate puts
    mixed-precision autocast on that forward), asking it for the logits of the last position only
    (``logits_to_keep=1``: ``batch x vocab``, negligible). A forward hook on the inner decoder captures
    its final hidden states, and the chunked loss projects them with ``lm_head.weight`` (tied or not).
    Models whose forward has no ``logits_to_keep`` run their decoder directly (not under DDP).
    """
    if "labels" not in inputs or inputs["labels"] is None:
        raise ValueError("chunked_loss_for_model needs inputs['labels']")
    labels = inputs["labels"]
    forward_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch", "weights")}

    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), Tensor):
        raise SftlabError(
            f"loss: chunked needs an output projection (lm_head) on {type(base).__name__}; use loss: reference"
        )
    _check_plain_projection(base)
    decoder = _decoder_of(base)

    if _accepts(base.forward, "use_cache"):
        forward_inputs["use_cache"] = False  # a KV cache is useless in training and costs memory
    if _accepts(base.forward, "logits_to_keep"):
        captured: list[Any] = []
        handle = decoder.register_forward_hook(lambda _mod, _args, out: captured.append(out))
        try:
            model(**forward_inputs, logits_to_keep=1)
        finally:
            handle.remove()
        if not captured:
            raise SftlabError(
                f"loss: chunked: the decoder of {type(base).__name__} did not run; use loss: reference"
            )
        out = captured[-1]
    else:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            raise SftlabError(
                f"loss: chunked under DDP needs a model whose forward takes logits_to_keep ({type(base).__name__} does not)"
            )
        if not _accepts(decoder.forward, "use_cache"):
            forward_inputs.pop("use_cache", None)
        out = decoder(**forward_inputs)

    hidden_states = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    if hidden_states.shape[:-1] != labels.shape:
        raise SftlabError(
            f"loss: chunked: hidden states {tuple(hidden_states.shape[:-1])} do not line up with labels "
            f"{tuple(labels.shape)} (prompt-learning adapters add virtual tokens); use loss: reference"
        )
    return chunked_cross_entropy_loss(
        hidden_states, head.weight, labels, num_items_in_batch, chunk_size, bias=getattr(head, "bias", None),
        weights=inputs.get("weights"),
    )


# --------------------------------------------------------------------------------------------------
# Trainer.compute_loss replacement
# --------------------------------------------------------------------------------------------------


def make_compute_loss(kind: str = "reference", chunk_size: int = DEFAULT_CHUNK_SIZE) -> Callable[..., Any]:
    """A ``compute_loss(trainer, model, inputs, return_outputs=False, num_items_in_batch=None)`` for a Trainer subclass.

    Use it as::

        loss_fn = make_compute_loss("chunked", 256)
        class MyTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                return loss_fn(self, model, inputs, return_outputs, num_items_in_batch)
        MyTrainer(..., compute_loss_func=compute_loss_from_logits)

    Passing ``compute_loss_func`` too is what makes the Trainer count ``num_items_in_batch`` over the
    whole accumulated step for any model and skip its own division by the accumulation steps.
    Like ``Trainer.compute_loss``, the result is multiplied by the number of processes when the count
    was gathered across them (``average_tokens_across_devices``), because DDP averages gradients.
    For evaluation that needs logits (``compute_metrics`` without ``prediction_loss_only``), the
    chunked kind falls back to the reference path, which has them.
    """
    check_choice("loss", kind, LOSSES)
    if int(chunk_size) < 1:
        raise SftlabError(f"loss chunk_size must be >= 1, got {chunk_size}")

    def compute_loss(trainer, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise ValueError("sftlab's loss needs a 'labels' column in every batch")
        needs_logits = (
            return_outputs
            and getattr(trainer, "compute_metrics", None) is not None
            and not getattr(trainer.args, "prediction_loss_only", False)
        )
        if kind == "chunked" and not needs_logits:
            loss = chunked_loss_for_model(model, inputs, num_items_in_batch, chunk_size)
            outputs: Any = {"loss": loss}
        else:
            forward_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "weights")}
            outputs = model(**forward_inputs)
            loss = compute_loss_from_logits(outputs, inputs["labels"], num_items_in_batch, inputs.get("weights"))
        args = trainer.args
        if getattr(args, "average_tokens_across_devices", False) and num_items_in_batch is not None:
            tp_size = trainer.get_tp_size() if hasattr(trainer, "get_tp_size") else 1
            n_proc = trainer.accelerator.num_processes // max(tp_size, 1)
            loss = loss * (n_proc if args.n_gpu <= 1 else args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    return compute_loss
