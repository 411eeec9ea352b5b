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

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import DataError, SftlabError
from sftlab.eval import engine
from sftlab.utils import append_jsonl

BACKENDS = ("hf", "vllm")
#: Batch size of the static engine when none is given (it waits for each batch's longest answer).
STATIC_BATCH_SIZE = 16
ENGINES = ("auto", "continuous", "static")

# End-of-turn markers of common chat templates, used when probing the template finds nothing.
KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


DTYPES = ("auto", "float32", "bfloat16", "int8")  # int8: see sftlab.models.int8 (CPU, never chosen by auto)
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16"}


def normalize_dtype(dtype: str) -> str:
    """``auto``, ``float32``, ``bfloat16`` or ``int8`` (``fp32``/``bf16`` accepted as in training configs)."""
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
    from sftlab.models.precision import resolve_precision

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
        if self.dtype == "int8" and self.backend != "hf":
            raise SftlabError("dtype int8 (dynamic quantisation) needs the hf backend on a CPU")

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
    append_jsonl(path, list(records))


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
            from sftlab.models.int8 import INT8, is_int8

            stats.dtype = INT8 if is_int8(model) else str(next(model.parameters()).dtype).removeprefix("torch.")
            if cfg.engine == "continuous" or (cfg.engine == "auto" and engine.supports_continuous(model)):
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
    device = engine.model_device(model)
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


def _generate_continuous(model, tokenizer, prompts: list[str], cfg: GenerationConfig, stats: GenerationStats, *,
                         progress: bool):
    """Greedy decoding with continuous batching (:mod:`sftlab.eval.engine`); yields finished
    ``[(prompt, response), ...]``. This side owns the chat template, stop tokens and decoding."""
    stops = stop_token_ids(tokenizer, model)
    stats.stop_token_ids = tuple(stops)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = {p: encode_prompt(tokenizer, p, cfg.system_prompt) for p in prompts}
    yield from engine.run_continuous(model, encoded, stops=stops, pad_id=pad_id, max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.batch_size, stats=stats, progress=progress,
                              decode=lambda ids: decode_response(tokenizer, ids, stops)[0])


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
    from sftlab.models.loading import resolve_model

    vllm = require_vllm()
    src = resolve_model(model_spec)
    path = str(Path(src.path_or_id) / src.gguf_file) if src.gguf_file else src.path_or_id
    return vllm.LLM(model=path, trust_remote_code=trust_remote_code, seed=0, dtype=normalize_dtype(dtype))
