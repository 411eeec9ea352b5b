"""Domains of config values and the output directory, checked where a config is read.

:mod:`sftlab.train.typecheck` says whether a value has the right *type*; this module says whether
it is a sensible *value*: every numeric key of a training config (sftlab's and the
``TrainingArguments`` fields) has a domain (finite, a sign, integer-ness and a sane upper bound),
and an output directory must be creatable and writable before any work starts. Why here and not
in the Trainer: ``learning_rate: .nan`` or ``save_steps: .inf`` otherwise reaches PyTorch and ends
minutes later in an ``OverflowError`` traceback, or worse, trains without a word (``max_grad_norm:
.nan`` silently disables clipping, ``num_train_epochs: -1`` saves an untrained model).

Every refusal reads ``config key 'K' must be <domain>, got <value>``.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import ConfigError, SftlabError

#: Largest value of any numeric key without its own bound (far beyond any real setting).
GENERIC_MAX = 1e12
SEED_MAX = 2**32 - 1
#: Longest file name component / whole path the kernel accepts (Linux NAME_MAX / PATH_MAX).
NAME_MAX = 255
PATH_MAX = 4096
#: Pseudo file systems nothing may be written under.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Domain:
    """A numeric key's allowed values: ``lo`` (inclusive unless ``lo_open``) to ``hi`` (inclusive
    unless ``hi_open``); ``integer`` demands a whole number; ``nullable`` lets ``null`` through."""

    lo: float | None = None
    hi: float | None = GENERIC_MAX
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    nullable: bool = True

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        return f"{kind} {' and '.join(parts)}" if parts else kind

    def admits(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.integer and v != int(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _int(lo: float = 1, hi: float = 1e9, *, nullable: bool = True) -> Domain:
    return Domain(lo=lo, hi=hi, integer=True, nullable=nullable)


def _pos(hi: float = 1e9) -> Domain:
    return Domain(lo=0, lo_open=True, hi=hi, nullable=False)


def _nonneg(hi: float = 1e9) -> Domain:
    return Domain(lo=0, hi=hi, nullable=False)


#: The domain of every numeric key (sftlab's, ``lora.*`` and TrainingArguments'); a numeric key not
#: listed here must still be finite and within +-:data:`GENERIC_MAX`.
DOMAINS: dict[str, Domain] = {
    # optimisation
    "learning_rate": _nonneg(10),
    "weight_decay": _nonneg(10),
    "max_grad_norm": _nonneg(1e6),  # 0: no clipping
    "adam_beta1": Domain(lo=0, hi=1, hi_open=True, nullable=False),
    "adam_beta2": Domain(lo=0, hi=1, hi_open=True, nullable=False),
    "adam_epsilon": Domain(lo=0, lo_open=True, hi=1, nullable=False),
    "label_smoothing_factor": Domain(lo=0, hi=1, hi_open=True, nullable=False),
    "neftune_noise_alpha": Domain(lo=0, hi=1e6),
    # schedule
    "num_train_epochs": _pos(1e6),
    "max_steps": _int(-1, 1e12, nullable=False),  # -1: the epochs decide
    "warmup_steps": _nonneg(1e12),  # < 1: a fraction of the steps
    "logging_steps": _pos(1e12),  # < 1: a fraction of the steps
    "save_steps": _pos(1e12),
    "eval_steps": Domain(lo=0, lo_open=True, hi=1e12),
    "eval_delay": _nonneg(1e12),
    "seed": _int(0, SEED_MAX, nullable=False),
    "data_seed": _int(0, SEED_MAX),
    # batches and processes
    "per_device_train_batch_size": _int(1, 1 << 20, nullable=False),
    "per_device_eval_batch_size": _int(1, 1 << 20, nullable=False),
    "gradient_accumulation_steps": _int(1, 1 << 20, nullable=False),
    "total_batch_size": _int(1, 1 << 30),
    "eval_accumulation_steps": _int(1, 1 << 20),
    "dataloader_num_workers": _int(0, 1024, nullable=False),
    "dataloader_prefetch_factor": _int(1, 1024),
    "num_proc": _int(1, 1024, nullable=False),
    "save_total_limit": _int(0, 1e9),
    "ddp_timeout": _int(1, 1e9, nullable=False),
    "ddp_bucket_cap_mb": _int(1, 1e9),
    "torch_empty_cache_steps": _int(1, 1e12),
    # data and sequence
    "model_max_length": _int(8, 1 << 24, nullable=False),
    "loss_chunk_size": _int(1, 1 << 24, nullable=False),
    "max_samples": _int(1, 1e12),
    "max_rounds": _int(1, 1e9),
    "eval_fraction": Domain(lo=0, hi=1, hi_open=True, nullable=False),
    "ifeval_eval_steps": _int(1, 1e12),
    "ifeval_eval_sample": _int(1, 1e7, nullable=False),
    "ifeval_eval_max_new_tokens": _int(1, 1 << 20, nullable=False),
    # LoRA
    "lora.r": _int(1, 1 << 16, nullable=False),
    "lora.alpha": Domain(lo=0, lo_open=True, hi=1e6, nullable=False),
    "lora.dropout": Domain(lo=0, hi=1, hi_open=True, nullable=False),
}


def check_number(key: str, value: Any) -> None:
    """Refuse a numeric ``value`` outside ``key``'s domain (``null`` where the key takes none)."""
    dom = DOMAINS.get(key)
    if value is None:
        if dom is not None and not dom.nullable:
            raise ConfigError(f"config key '{key}' must be {dom.describe()}, got null")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # a type question, answered by sftlab.train.typecheck
    dom = dom or Domain(lo=-GENERIC_MAX)
    try:
        ok = dom.admits(float(value))
    except OverflowError:  # an int beyond float range
        ok = False
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}... ({len(repr(value))} digits)"
        raise ConfigError(f"config key '{key}' must be {dom.describe()}, got {shown}")


