"""Greedy response generation for evaluation: chat template, stop tokens, batching, resume.

Why the details matter:

- *Stop tokens.* A chat model ends its turn with the template's end-of-turn token (``<|im_end|>``
  for ChatML), which is often not the tokenizer's ``eos_token``. Generation that only stops at
  ``eos`` runs on into an invented next turn and ruins length-sensitive IFEval checks. The
  end-of-turn token is read off the template itself by rendering a probe conversation.
- *Batching.* Prompts are sorted by length (longest first) and left-padded so that every row's
  last prompt token sits at the same position and the new tokens line up. The attention mask
  hides the padding and position ids are counted per row, so a padded row sees exactly what it
  would see alone (up to float rounding); the batching test checks greedy outputs match
  one-by-one ones. The default ``continuous`` engine also replaces a finished row with a waiting
  prompt at once, in a preallocated KV cache (see :func:`_generate_continuous`); ``static`` is
  transformers' ``generate()`` batch by batch, which waits for the longest answer of each batch.
- *Precision.* ``dtype: auto`` generates in bfloat16 where the hardware computes it natively (about
  twice float32's matmul rate on a CPU with AVX512-BF16); greedy outputs may then differ where two
  tokens are nearly tied (the README gives the measured effect on IFEval). ``float32`` is exact.
- *Resume.* Evaluating a 135M model on 541 prompts takes a while on a CPU, so finished responses
  are appended to ``responses.jsonl`` at once (flushed and fsynced). A rerun reads it back,
  drops a half-written last line (a run killed mid-write) and generates only what is missing.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import DataError, SftlabError

BACKENDS = ("hf", "vllm")
#: Batch size of the static engine when none is given (it waits for each batch's longest answer).
STATIC_BATCH_SIZE = 16
ENGINES = ("auto", "continuous", "static")

# End-of-turn markers of common chat templates, used when probing the template finds nothing.
KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


DTYPES = ("auto", "float32", "bfloat16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16"}


def normalize_dtype(dtype: str) -> str:
    """``auto``, ``float32`` or ``bfloat16`` (``fp32``/``bf16`` accepted as in training configs)."""
    d = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if d not in DTYPES:
        raise SftlabError(f"unknown generation dtype '{dtype}'; choose one of {', '.join(DTYPES)} (or fp32, bf16)")
    return d


def resolve_dtype(dtype: str) -> str:
    """The dtype generation runs in: ``auto`` is bfloat16 where training's ``dtype: auto`` would pick
    bf16 (a CUDA GPU that supports it, or a CPU with native bf16 instructions), else float32.

    Why bf16 at all: on a CPU with AVX512-BF16 a bf16 matmul runs about twice as fast as a float32
    one and reads half the bytes. Greedy outputs may change where two tokens are nearly tied; the
    README gives the measured effect on IFEval. ``float32`` is the exact path.
    """
    d = normalize_dtype(dtype)
    if d != "auto":
        return d
    from sftlab.precision import resolve_precision

    return "bfloat16" if resolve_precision("auto")["dtype"] == "bf16" else "float32"


@dataclass
class GenerationConfig:
    """How responses are generated; greedy decoding always (IFEval's protocol)."""

    max_new_tokens: int = 1024
    # None: the continuous engine picks a memory-aware size (see auto_batch_size), the static one 16.
    batch_size: int | None = None
    system_prompt: str | None = None
    backend: str = "hf"
    # hf backend only: "continuous" refills finished rows with waiting prompts (needs a plain
    # full-attention KV cache), "static" is transformers' generate() batch by batch; "auto" picks
    # continuous when the model supports it.
    engine: str = "auto"
    # weights and activations: "auto" (bf16 where the hardware has it), "float32" (exact) or "bfloat16";
    # applied when the model is loaded (see resolve_dtype), recorded in generation.json.
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SftlabError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size is not None and self.batch_size < 1:
            raise SftlabError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.backend not in BACKENDS:
            raise SftlabError(f"unknown generation backend '{self.backend}'; choose one of {', '.join(BACKENDS)}")
        if self.engine not in ENGINES:
            raise SftlabError(f"unknown generation engine '{self.engine}'; choose one of {', '.join(ENGINES)}")
        self.dtype = normalize_dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- prompts and stop tokens


def build_messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": prompt})
    return messages


def render_prompt(tokenizer: Any, prompt: str, system_prompt: str | None = None) -> str:
    """The chat-templated text of one user turn plus the generation prompt (``<|im_start|>assistant``)."""
    if not getattr(tokenizer, "chat_template", None):
        raise SftlabError("the tokenizer has no chat template; pass --chat-template chatml (or a .jinja file)")
    return tokenizer.apply_chat_template(
        build_messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True
    )


def encode_prompt(tokenizer: Any, prompt: str, system_prompt: str | None = None) -> list[int]:
    """Token ids of the rendered prompt; the template already holds its special tokens, so add none."""
    text = render_prompt(tokenizer, prompt, system_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn_token(tokenizer: Any) -> str | None:
    """The token the chat template puts right after an assistant message, if it is a single token.

    Rendering ``[user, assistant("<probe>")]`` and looking at what follows the probe works for any
    template (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>``, Gemma's ``<end_of_turn>``) without
    a table of model families.
    """
    probe = "Zq7xW"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}], tokenize=False
        )
    except Exception:  # templates that reject this shape: fall back to the known markers
        text = ""
    if probe in text:
        tail = text.split(probe, 1)[1]
        ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
        if ids:
            first = tokenizer.convert_ids_to_tokens(int(ids[0]))
            if first in _special_tokens(tokenizer):
                return first
    template = getattr(tokenizer, "chat_template", None) or ""
    for marker in KNOWN_END_OF_TURN:
        if marker in template and marker in _special_tokens(tokenizer):
            return marker
    return None


