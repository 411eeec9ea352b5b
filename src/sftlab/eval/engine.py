"""The continuous-batching engine of greedy generation: a preallocated KV cache, one slot per row.

Why: on a CPU a decoding step costs little more for 64 rows than for 16 (the weights are read once
per step). A static batch keeps stepping until its longest answer ends, with finished rows idling;
here a finished row leaves the batch at once and a waiting prompt takes its place, so the batch stays
full and the number of steps falls to about total tokens / batch.

How: the KV cache is preallocated once (:func:`_slot_cache_class`), one slot per row, as long as the
longest prompt plus ``max_new_tokens``. Live rows always occupy slots ``0..n-1``: a finished row is
replaced by the last live row (one slot's used columns are copied), and waiting prompts are
prefilled in groups of similar length (:func:`_length_buckets`), left-padded, straight into the free
slots ``n..``. Every row keeps its own positions and attends to its own tokens only
(:func:`_slot_attention`), so a row sees exactly what it would see alone (up to float rounding).

:mod:`sftlab.eval.generate` owns prompts, stop tokens, responses and the choice of engine; this module
only turns token ids into token ids, so it imports nothing of sftlab's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


def supports_continuous(model: Any) -> bool:
    """The continuous engine keeps its own preallocated full-attention KV cache, so it is used only
    when every layer of the model would use a plain full-attention ``DynamicLayer`` (Llama, SmolLM2,
    Qwen2, ...); sliding-window or hybrid caches fall back to the static engine."""
    try:
        from transformers import DynamicCache

        layers = DynamicCache(config=model.config).layers
    except Exception:
        return False
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


# Architectures whose causal-LM head is a plain ``lm_head(final_hidden_state)`` (no logit scaling or
# soft-capping): for these the engine runs the decoder and the head itself, and can compute the head
# in float32 (see :class:`_Head`).
_PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo2", "smollm3"})


class _Head:
    """Greedy next-token choice from the last hidden state of each row.

    With a bf16 model the logits come out of the head rounded to bf16: at typical logit sizes (10-30)
    that is a step of 0.06-0.12, so near-ties become exact ties and ``argmax`` silently prefers the
    lower token id. Computing the head in float32 (a float32 copy of its weight, from the bf16 values)
    keeps the full resolution for a small share of the step time. A float32 model is untouched.
    """

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        model_type = getattr(model.config, "model_type", None)
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.split = (model_type in _PLAIN_HEAD_TYPES and decoder is not None
                      and type(head) is torch.nn.Linear)  # not a wrapped (e.g. LoRA) head
        self.decoder = decoder
        self.head = head  # called as the module itself when already float32 (hooks see it)
        self.weight = self.bias = None
        if self.split and head.weight.dtype != torch.float32:
            self.weight = head.weight.float()
            if getattr(head, "bias", None) is not None:
                self.bias = head.bias.float()

    def __call__(self, **inputs: Any):
        """Run the model on ``inputs`` and return the greedy token of each row's last position."""
        import torch

        if not self.split:
            return self.model(**inputs, logits_to_keep=1).logits[:, -1, :].float().argmax(dim=-1)
        hidden = self.decoder(**inputs).last_hidden_state[:, -1:, :]
        if self.weight is None:
            return self.head(hidden)[:, -1, :].float().argmax(dim=-1)
        return torch.nn.functional.linear(hidden[:, -1, :].float(), self.weight, self.bias).argmax(dim=-1)