def check_domains(sft: dict[str, Any], training: dict[str, Any]) -> None:
    """Check every numeric key of a config: sftlab's keys (``lora`` as ``lora.*``) and the
    ``TrainingArguments`` fields, as the user gave them."""
    for key, value in {**sft, **training}.items():
        if key == "lora" and isinstance(value, dict):
            for k, v in value.items():
                check_number(f"lora.{k}", v)
        elif not isinstance(value, (dict, list)):
            check_number(key, value)


def check_deepspeed(value: Any) -> None:
    """``deepspeed:`` needs the package and (for a path) an existing file; both are one-line errors."""
    if not value:
        return
    if isinstance(value, str) and not Path(value).is_file():
        raise ConfigError(f"config key 'deepspeed': {value} is not a file (give a DeepSpeed JSON config)")
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("config key 'deepspeed' is set but the deepspeed package is not installed "
                          "(pip install 'sftlab[deepspeed]', or drop the key)")


def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an output directory, or ``None``; creates nothing.

    It must not hold a NUL byte or an over-long name, must not lie under ``/proc``, ``/sys`` or
    ``/dev``, must be a directory if it exists, and its nearest existing ancestor must be a
    writable directory (so that creating it later succeeds).
    """
    text = os.fspath(path)
    if not text:
        return "is empty"
    if "\x00" in text:
        return "holds a NUL byte"
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return "is not encodable as a file name"
    too_long = path_length_problem(text)
    if too_long:
        return too_long
    p = Path(text).expanduser().absolute()
    for root in FORBIDDEN_ROOTS:
        if p == Path(root) or Path(root) in p.parents:
            return f"lies under {root}, where nothing may be written"
    if p.exists():
        if not p.is_dir():
            return "exists and is not a directory"
        if not os.access(p, os.W_OK | os.X_OK):
            return "is not writable"
        return None
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"lies under {parent}, which is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> None:
    """Raise :class:`SftlabError` naming ``path`` when it cannot be an output directory."""
    why = output_dir_problem(path)
    if why is not None:
        raise SftlabError(f"{what} {_shown(os.fspath(path))} {why}")


#: Longest string any config key takes (paths, names, templates); ``system_prompt`` has its own bound.
MAX_STRING_CHARS = 100_000
#: A system prompt longer than this many characters per token of ``model_max_length`` cannot fit the
#: context (no tokenizer's tokens are that long); checked before the tokenizer loads, exactly after.
CHARS_PER_TOKEN_BOUND = 64


def string_problem(text: str) -> str | None:
    """Why a config string is unusable anywhere (a NUL byte, an unpaired surrogate), or None."""
    if "\x00" in text:
        return "holds a NUL byte"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds an unpaired surrogate at character {e.start}"
    return None


#: Keys whose strings are file system paths: an over-long name is refused before the file system is asked.
PATH_KEYS = ("model", "tokenizer", "data", "eval_data", "chat_template", "output_dir", "deepspeed", "logging_dir",
             "ifeval_eval_data", "resume_from_checkpoint", "accelerator_config", "fsdp_config")


def path_length_problem(text: str) -> str | None:
    """Why ``text`` is too long to be a path (PATH_MAX, NAME_MAX in bytes), or None."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) > PATH_MAX:
        return f"is longer than {PATH_MAX} bytes"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"has a name component longer than {NAME_MAX} bytes ({len(longest)})"
    return None