def _special_tokens(tokenizer: Any) -> set[str]:
    toks = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    toks.update(str(t) for t in added.values() if getattr(t, "special", False))
    return toks


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Token ids that end a response: eos (tokenizer and model) plus the template's end-of-turn."""
    ids: list[int] = []

    def add(x: Any) -> None:
        if x is None:
            return
        if isinstance(x, (list, tuple, set)):
            for y in x:
                add(y)
            return
        x = int(x)
        if x >= 0 and x not in ids:
            ids.append(x)

    add(getattr(tokenizer, "eos_token_id", None))
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        add(getattr(gen_cfg, "eos_token_id", None))
    eot = end_of_turn_token(tokenizer)
    if eot is not None:
        add(tokenizer.convert_tokens_to_ids(eot))
    if not ids:
        raise SftlabError("cannot tell where a response ends: the tokenizer has no eos token and the chat "
                          "template no end-of-turn token")
    return ids


def decode_response(tokenizer: Any, new_ids: Sequence[int], stop_ids: Iterable[int]) -> tuple[str, int]:
    """Text of the generated ids up to the first stop token, special tokens removed.

    Returns ``(text, n_generated)`` where ``n_generated`` counts the tokens the model produced for
    this response, the stop token included (what tokens/s is measured on).
    """
    stops = set(stop_ids)
    cut = len(new_ids)
    for i, t in enumerate(new_ids):
        if int(t) in stops:
            cut = i
            break
    n = min(cut + 1, len(new_ids))
    return tokenizer.decode(list(new_ids[:cut]), skip_special_tokens=True), n


# --------------------------------------------------------------------------- responses.jsonl