def _slot_cache_class():
    """Build (once) the ``transformers`` Cache subclass of the continuous engine; transformers is
    imported lazily everywhere in this module, so the class cannot be defined at import time."""
    global _SlotCache
    if _SlotCache is not None:
        return _SlotCache
    import torch
    from transformers.cache_utils import Cache

    class SlotCache(Cache):
        """Preallocated keys and values, ``[slots, kv_heads, capacity, head_dim]`` per layer.

        Each live row owns one slot; its tokens sit at ``[offset, write)`` of that slot (the
        offset is the left padding of the prefill batch it came in with). A decoding step writes
        each row's new key/value at the row's own ``write`` index and attends over the first
        ``length`` columns of the live slots, a view, so nothing is copied or concatenated per step
        (``DynamicCache`` concatenates, copying the whole cache every step). Each row then attends
        to its own columns ``[offset, write]`` only (:func:`_slot_attention`).
        """

        def __init__(self, n_layers: int, slots: int, kv_heads: int, capacity: int, head_dim: int, dtype, device):
            super().__init__(layers=[])
            shape = (slots, kv_heads, capacity, head_dim)
            self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
            self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
            self.capacity = capacity
            self._prefill: tuple[Any, int] | None = None
            self._decode: tuple[Any, Any, int] | None = None

        def start_prefill(self, slots, width: int) -> None:
            """The next forward is a left-padded prefill of ``width`` tokens for rows in ``slots``."""
            self._prefill, self._decode = (slots, width), None

        def start_decode(self, n: int, write, length: int) -> None:
            """The next forward is one token for live slots ``0..n-1``, written at ``write``."""
            self._decode = (torch.arange(n, device=write.device), write, length)
            self._prefill = None

        def update(self, key_states, value_states, layer_idx: int, *args: Any, **kwargs: Any):
            kb, vb = self.keys[layer_idx], self.values[layer_idx]
            if self._prefill is not None:
                slots, width = self._prefill
                kb[slots, :, :width] = key_states
                vb[slots, :, :width] = value_states
                return key_states, value_states  # a prompt attends to itself only
            rows, write, length = self._decode
            kb[rows, :, write] = key_states[:, :, 0]
            vb[rows, :, write] = value_states[:, :, 0]
            n = rows.shape[0]
            return kb[:n, :, :length], vb[:n, :, :length]

        def move(self, src: int, dst: int, length: int) -> None:
            """Copy slot ``src``'s first ``length`` columns to slot ``dst`` (compaction)."""
            for kb, vb in zip(self.keys, self.values, strict=True):
                kb[dst, :, :length] = kb[src, :, :length]
                vb[dst, :, :length] = vb[src, :, :length]

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return 0  # positions and masks are always passed explicitly

    _SlotCache = SlotCache
    return SlotCache


_SlotCache: Any = None


#: Per-row ``(first, end)`` cache columns of the decoding step in progress (set by the engine).
_decode_spans: list[tuple[int, int]] | None = None
SLOT_ATTENTION = "sftlab_slots"