def _check_strings(key: str, value: Any) -> None:
    if isinstance(value, str):
        why = string_problem(value)
        if why is None and key.split(".")[0].split("[")[0] in PATH_KEYS:
            why = path_length_problem(value)
        if why is None and len(value) > MAX_STRING_CHARS and key != "system_prompt":
            why = f"is {len(value):,} characters long (at most {MAX_STRING_CHARS:,})"
        if why:
            raise ConfigError(f"config key '{key}' {why}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(f"{key}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(f"{key}[{i}]", v)


def check_strings(raw: dict[str, Any]) -> None:
    """Refuse a NUL byte or unpaired surrogate in any string of a raw config (keys' values, nested
    blocks and lists), and over-long strings; first, before any value is used as a path or a name."""
    for key, value in raw.items():
        _check_strings(str(key), value)


def check_system_prompt_chars(system_prompt: str | None, max_length: int) -> None:
    """A system prompt that cannot fit ``max_length`` tokens whatever the tokenizer: refused at once."""
    if system_prompt and len(system_prompt) > max_length * CHARS_PER_TOKEN_BOUND:
        raise ConfigError(f"config key 'system_prompt' is {len(system_prompt):,} characters, far longer than the "
                          f"model's context (model_max_length {max_length} tokens)")


def check_system_prompt_tokens(system_prompt: str | None, tokenizer: Any, max_length: int) -> None:
    """The system prompt alone must leave room in ``max_length`` tokens for a conversation; else every
    conversation would be cut inside it and nothing trained (found out only after encoding them all)."""
    if not system_prompt:
        return
    check_system_prompt_chars(system_prompt, max_length)
    n = len(tokenizer(system_prompt, add_special_tokens=False)["input_ids"])
    if n >= max_length:
        raise ConfigError(f"config key 'system_prompt' is {n:,} tokens, no shorter than the context "
                          f"(max_length {max_length} tokens); every conversation would be cut inside it")


def validate_loaded(cfg: Any, training: dict[str, Any]) -> None:
    """Every check of this module on a loaded training config (``cfg``: a ``TrainConfig``)."""
    import dataclasses

    sft = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if sft.get("lora") is not None:
        sft["lora"] = dataclasses.asdict(sft["lora"])
    check_domains(sft, training)
    if cfg.special_text not in ("skip", "keep"):
        raise ConfigError(f"config key 'special_text' must be one of skip, keep; got {cfg.special_text!r}")
    check_system_prompt_chars(cfg.system_prompt, cfg.model_max_length)
    check_deepspeed(training.get("deepspeed"))
    if training.get("output_dir"):
        why = output_dir_problem(str(training["output_dir"]))
        if why:
            raise ConfigError(f"config key 'output_dir': {_shown(str(training['output_dir']))} {why}")


def _shown(path: str) -> str:
    shown = path.replace("\x00", "\\0")
    return shown if len(shown) <= 120 else shown[:60] + "..." + shown[-40:]