def read_responses_file(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a ``responses.jsonl`` written by :func:`generate_responses`.

    A last line without its newline, or one that is not valid JSON, is what a run killed while
    writing leaves behind: it is ignored, and with ``repair=True`` cut off the file so that the
    next append starts on a clean line. A broken line anywhere else is real damage and an error.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0  # byte offset just after the last good line
    pos = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        raw = data[pos:end]
        lineno += 1
        complete = nl >= 0
        text = raw.decode("utf-8", errors="replace").strip()
        rec = None
        if text:
            try:
                rec = json.loads(text)
            except json.JSONDecodeError:
                rec = None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not isinstance(
                rec.get("response"), str
            ):
                if end >= len(data):  # the last line: a half-written record
                    break
                raise DataError(str(path), "not a valid response record (JSON with 'prompt' and 'response')",
                                line=lineno)
            if not complete:  # valid JSON but no newline yet: treat as half-written too
                break
            records.append(rec)
        good_end = end
        pos = end
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def append_responses(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Append records as JSON lines and make them durable before returning."""
    if not records:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- generation


@dataclass
class GenerationStats:
    """What the last :func:`generate_responses` call did (for summaries and benchmarks)."""

    n_prompts: int = 0
    n_reused: int = 0
    n_generated: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    stop_token_ids: tuple[int, ...] = ()
    engine: str = ""  # the engine that ran: continuous, static or vllm
    batch_size: int = 0  # rows decoded together (the continuous engine's auto size included)
    dtype: str = ""  # the model's parameter dtype while generating

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop_token_ids"] = list(self.stop_token_ids)
        d["tokens_per_s"] = round(self.tokens_per_s, 2)
        d["seconds"] = round(self.seconds, 2)
        return d



def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    cfg: GenerationConfig,
    *,
    out_path: Path | None = None,
    progress: bool = True,
    keys: Sequence[Any] | None = None,
) -> tuple[list[str], GenerationStats]:
    """Greedy responses to ``prompts`` (user turns), in the order given, and what the call did.

    With ``out_path`` (``responses.jsonl``) the call is resumable: responses already there are
    reused (matched by prompt), and responses are appended as ``{"key", "prompt", "response"}``
    lines as soon as they finish. ``keys`` gives the ``key`` field (default: the index).
    The statistics are returned, not left in a module global, so that two calls (a benchmark's two
    sides, two evaluations in one sweep process) cannot read each other's figures.
    """
    if keys is not None and len(keys) != len(prompts):
        raise ValueError("keys and prompts differ in length")
    key_of = {p: (keys[i] if keys is not None else i) for i, p in enumerate(prompts)}
    done: dict[str, str] = {}
    if out_path is not None:
        for rec in read_responses_file(out_path, repair=True):
            done[rec["prompt"]] = rec["response"]
    todo = list(dict.fromkeys(p for p in prompts if p not in done))  # unique, first-seen order

    stats = GenerationStats(n_prompts=len(prompts), n_reused=len(set(prompts)) - len(todo))
    if todo:
        if cfg.backend == "vllm":
            stats.engine, stats.dtype = "vllm", cfg.dtype
            gen = _generate_vllm(model, tokenizer, todo, cfg, stats)
        else:
            stats.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            if cfg.engine == "continuous" or (cfg.engine == "auto" and supports_continuous(model)):
                stats.engine = "continuous"
                gen = _generate_continuous(model, tokenizer, todo, cfg, stats, progress=progress)
            else:
                stats.engine = "static"
                gen = _generate_hf(model, tokenizer, todo, cfg, stats, progress=progress)
        for batch in gen:
            for p, r in batch:
                done[p] = r
            if out_path is not None:
                append_responses(out_path, [{"key": key_of[p], "prompt": p, "response": r} for p, r in batch])
    return [done[p] for p in prompts], stats


def _generate_hf(model, tokenizer, prompts: list[str], cfg: GenerationConfig, stats: GenerationStats, *,
                 progress: bool):
    """Yield ``[(prompt, response), ...]`` one batch at a time (longest prompts first)."""
    import torch
    from tqdm.auto import tqdm

    stops = stop_token_ids(tokenizer, model)
    stats.stop_token_ids = tuple(stops)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = {p: encode_prompt(tokenizer, p, cfg.system_prompt) for p in prompts}
    # Longest first: the slowest batch (and any out-of-memory) shows up at once, and similar
    # lengths share a batch so little is spent on padding.
    order = sorted(prompts, key=lambda p: -len(encoded[p]))
    device = _model_device(model)
    model.eval()
    batch_size = cfg.batch_size or STATIC_BATCH_SIZE
    stats.batch_size = min(batch_size, len(order))
    bar = tqdm(total=len(order), desc="generate", unit="prompt", disable=not progress, dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            ids = [encoded[p] for p in chunk]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(ids), width), dtype=torch.long)
            for row, x in enumerate(ids):  # left padding
                input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
                attention[row, width - len(x):] = 1
            watcher = _ProgressWatcher(bar, stops, t_start, stats)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=_greedy_config(model, cfg.max_new_tokens, stops, pad_id),
                    stopping_criteria=[watcher],
                )
            new = out[:, width:].tolist()
            batch = []
            for p, row in zip(chunk, new, strict=True):
                text, n = decode_response(tokenizer, row, stops)
                stats.new_tokens += n
                batch.append((p, text))
            stats.n_generated += len(batch)
            stats.seconds = time.perf_counter() - t_start
            watcher.finish_batch()
            bar.update(len(chunk))
            bar.set_postfix_str(f"{stats.tokens_per_s:.1f} tok/s")
            yield batch
    finally:
        stats.seconds = time.perf_counter() - t_start
        bar.close()


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
    device = _model_device(model)
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


def _generate_continuous(model, tokenizer, prompts: list[str], cfg: GenerationConfig, stats: GenerationStats, *,
                         progress: bool):
    """Greedy decoding with continuous batching; yields ``[(prompt, response), ...]`` as rows finish.

    Why: on a CPU a decoding step costs little more for 64 rows than for 16 (the weights are read
    once per step). A static batch keeps stepping until its longest answer ends, with finished rows
    idling; here a finished row leaves the batch at once and a waiting prompt takes its place, so the
    batch stays full and the number of steps falls to about total tokens / batch.

    How: the KV cache is preallocated once (:func:`_slot_cache_class`), one slot per row, as long as
    the longest prompt plus ``max_new_tokens``. Live rows always occupy slots ``0..n-1``: a finished
    row is replaced by the last live row (one slot's used columns are copied), and waiting prompts
    are prefilled in groups of similar length (:func:`_length_buckets`), left-padded, straight into
    the free slots ``n..``. Every row keeps its own positions and attends to its own tokens only, so
    a row sees exactly what it would see alone (up to float rounding).
    """
    import torch
    from tqdm.auto import tqdm

    stops = stop_token_ids(tokenizer, model)
    stats.stop_token_ids = tuple(stops)
    stop_set = set(stops)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = {p: encode_prompt(tokenizer, p, cfg.system_prompt) for p in prompts}
    queue = deque(sorted(prompts, key=lambda p: -len(encoded[p])))
    device = _model_device(model)
    model.eval()
    capacity = max(len(x) for x in encoded.values()) + cfg.max_new_tokens
    slots = min(cfg.batch_size or auto_batch_size(model, capacity), len(prompts))
    stats.batch_size = slots
    layers, kv_heads, head_dim = _cache_geometry(model)
    dtype = next(model.parameters()).dtype
    cache = _slot_cache_class()(layers, slots, kv_heads, capacity, head_dim, dtype, device)
    head = _Head(model)
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    global _decode_spans
    _register_slot_attention()
    attn_impl = model.config._attn_implementation

    long = dict(dtype=torch.long, device=device)
    offset = torch.zeros(slots, **long)  # first used column of each slot
    write = torch.zeros(slots, **long)  # column the pending token's key/value goes to
    pending = torch.zeros(slots, **long)  # next input token of each row (already chosen)
    columns = torch.arange(capacity, device=device)
    rows: list[str] = []
    gen_ids: list[list[int]] = []
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, dynamic_ncols=True)
    t_start = time.perf_counter()
    last_update = 0.0
    try:
        model.config._attn_implementation = SLOT_ATTENTION  # restored below
        with torch.inference_mode():
            while queue or rows:
                n = len(rows)
                if queue and n < slots:  # refill the free slots n..
                    new = [queue.popleft() for _ in range(min(slots - n, len(queue)))]
                    for group in _length_buckets([encoded[p] for p in new]):
                        ids = [encoded[p] for p in new[group.start:group.stop]]
                        k = len(ids)
                        width = len(ids[0])  # longest first
                        input_ids = torch.full((k, width), pad_id, dtype=torch.long)
                        pad = torch.tensor([width - len(x) for x in ids], dtype=torch.long)
                        for r, x in enumerate(ids):
                            input_ids[r, width - len(x):] = torch.tensor(x, dtype=torch.long)
                        input_ids, pad = input_ids.to(device), pad.to(device)
                        col = columns[:width]
                        # causal and not padding; the diagonal stays visible so that padding rows
                        # attend to something (an all-masked row would give NaN keys and values)
                        mask = (col[None, :, None] >= col[None, None, :]) & (col[None, None, :] >= pad[:, None, None])
                        mask |= torch.eye(width, dtype=torch.bool, device=device)
                        positions = (col[None, :] - pad[:, None]).clamp_(min=0)
                        cache.start_prefill(torch.arange(n, n + k, device=device), width)
                        first = head(input_ids=input_ids, attention_mask=mask[:, None], position_ids=positions,
                                     use_cache=True, **{cache_kw: cache})
                        offset[n:n + k] = pad
                        write[n:n + k] = width
                        pending[n:n + k] = first
                        n += k
                    rows += new
                    gen_ids += [[] for _ in new]
                done = []
                for i, t in enumerate(pending[:n].tolist()):
                    gen_ids[i].append(t)
                    if t in stop_set or len(gen_ids[i]) >= cfg.max_new_tokens:
                        done.append(i)
                stats.new_tokens += n
                finished = [(rows[i], decode_response(tokenizer, gen_ids[i], stops)[0]) for i in done]
                if done:
                    used = int(write[:n].max()) + 1
                    for i in reversed(done):  # highest first: the last live row is never a finished one
                        last = len(rows) - 1
                        if i != last:
                            cache.move(last, i, used)
                            for t in (offset, write, pending):
                                t[i] = t[last]
                            rows[i], gen_ids[i] = rows[last], gen_ids[last]
                        rows.pop()
                        gen_ids.pop()
                    n = len(rows)
                if n:  # one decoding step for every live row
                    length = int(write[:n].max()) + 1
                    cache.start_decode(n, write[:n], length)
                    # no mask: each row attends to exactly its span (_slot_attention)
                    _decode_spans = list(zip(offset[:n].tolist(), (write[:n] + 1).tolist(), strict=True))
                    try:
                        pending[:n] = head(input_ids=pending[:n, None], attention_mask=None,
                                           position_ids=(write[:n] - offset[:n])[:, None], use_cache=True,
                                           **{cache_kw: cache})
                    finally:
                        _decode_spans = None
                    write[:n] += 1
                now = time.perf_counter()
                stats.seconds = now - t_start
                if finished:
                    stats.n_generated += len(finished)
                    bar.update(len(finished))
                if finished or now - last_update > 1.0:
                    last_update = now
                    bar.set_postfix_str(f"{stats.tokens_per_s:.1f} tok/s, {n} live")
                if finished:
                    yield finished
    finally:
        model.config._attn_implementation = attn_impl
        stats.seconds = time.perf_counter() - t_start
        bar.close()


def _greedy_config(model, max_new_tokens: int, stops: list[int], pad_id: int):
    """A fresh greedy GenerationConfig: the checkpoint's sampling defaults must not leak in."""
    from transformers import GenerationConfig as HFGenerationConfig

    base = getattr(model, "generation_config", None)
    return HFGenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stops),
        pad_token_id=pad_id,
        bos_token_id=getattr(base, "bos_token_id", None),
        use_cache=True,
        temperature=None,
        top_p=None,
        top_k=None,
    )


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


class _ProgressWatcher:
    """A stopping criterion that never stops anything: it counts live tokens each decoding step so
    the progress bar shows tokens/s while a long batch runs, not only when it ends."""

    def __init__(self, bar, stops: list[int], t_start: float, stats: GenerationStats):
        import torch

        self.bar = bar
        self.stops = torch.tensor(stops)
        self.t_start = t_start
        self.base_tokens = stats.new_tokens
        self.live_tokens = 0
        self.finished = None
        self.last_update = 0.0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        last = input_ids[:, -1]
        if self.finished is None:
            self.finished = torch.zeros_like(last, dtype=torch.bool)
        self.live_tokens += int((~self.finished).sum())
        self.finished |= torch.isin(last, self.stops.to(last.device))
        now = time.perf_counter()
        if now - self.last_update > 1.0:
            self.last_update = now
            rate = (self.base_tokens + self.live_tokens) / max(now - self.t_start, 1e-9)
            self.bar.set_postfix_str(f"{rate:.1f} tok/s")
        return torch.zeros_like(last, dtype=torch.bool)

    def finish_batch(self) -> None:
        self.finished = None


def _generate_vllm(model, tokenizer, prompts: list[str], cfg: GenerationConfig, stats: GenerationStats):
    """vLLM backend: ``model`` is a ``vllm.LLM``; one call, vLLM batches internally."""
    vllm = require_vllm()
    stops = stop_token_ids(tokenizer)
    stats.stop_token_ids = tuple(stops)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens, stop_token_ids=stops,
                                 skip_special_tokens=True)
    texts = [render_prompt(tokenizer, p, cfg.system_prompt) for p in prompts]
    t0 = time.perf_counter()
    outs = model.generate([{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts],
                          params)
    stats.seconds = time.perf_counter() - t0
    batch = []
    for p, o in zip(prompts, outs, strict=True):
        stats.new_tokens += len(o.outputs[0].token_ids)
        batch.append((p, o.outputs[0].text))
    stats.n_generated = len(batch)
    yield batch


def require_vllm():
    """Import vLLM, or explain why the vllm backend cannot run here."""
    try:
        import vllm  # type: ignore[import-not-found]
    except ImportError as e:
        raise SftlabError("backend 'vllm' needs vLLM (pip install 'sftlab[vllm]') and a CUDA GPU; "
                          "use --backend hf on this machine") from e
    import torch

    if not torch.cuda.is_available():
        raise SftlabError("backend 'vllm' needs a CUDA GPU and none is available; use --backend hf")
    return vllm


def load_vllm_model(model_spec: str, *, trust_remote_code: bool = False, dtype: str = "auto"):
    """A ``vllm.LLM`` for any model spec sftlab resolves (GGUF files included); ``dtype`` as
    :class:`GenerationConfig` (``auto`` lets vLLM choose)."""
    from sftlab.models import resolve_model

    vllm = require_vllm()
    src = resolve_model(model_spec)
    path = str(Path(src.path_or_id) / src.gguf_file) if src.gguf_file else src.path_or_id
    return vllm.LLM(model=path, trust_remote_code=trust_remote_code, seed=0, dtype=normalize_dtype(dtype))