def _slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of the continuous engine: each row attends to exactly its own cache columns.

    Why: the live rows' views of the cache are as long as the longest row, and a mask hides the
    rest; with answers of up to 512 tokens next to freshly refilled prompts about half of those
    columns are masked, and decoding attention (memory-bound) is the largest cost of a step. One
    unmasked attention per row over its own span reads only real keys and values, and is what the
    row computes alone. Prefill (several query positions) goes to transformers' SDPA with the mask.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = _decode_spans
    if spans is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    n, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    # grouped-query attention: query head h uses key/value head h // (heads // kv_heads)
    q = query.reshape(n, kv_heads, heads // kv_heads, dim)
    out = query.new_empty(n, kv_heads, heads // kv_heads, dim)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for r, (a, b) in enumerate(spans):  # 4-d slices: 3-d inputs miss the fused CPU kernel
        out[r : r + 1] = sdpa(q[r : r + 1], key[r : r + 1, :, a:b], value[r : r + 1, :, a:b], scale=scaling)
    return out.reshape(n, 1, heads, dim), None


def _register_slot_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SLOT_ATTENTION, _slot_attention)


def _cache_geometry(model: Any) -> tuple[int, int, int]:
    """``(layers, kv_heads, head_dim)`` of a decoder-only transformer's KV cache."""
    c = model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return c.num_hidden_layers, getattr(c, "num_key_value_heads", None) or heads, head_dim


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


#: Batch size of the continuous engine when none is given: on a CPU a decoding step's cost grows
#: slowly with the number of rows up to about this many (weights are read once per step).
AUTO_BATCH_SIZE = 64
#: Share of the currently available memory the preallocated KV cache may take.
KV_MEMORY_SHARE = 0.25


def auto_batch_size(model: Any, capacity: int, *, cap: int = AUTO_BATCH_SIZE) -> int:
    """How many rows the continuous engine runs at once by default: ``cap`` (64), fewer when the
    preallocated KV cache (``capacity`` tokens per row) would take over a quarter of the memory
    available now, and on an accelerator whatever its free memory allows, up to ``cap``."""
    import torch

    layers, kv_heads, head_dim = _cache_geometry(model)
    dtype = next(model.parameters()).dtype
    per_row = 2 * layers * kv_heads * head_dim * capacity * torch.tensor([], dtype=dtype).element_size()
    device = model_device(model)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = _available_memory_bytes()
    if not free:
        return min(cap, 16)
    return max(1, min(cap, int(free * KV_MEMORY_SHARE // per_row)))


#: A prefill group grows while its padded size stays within this factor of its real tokens.
PREFILL_PADDING_SLACK = 1.15


def _length_buckets(ids: list[list[int]]) -> list[slice]:
    """Split prompts sorted longest first into consecutive groups that are prefilled together.

    Why: a prefill is compute-bound, and left padding to the group's longest prompt is computed like
    real tokens. Prompt lengths in IFEval range over 2-3x, so one prefill of 64 prompts would spend a
    third of its time on padding; groups of similar length spend little, at the price of a few more
    (cheap) forward calls.
    """
    groups: list[slice] = []
    start, total = 0, 0
    for i, x in enumerate(ids):
        width = len(ids[start])
        if i > start and width * (i - start + 1) > PREFILL_PADDING_SLACK * (total + len(x)):
            groups.append(slice(start, i))
            start, total = i, 0
        total += len(x)
    groups.append(slice(start, len(ids)))
    return groups


def model_device(model: Any):
    """The device of the model's first parameter (CPU for a model without any)."""
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@dataclass
class _Batch:
    """The live rows of the engine: slot ``i`` holds ``rows[i]``, its tokens at cache columns
    ``[offset[i], write[i])`` and its next input token ``pending[i]`` (already chosen)."""

    cache: Any
    head: _Head
    cache_kw: str
    pad_id: int
    offset: Any
    write: Any
    pending: Any
    columns: Any
    rows: list[str] = field(default_factory=list)
    gen_ids: list[list[int]] = field(default_factory=list)

    def refill(self, new: list[str], encoded: dict[str, list[int]]) -> None:
        """Prefill ``new`` prompts (longest first) into the free slots, in groups of similar length."""
        import torch

        n, device = len(self.rows), self.columns.device
        for group in _length_buckets([encoded[p] for p in new]):
            ids = [encoded[p] for p in new[group.start:group.stop]]
            k, width = len(ids), len(ids[0])
            input_ids = torch.full((k, width), self.pad_id, dtype=torch.long)
            pad = torch.tensor([width - len(x) for x in ids], dtype=torch.long)
            for r, x in enumerate(ids):
                input_ids[r, width - len(x):] = torch.tensor(x, dtype=torch.long)
            input_ids, pad = input_ids.to(device), pad.to(device)
            col = self.columns[:width]
            # causal and not padding; the diagonal stays visible so that padding rows attend to
            # something (an all-masked row would give NaN keys and values)
            mask = (col[None, :, None] >= col[None, None, :]) & (col[None, None, :] >= pad[:, None, None])
            mask |= torch.eye(width, dtype=torch.bool, device=device)
            positions = (col[None, :] - pad[:, None]).clamp_(min=0)
            self.cache.start_prefill(torch.arange(n, n + k, device=device), width)
            first = self.head(input_ids=input_ids, attention_mask=mask[:, None], position_ids=positions,
                              use_cache=True, **{self.cache_kw: self.cache})
            self.offset[n:n + k] = pad
            self.write[n:n + k] = width
            self.pending[n:n + k] = first
            n += k
        self.rows += new
        self.gen_ids += [[] for _ in new]

    def take_pending(self, stop_set: set[int], max_new_tokens: int) -> list[int]:
        """Append each row's pending token; the rows that are now finished."""
        done = []
        for i, t in enumerate(self.pending[:len(self.rows)].tolist()):
            self.gen_ids[i].append(t)
            if t in stop_set or len(self.gen_ids[i]) >= max_new_tokens:
                done.append(i)
        return done

    def retire(self, done: list[int]) -> None:
        """Free the finished rows' slots, moving the last live rows into them (slots stay ``0..n-1``)."""
        used = int(self.write[:len(self.rows)].max()) + 1
        for i in reversed(done):  # highest first: the last live row is never a finished one
            last = len(self.rows) - 1
            if i != last:
                self.cache.move(last, i, used)
                for t in (self.offset, self.write, self.pending):
                    t[i] = t[last]
                self.rows[i], self.gen_ids[i] = self.rows[last], self.gen_ids[last]
            self.rows.pop()
            self.gen_ids.pop()

    def step(self) -> None:
        """One decoding step for every live row; each attends to exactly its span (_slot_attention)."""
        global _decode_spans
        n = len(self.rows)
        write, offset = self.write[:n], self.offset[:n]
        self.cache.start_decode(n, write, int(write.max()) + 1)
        _decode_spans = list(zip(offset.tolist(), (write + 1).tolist(), strict=True))
        try:
            self.pending[:n] = self.head(input_ids=self.pending[:n, None], attention_mask=None,
                                         position_ids=(write - offset)[:, None], use_cache=True,
                                         **{self.cache_kw: self.cache})
        finally:
            _decode_spans = None
        self.write[:n] += 1


def _new_batch(model: Any, slots: int, capacity: int, pad_id: int) -> _Batch:
    import inspect

    import torch

    device = model_device(model)
    layers, kv_heads, head_dim = _cache_geometry(model)
    dtype = next(model.parameters()).dtype
    cache = _slot_cache_class()(layers, slots, kv_heads, capacity, head_dim, dtype, device)
    params = inspect.signature(model.forward).parameters
    long = dict(dtype=torch.long, device=device)
    return _Batch(cache=cache, head=_Head(model), cache_kw="cache" if "cache" in params else "past_key_values",
                  pad_id=pad_id, offset=torch.zeros(slots, **long), write=torch.zeros(slots, **long),
                  pending=torch.zeros(slots, **long), columns=torch.arange(capacity, device=device))


def run_continuous(model: Any, encoded: dict[str, list[int]], *, stops: list[int], pad_id: int,
                   max_new_tokens: int, batch_size: int | None, stats: Any,
                   decode: Callable[[list[int]], str], progress: bool) -> Iterator[list[tuple[str, str]]]:
    """Greedy decoding of the prompts ``encoded`` (prompt -> token ids) with continuous batching;
    yields ``[(prompt, response), ...]`` as rows finish. ``stats`` (a ``GenerationStats``) is updated
    as it goes: batch size, new tokens, prompts generated, seconds."""
    import torch
    from tqdm.auto import tqdm

    stop_set = set(stops)
    queue = deque(sorted(encoded, key=lambda p: -len(encoded[p])))
    model.eval()
    capacity = max(len(x) for x in encoded.values()) + max_new_tokens
    slots = min(batch_size or auto_batch_size(model, capacity), len(encoded))
    stats.batch_size = slots
    batch = _new_batch(model, slots, capacity, pad_id)
    _register_slot_attention()
    attn_impl = model.config._attn_implementation
    bar = tqdm(total=len(encoded), desc="generate", unit="prompt", disable=not progress, dynamic_ncols=True)
    t_start = time.perf_counter()
    last_update = 0.0
    try:
        model.config._attn_implementation = SLOT_ATTENTION  # restored below
        with torch.inference_mode():
            while queue or batch.rows:
                if queue and len(batch.rows) < slots:  # refill the free slots n..
                    batch.refill([queue.popleft() for _ in range(min(slots - len(batch.rows), len(queue)))], encoded)
                done = batch.take_pending(stop_set, max_new_tokens)
                stats.new_tokens += len(batch.rows)
                finished = [(batch.rows[i], decode(batch.gen_ids[i])) for i in done]
                if done:
                    batch.retire(done)
                if batch.rows:
                    batch.step()
                now = time.perf_counter()
                stats.seconds = now - t_start
                if finished:
                    stats.n_generated += len(finished)
                    bar.update(len(finished))
                if finished or now - last_update > 1.0:
                    last_update = now
                    bar.set_postfix_str(f"{stats.tokens_per_s:.1f} tok/s, {len(batch.rows)} live")
                if finished:
                    yield finished
    finally:
        model.config._attn_implementation = attn_impl
        stats.seconds = time.perf_counter() - t_start
        bar.close()
