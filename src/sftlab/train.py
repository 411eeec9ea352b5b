"""Supervised fine-tuning on the HF Trainer: configs, wiring, logging, checkpoints and resume.

``sftlab train CONFIG.yaml [--key value ...]`` reads one YAML whose keys are sftlab's own
(:class:`SFTConfig`) plus any ``transformers.TrainingArguments`` field; ``--key value`` overrides
any of them. :func:`load_config` validates everything up front (unknown keys with a suggestion,
wrong types, batch arithmetic, the model spec) so that a typo costs a second, not a preprocessing
pass. :func:`train` then runs preprocessing -> split -> model -> Trainer and writes the output
directory that later stages read (see the contract): the model and tokenizer with the chat template
used in training, ``sftlab_config.yaml``, ``metrics.jsonl``, ``trainer_state.json``,
``train_summary.json`` and ``loss_curve.png``.

Why some things are done by hand rather than left to the Trainer:

* **Resume exactness.** The Trainer restores weights, optimizer, scheduler, RNG and the data
  position, but writes checkpoints in place, so a process killed mid-save leaves a directory that
  ``get_last_checkpoint`` would pick. sftlab writes a completion marker (``sftlab_state.json``, with
  the token counters and elapsed time) *after* the Trainer's files and only resumes from marked
  checkpoints; rotation (``save_total_limit``) is done after the marker too, so a kill can never
  leave zero usable checkpoints behind.
* **Length grouping.** transformers' train-time ``LengthGroupedSampler`` draws its permutation from
  the global RNG, which differs between a fresh and a resumed process; ours is seeded by
  ``(seed, epoch)`` so the resumed epoch sees the same batches, on every rank.
* **Token accounting.** ``tokens`` (real, non-pad) and ``trained_tokens`` (positions with a target)
  are counted per micro-batch and summed over processes at each log, so tokens/s means real work.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import shutil
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftlab.config import merge, parse_overrides, read_config_file, split_overrides, suggest  # noqa: F401
from sftlab.errors import ConfigError, SftlabError
from sftlab.plots import plot_loss_curve
from sftlab.utils import atomic_write_json, atomic_write_text, environment_info

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

MASKING_CHOICES = ("assistant", "reverse")
LOSS_CHOICES = ("reference", "chunked")
PADDING_CHOICES = ("longest", "max_length")
TRUNCATION_CHOICES = ("right", "left")
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
REPORT_TO_CHOICES = ("none", "tensorboard", "wandb")

#: TrainingArguments fields that would put a secret into a config file or log.
SECRET_KEYS = ("hub_token",)

#: sftlab's defaults for TrainingArguments fields the user did not set (the Trainer's own default
#: otherwise). Logging every step gives a loss curve per step; two kept checkpoints bound the disk.
TRAINING_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 2,
    "report_to": "none",
    "prediction_loss_only": True,
    "remove_unused_columns": False,
    "per_device_eval_batch_size": 8,
    "dataloader_num_workers": 0,
}


@dataclass
class LoraSettings:
    """LoRA adapters through peft. The merged full model is saved at the end (adapter in ``adapter/``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class SFTConfig:
    """sftlab's own training keys; every other key in a train config is a ``TrainingArguments`` field."""

    model: str = ""
    tokenizer: str | None = None
    data: str = ""
    conversation_field: str = "conversations"
    max_samples: int | None = None
    max_rounds: int | None = None
    eval_fraction: float = 0.02
    strict: bool = False
    masking: str = "assistant"
    chat_template: str | None = None
    model_max_length: int = 2048
    truncation: str = "right"
    loss: str = "reference"
    loss_chunk_size: int = 256
    total_batch_size: int | None = None
    padding: str = "longest"
    group_by_length: bool = False
    packing: bool = False
    lora: LoraSettings | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    overwrite_output_dir: bool = False
    num_proc: int = 2
    #: Consumed by ``sftlab run`` (evaluation after training); accepted and ignored here.
    eval: dict | None = None


def _sft_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(SFTConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(SFTConfig)}


def _lora_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(LoraSettings)
    return {f.name: hints[f.name] for f in dataclasses.fields(LoraSettings)}


def _training_fields() -> dict[str, Any]:
    """TrainingArguments field -> type, for validation (only fields the user may set from a config)."""
    from transformers import TrainingArguments

    try:
        hints = typing.get_type_hints(TrainingArguments)
    except Exception:  # pragma: no cover - unresolvable forward refs: fall back to raw annotations
        hints = {}
    out = {}
    for f in dataclasses.fields(TrainingArguments):
        if f.init and not f.name.startswith("_"):
            out[f.name] = hints.get(f.name, f.type)
    return out


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, *, lenient: bool) -> tuple[bool, Any]:
    """Does ``value`` fit annotation ``tp``? Returns (ok, value, converted when ``lenient``).

    Strict pass first, lenient second (see :func:`_check_value`): the lenient pass turns strings such
    as ``2e-5`` into floats, because YAML 1.1 (PyYAML) reads a float without a dot as a string.
    """
    if tp is Any or tp is object:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        for a in args:  # exact matches win over coercions
            ok, v = _coerce(value, a, lenient=False)
            if ok:
                return True, v
        if lenient:
            for a in args:
                ok, v = _coerce(value, a, lenient=True)
                if ok:
                    return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if lenient and isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value) if isinstance(value, int) else value
        if lenient and isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            return False, value
        args = typing.get_args(tp)
        if args and args[0] is not Ellipsis:
            out = []
            for item in value:
                ok, v = _coerce(item, args[0], lenient=lenient)
                if not ok:
                    return False, value
                out.append(v)
            return True, out
        return True, value
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = {m.value for m in tp} | {m.name for m in tp}
        if lenient and value is False and "no" in values:
            return True, "no"  # YAML 1.1 reads `eval_strategy: no` as false
        return (isinstance(value, str) and value in values), value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, dict), value
    return True, value  # complex annotations (callables, configs): leave to TrainingArguments


def _check_value(key: str, value: Any, tp: Any) -> Any:
    ok, v = _coerce(value, tp, lenient=False)
    if not ok:
        ok, v = _coerce(value, tp, lenient=True)
    if not ok:
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return v


def world_size_from_env() -> int:
    """Processes in this job (torchrun/accelerate set WORLD_SIZE), without initialising anything."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def derive_gradient_accumulation(
    total_batch_size: int | None, per_device: int, world_size: int, requested: int | None
) -> int:
    """Gradient accumulation steps so that per_device x world_size x steps == total_batch_size.

    An impossible combination is a :class:`ConfigError` naming the numbers to change, never a silent
    rounding: the effective batch is a hyper-parameter of the recipe.
    """
    if per_device < 1:
        raise ConfigError(f"per_device_train_batch_size must be >= 1, got {per_device}")
    if total_batch_size is None:
        return requested or 1
    if total_batch_size < 1:
        raise ConfigError(f"total_batch_size must be >= 1, got {total_batch_size}")
    unit = per_device * world_size
    if total_batch_size % unit:
        lower = (total_batch_size // unit) * unit
        options = [str(x) for x in (lower, lower + unit) if x > 0]
        divisors = [d for d in range(1, per_device + 1) if total_batch_size % (d * world_size) == 0]
        raise ConfigError(
            f"total_batch_size {total_batch_size} is not divisible by per_device_train_batch_size {per_device} x "
            f"world size {world_size} = {unit}; change total_batch_size to a multiple of {unit} "
            f"(e.g. {' or '.join(options)}) or per_device_train_batch_size to one of {divisors}"
        )
    steps = total_batch_size // unit
    if requested not in (None, steps):
        raise ConfigError(
            f"gradient_accumulation_steps {requested} contradicts total_batch_size {total_batch_size} = "
            f"{per_device} per device x {world_size} processes x {steps}; set only one of them"
        )
    return steps


def _validate_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}{suggest(str(value), list(choices))}")


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> tuple[SFTConfig, dict]:
    """Read, merge and validate a train config; returns ``(sftlab keys, TrainingArguments kwargs)``.

    ``path`` may be None to build a config from ``overrides`` alone (tests, ``sftlab run``). The
    TrainingArguments dict carries sftlab's defaults for unset fields and the derived
    ``gradient_accumulation_steps``; ``output_dir`` defaults to ``runs/<config name>``.
    """
    raw = read_config_file(path) if path is not None else {}
    raw = merge(raw, parse_overrides(overrides))

    ours = _sft_fields()
    theirs = _training_fields()
    valid = sorted(set(ours) | set(theirs))
    sft_kwargs: dict[str, Any] = {}
    ta_kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        if key in SECRET_KEYS:
            raise ConfigError(f"'{key}' must not be set in a config (secrets stay out of files and logs); "
                              "set HF_TOKEN in the environment instead")
        if key in ours:
            if key == "lora":
                sft_kwargs[key] = _lora_from(value)
            elif key == "eval":
                if value is not None and not isinstance(value, dict):
                    raise ConfigError(f"config key 'eval' must be a block of eval settings, got {type(value).__name__}")
                sft_kwargs[key] = value
            else:
                sft_kwargs[key] = _check_value(key, value, ours[key])
        elif key in theirs:
            ta_kwargs[key] = _check_value(key, value, theirs[key]) if value is not None else None
        else:
            raise ConfigError(f"unknown config key '{key}'{suggest(key, valid)}")

    cfg = SFTConfig(**sft_kwargs)
    if not cfg.model:
        raise ConfigError("config key 'model' is required (a hub id, a checkpoint directory, a .gguf file or "
                          "'smollm2-135m-instruct-gguf')")
    if not cfg.data:
        raise ConfigError("config key 'data' is required (a JSON/JSONL file or directory, 'sharegpt' or a hub id)")
    _validate_choice("masking", cfg.masking, MASKING_CHOICES)
    _validate_choice("loss", cfg.loss, LOSS_CHOICES)
    _validate_choice("padding", cfg.padding, PADDING_CHOICES)
    _validate_choice("truncation", cfg.truncation, TRUNCATION_CHOICES)
    _validate_choice("dtype", cfg.dtype, DTYPE_CHOICES)
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    if cfg.model_max_length < 8:
        raise ConfigError(f"model_max_length must be >= 8, got {cfg.model_max_length}")
    for key in ("max_samples", "max_rounds"):
        v = getattr(cfg, key)
        if v is not None and v < 1:
            raise ConfigError(f"{key} must be >= 1 (or null for all), got {v}")
    if cfg.loss_chunk_size < 1:
        raise ConfigError(f"loss_chunk_size must be >= 1, got {cfg.loss_chunk_size}")
    if cfg.packing and cfg.padding == "max_length":
        raise ConfigError("packing: true already fills rows up to model_max_length; drop padding: max_length")

    # Model specs are checked now: a missing path or an absent GGUF package is a config error.
    from sftlab.models import resolve_model

    resolve_model(cfg.model)
    if cfg.tokenizer:
        resolve_model(cfg.tokenizer)

    if "group_by_length" in raw and ta_kwargs.get("train_sampling_strategy") not in (None, "random"):
        raise ConfigError("set either group_by_length or train_sampling_strategy, not both")

    report_to = ta_kwargs.get("report_to", TRAINING_DEFAULTS["report_to"])
    for r in [report_to] if isinstance(report_to, str) or report_to is None else report_to:
        r = "none" if r is None else r
        _validate_choice("report_to", r, REPORT_TO_CHOICES + ("all",))
        if r in ("tensorboard", "wandb"):
            import importlib.util

            mod = "tensorboard" if r == "tensorboard" else "wandb"
            if importlib.util.find_spec(mod) is None and not (
                r == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None
            ):
                raise ConfigError(f"report_to: {r} needs the {mod} package (pip install {mod})")

    for k, v in TRAINING_DEFAULTS.items():
        ta_kwargs.setdefault(k, v)
    if not ta_kwargs.get("output_dir"):
        stem = Path(path).stem if path is not None else "sftlab"
        ta_kwargs["output_dir"] = str(Path("runs") / stem)
    per_device = int(ta_kwargs.get("per_device_train_batch_size") or 8)
    ta_kwargs["per_device_train_batch_size"] = per_device
    ta_kwargs["gradient_accumulation_steps"] = derive_gradient_accumulation(
        cfg.total_batch_size, per_device, world_size_from_env(), ta_kwargs.get("gradient_accumulation_steps")
    )
    if cfg.dtype != "auto" and (ta_kwargs.get("bf16") or ta_kwargs.get("fp16")):
        want = "bf16" if ta_kwargs.get("bf16") else "fp16"
        if want != cfg.dtype:
            raise ConfigError(f"dtype: {cfg.dtype} contradicts {want}: true; set only dtype")
    return cfg, ta_kwargs


def _lora_from(value: Any) -> LoraSettings | None:
    if value is None or value is False:
        return None
    if value is True:
        return LoraSettings()
    if not isinstance(value, dict):
        raise ConfigError(f"config key 'lora' must be a block (r, alpha, dropout, target_modules), got {value!r}")
    fields_ = _lora_fields()
    kwargs = {}
    for k, v in value.items():
        if k not in fields_:
            raise ConfigError(f"unknown lora key '{k}'{suggest(str(k), list(fields_))}")
        kwargs[k] = _check_value(f"lora.{k}", v, fields_[k])
    lora = LoraSettings(**kwargs)
    if lora.r < 1:
        raise ConfigError(f"lora.r must be >= 1, got {lora.r}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {lora.dropout}")
    return lora


def resolved_config_dict(cfg: SFTConfig, training_args: dict[str, Any], extra: dict | None = None) -> dict[str, Any]:
    """The fully resolved config as plain data (for ``sftlab_config.yaml``), secrets left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(SFTConfig):
        v = getattr(cfg, f.name)
        out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    for k, v in sorted(training_args.items()):
        if k in SECRET_KEYS:
            continue
        out[k] = _plain(v)
    if extra:
        out.update(extra)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def valid_keys() -> list[str]:
    """Every key a train config accepts (for ``--help`` and error messages)."""
    return sorted(set(_sft_fields()) | set(_training_fields()))


# --------------------------------------------------------------------------------------------------
# Precision and device
# --------------------------------------------------------------------------------------------------


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX-BF16).

    Without them bf16 autocast on a CPU is emulated and slower than float32, so ``dtype: auto``
    only picks it where the hardware has it.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(dtype: str) -> dict[str, Any]:
    """TrainingArguments flags for ``dtype``: mixed precision keeps float32 master weights.

    ``bf16`` means autocast to bfloat16 for the matmuls with float32 weights and optimizer state; the
    loss is always computed in float32 (``sftlab.loss`` upcasts). ``auto`` picks bf16 on CUDA devices
    that support it and on CPUs with native bf16 instructions, else float32.
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
    flags["precision"] = {"bf16": "bf16 mixed (fp32 weights)", "fp16": "fp16 mixed (fp32 weights)",
                          "fp32": "fp32"}[dtype]
    flags["dtype"] = dtype
    return flags


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Written into a checkpoint after everything else: its presence means the checkpoint is complete.
CHECKPOINT_MARKER = "sftlab_state.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
CONFIG_FILE = "sftlab_config.yaml"
PLOT_FILE = "loss_curve.png"

#: What ``overwrite_output_dir`` removes: sftlab's and the Trainer's outputs, nothing else.
_OUTPUT_PATTERNS = (
    "checkpoint-*", METRICS_FILE, SUMMARY_FILE, CONFIG_FILE, PLOT_FILE, "trainer_state.json", "training_args.bin",
    "config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
    "tokenizer*.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
    "adapter", "runs", "all_results.json", "train_results.json", "eval_results.json",
)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` directory, oldest first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def is_complete_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    return (p / CHECKPOINT_MARKER).is_file() and (p / "trainer_state.json").is_file()


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* checkpoint (one a kill did not interrupt), or None."""
    for _step, p in reversed(list_checkpoints(output_dir)):
        if is_complete_checkpoint(p):
            return p
    return None


def _read_marker(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / CHECKPOINT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _clear_outputs(output_dir: Path) -> None:
    for pattern in _OUTPUT_PATTERNS:
        for p in output_dir.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to ``step`` (the resumed checkpoint) so no step appears twice."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            kept.append(json.dumps(rec))
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (unparseable lines skipped)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# --------------------------------------------------------------------------------------------------
# Data: the Trainer's sampler (length grouping and packing live in sftlab.collate)
# --------------------------------------------------------------------------------------------------


def _make_sampler_class():
    import torch

    from sftlab.collate import length_grouped_indices

    class SeededLengthGroupedSampler(torch.utils.data.Sampler):
        """Length-grouped sampling with a (seed, epoch) generator: reproducible across resume and ranks."""

        def __init__(self, lengths: list[int], batch_size: int, seed: int):
            self.lengths = list(lengths)
            self.batch_size = batch_size
            self.seed = seed
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return len(self.lengths)

        def __iter__(self):
            return iter(length_grouped_indices(self.lengths, self.batch_size, self.seed, self.epoch))

    return SeededLengthGroupedSampler


# --------------------------------------------------------------------------------------------------
# Trainer subclass and callbacks
# --------------------------------------------------------------------------------------------------


def _make_trainer_class():
    import torch
    from transformers import Trainer
    from transformers.trainer_utils import rotate_checkpoints

    from sftlab.loss import make_compute_loss

    Sampler = _make_sampler_class()

    class SFTTrainer(Trainer):
        """The HF Trainer plus sftlab's token accounting, seeded length grouping and safe checkpoints.

        Set after construction: ``sft_loss`` ("reference"/"chunked"), ``sft_chunk_size``,
        ``sft_group_lengths`` (None: the Trainer's sampler), ``sft_save_total_limit``,
        ``sft_offsets`` (counters restored from the resumed checkpoint).
        """

        sft_loss = "reference"
        sft_chunk_size = 256
        sft_group_lengths: list[int] | None = None
        sft_save_total_limit: int | None = None
        sft_offsets: dict[str, float] | None = None

        def _sft_init_counters(self) -> None:
            if getattr(self, "_sft_local", None) is None:
                self._sft_local = {"tokens": 0, "trained_tokens": 0}
                self._sft_session_start = time.time()
                off = self.sft_offsets or {}
                self._sft_last = {"time": self._sft_session_start, "tokens": int(off.get("tokens", 0)),
                                  "trained_tokens": int(off.get("trained_tokens", 0))}

        # -- token accounting -------------------------------------------------------------------
        def training_step(self, model, inputs, num_items_in_batch=None):
            self._sft_init_counters()
            inputs = dict(inputs)
            real = inputs.pop("num_real_tokens", None)
            if real is None:
                mask = inputs.get("attention_mask")
                real = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
            labels = inputs.get("labels")
            trained = (labels[..., 1:] != -100).sum() if labels is not None else 0
            self._sft_local["tokens"] += int(real)
            self._sft_local["trained_tokens"] += int(trained)
            return super().training_step(model, inputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = {k: v for k, v in inputs.items() if k != "num_real_tokens"}
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

        def sft_totals(self) -> dict[str, float]:
            """Global counters (all processes, all sessions). A collective: call on every rank."""
            self._sft_init_counters()
            t = torch.tensor([self._sft_local["tokens"], self._sft_local["trained_tokens"]],
                             dtype=torch.long, device=self.args.device)
            if self.accelerator.num_processes > 1:
                t = self.accelerator.reduce(t, reduction="sum")
            off = self.sft_offsets or {}
            now = time.time()
            return {
                "tokens": int(off.get("tokens", 0)) + int(t[0]),
                "trained_tokens": int(off.get("trained_tokens", 0)) + int(t[1]),
                "train_seconds": float(off.get("train_seconds", 0.0)) + (now - self._sft_session_start),
                "now": now,
            }

        def log(self, logs, start_time=None):
            if "loss" in logs and "train_runtime" not in logs:
                tot = self.sft_totals()
                dt = max(tot["now"] - self._sft_last["time"], 1e-9)
                logs["tokens"] = tot["tokens"]
                logs["trained_tokens"] = tot["trained_tokens"]
                logs["tokens_per_s"] = round((tot["tokens"] - self._sft_last["tokens"]) / dt, 2)
                logs["trained_tokens_per_s"] = round((tot["trained_tokens"] - self._sft_last["trained_tokens"]) / dt, 2)
                logs["elapsed_s"] = round(tot["train_seconds"], 2)
                self._sft_last = {"time": tot["now"], "tokens": tot["tokens"], "trained_tokens": tot["trained_tokens"]}
            return super().log(logs, start_time)

        # -- loss --------------------------------------------------------------------------------
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.sft_loss == "chunked":
                if getattr(self, "_sft_chunked", None) is None:
                    self._sft_chunked = make_compute_loss("chunked", self.sft_chunk_size)
                return self._sft_chunked(self, model, inputs, return_outputs, num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        # -- sampling ----------------------------------------------------------------------------
        def _get_train_sampler(self, train_dataset=None):
            if self.sft_group_lengths is not None:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return Sampler(self.sft_group_lengths, self.args.per_device_train_batch_size, seed)
            return super()._get_train_sampler(train_dataset)

        # -- checkpoints -------------------------------------------------------------------------
        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            """The Trainer's save, less ``training_args.bin``: a pickle of TrainingArguments that
            sftlab never reads (the resolved config is ``sftlab_config.yaml``), and a file a user
            could be tempted to unpickle. No output of sftlab is a pickle meant for loading."""
            super()._save(output_dir, state_dict=state_dict)
            (Path(output_dir or self.args.output_dir) / "training_args.bin").unlink(missing_ok=True)

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            tot = self.sft_totals()  # collective: every rank is here
            self.accelerator.wait_for_everyone()  # every rank's RNG state is on disk
            if self.args.should_save:
                ckpt = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                atomic_write_json(ckpt / CHECKPOINT_MARKER, {
                    "global_step": self.state.global_step,
                    "epoch": self.state.epoch,
                    "tokens": tot["tokens"],
                    "trained_tokens": tot["trained_tokens"],
                    "train_seconds": round(tot["train_seconds"], 3),
                })
                if self.sft_save_total_limit:
                    rotate_checkpoints(
                        output_dir=self._get_output_dir(trial=trial),
                        save_total_limit=self.sft_save_total_limit,
                        best_model_checkpoint=self.state.best_model_checkpoint,
                        use_mtime=False,
                    )
            self.accelerator.wait_for_everyone()

    return SFTTrainer


def _make_callbacks(metrics_path: Path, is_main: bool):
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    class MetricsJsonlCallback(TrainerCallback):
        """One JSON line per logged training step (and per evaluation), appended and flushed at once."""

        TRAIN_KEYS = ("loss", "learning_rate", "grad_norm", "tokens", "trained_tokens", "tokens_per_s",
                      "trained_tokens_per_s", "elapsed_s")

        def _write(self, rec: dict[str, Any]) -> None:
            if not is_main:
                return
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs and "train_runtime" not in logs:
                rec = {"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 6)}
                for k in self.TRAIN_KEYS:
                    if k in logs:
                        rec[k] = _plain_number(logs[k])
                self._write(rec)
            elif "eval_loss" in logs:
                self._write({"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 6),
                             "eval_loss": _plain_number(logs["eval_loss"])})

    class CompactProgressCallback(ProgressCallback):
        """The Trainer's progress bar, with the latest loss in the bar instead of a printed dict per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or self.training_bar is None or not logs:
                return
            if "loss" in logs and "train_runtime" not in logs:
                post = {"loss": f"{logs['loss']:.4f}"}
                if "learning_rate" in logs:
                    post["lr"] = f"{logs['learning_rate']:.2e}"
                if "tokens_per_s" in logs:
                    post["tok/s"] = f"{logs['tokens_per_s']:.0f}"
                self.training_bar.set_postfix(post, refresh=False)
            elif "eval_loss" in logs:
                self.training_bar.write(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")

    return MetricsJsonlCallback(), CompactProgressCallback


def _plain_number(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------------------------------
# Outputs: summary and loss curve
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------------------


def _say(msg: str, is_main: bool = True) -> None:
    if is_main:
        print(msg, flush=True)


def _end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: ``<|im_end|>`` (ChatML) when the vocabulary has it, and eos."""
    ids: list[int] = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid != unk and tok in tokenizer.get_vocab():
            ids.append(tid)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _prepare_model(cfg: SFTConfig, tokenizer, *, gradient_checkpointing: bool):
    import torch

    from sftlab.models import load_model

    kwargs = {"attn_implementation": cfg.attn_implementation or "sdpa"}
    model = load_model(cfg.model, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code, **kwargs)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    eot = _end_of_turn_ids(tokenizer)
    if eot:
        gen = model.generation_config
        current = gen.eos_token_id
        current = [] if current is None else ([current] if isinstance(current, int) else list(current))
        gen.eos_token_id = list(dict.fromkeys(eot + current))
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    if cfg.lora is not None:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:
            raise ConfigError("lora needs the peft package: pip install peft") from e
        lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
        try:
            model = get_peft_model(model, lc)
        except ValueError as e:
            raise ConfigError(f"lora: {str(e).splitlines()[0]}") from e
        if gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _split(dataset, eval_fraction: float, seed: int):
    n = len(dataset)
    if n == 0:
        raise SftlabError("no usable conversations after preprocessing (see the skipped counts above)")
    if eval_fraction <= 0 or n < 2:
        return dataset, None
    n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def train(cfg: SFTConfig, training_args: dict) -> dict:
    """Run one training job end to end and return the train summary (also written to the output dir).

    Resumes from the newest complete checkpoint in ``output_dir`` unless ``overwrite_output_dir``.
    Safe under torchrun: every rank calls this; rank 0 alone writes files.
    """
    import torch
    import transformers
    from accelerate import PartialState
    from transformers import TrainingArguments

    from sftlab.collate import PackedCollator, SFTDataCollator, pack_examples
    from sftlab.loss import compute_loss_from_logits
    from sftlab.models import load_tokenizer
    from sftlab.preprocess import PreprocessConfig, format_stats, preprocess

    wall_start = time.time()
    ta = dict(training_args)
    output_dir = Path(ta["output_dir"])
    ta["output_dir"] = str(output_dir)
    prec = resolve_precision(cfg.dtype)
    for k in ("bf16", "fp16", "use_cpu"):
        if k in prec:
            ta[k] = bool(ta.get(k)) or prec[k]
    seed = int(ta.get("seed", 42))
    ta["seed"] = seed
    if ta.get("data_seed") is None:
        ta["data_seed"] = seed
    save_limit = ta.get("save_total_limit")
    ta["save_total_limit"] = None  # rotation happens after the completion marker (see SFTTrainer)
    group = cfg.group_by_length or ta.get("train_sampling_strategy") == "group_by_length"
    if ta.get("train_sampling_strategy") == "group_by_length":
        ta["train_sampling_strategy"] = "random"
    explicit_resume = ta.pop("resume_from_checkpoint", None)
    has_eval = cfg.eval_fraction > 0
    if not has_eval and ta.get("eval_strategy", "no") not in ("no", None):
        raise ConfigError("eval_strategy needs an eval split: set eval_fraction > 0 (or eval_strategy: no)")
    if has_eval and "eval_strategy" not in ta:
        ta["eval_strategy"] = "epoch"
    if not torch.cuda.is_available():
        ta.setdefault("dataloader_pin_memory", False)
        # Without use_cpu, TrainingArguments ignores a torchrun process group on a CPU-only machine
        # (every process would train alone as rank 0); with it, accelerate runs DDP over gloo.
        ta.setdefault("use_cpu", True)
    if ta.get("gradient_checkpointing"):
        ta.setdefault("gradient_checkpointing_kwargs", {"use_reentrant": False})
    transformers.logging.set_verbosity_warning()
    try:
        args = TrainingArguments(**ta)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid training arguments: {str(e).splitlines()[0]}") from e

    state = PartialState()
    is_main = state.is_main_process
    world = state.num_processes
    if cfg.total_batch_size and args.per_device_train_batch_size * args.gradient_accumulation_steps * world \
            != cfg.total_batch_size:  # WORLD_SIZE was not visible when the config was read
        args.gradient_accumulation_steps = derive_gradient_accumulation(
            cfg.total_batch_size, args.per_device_train_batch_size, world, None)

    # -- output directory: start over, resume, or refuse ------------------------------------------
    lock = None
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_output_dir(output_dir)
        if cfg.overwrite_output_dir:
            _clear_outputs(output_dir)
    state.wait_for_everyone()
    if explicit_resume not in (None, False, True, ""):
        ckpt = Path(str(explicit_resume))
        if not is_complete_checkpoint(ckpt):
            raise ConfigError(f"resume_from_checkpoint {ckpt} is not a complete sftlab checkpoint")
    else:
        ckpt = None if cfg.overwrite_output_dir else latest_checkpoint(output_dir)
    if ckpt is None and not cfg.overwrite_output_dir and (output_dir / SUMMARY_FILE).exists():
        raise ConfigError(f"{output_dir} already holds a finished run without checkpoints; pass "
                          "--overwrite_output_dir to train again, or choose another output_dir")
    metrics_path = output_dir / METRICS_FILE
    resumed_step = 0
    offsets: dict[str, float] = {}
    if is_main:
        done = int(ckpt.name.split("-")[-1]) if ckpt else -1
        for step, p in list_checkpoints(output_dir):  # leftovers of a kill mid-save, or of a later run
            if not is_complete_checkpoint(p) or step > done:
                shutil.rmtree(p, ignore_errors=True)
    if ckpt is not None:
        marker = _read_marker(ckpt)
        resumed_step = int(marker.get("global_step", ckpt.name.split("-")[-1]))
        offsets = {k: marker.get(k, 0) for k in ("tokens", "trained_tokens", "train_seconds")}
        _say(f"Resuming from {ckpt}", is_main)
        if is_main:
            _truncate_metrics(metrics_path, resumed_step)
    elif is_main:
        metrics_path.unlink(missing_ok=True)
    state.wait_for_everyone()

    # -- data ---------------------------------------------------------------------------------------
    tok_spec = cfg.tokenizer or cfg.model
    tokenizer = load_tokenizer(tok_spec, chat_template=cfg.chat_template, trust_remote_code=cfg.trust_remote_code)
    pcfg = PreprocessConfig(
        data=cfg.data, tokenizer=tok_spec, chat_template=cfg.chat_template, conversation_field=cfg.conversation_field,
        masking=cfg.masking, max_length=cfg.model_max_length, truncation=cfg.truncation, max_rounds=cfg.max_rounds,
        max_samples=cfg.max_samples, sample_seed=seed, strict=cfg.strict, num_proc=cfg.num_proc,
    )
    with args.main_process_first(local=False, desc="preprocessing"):
        pre = preprocess(pcfg, output_dir, tokenizer=tokenizer, progress=is_main)
    if is_main:
        try:
            print(format_stats(pre.stats), flush=True)
        except (KeyError, TypeError, ValueError):  # a summary line is not worth failing the run
            pass
    dataset = pre.dataset
    keep = [c for c in ("input_ids", "labels", "attention_mask") if c in dataset.column_names]
    dataset = dataset.select_columns(keep)
    train_ds, eval_ds = _split(dataset, cfg.eval_fraction, seed)
    if cfg.packing:
        from datasets import Dataset

        train_ds = Dataset.from_list(pack_examples(list(train_ds), cfg.model_max_length))
        if eval_ds is not None:
            eval_ds = Dataset.from_list(pack_examples(list(eval_ds), cfg.model_max_length))
        collator: Any = PackedCollator(pad_token_id=tokenizer.pad_token_id)
    else:
        collator = SFTDataCollator(
            pad_token_id=tokenizer.pad_token_id, padding=cfg.padding,
            max_length=cfg.model_max_length if cfg.padding == "max_length" else None,
        )
    if eval_ds is None and args.eval_strategy != "no":
        args.eval_strategy = transformers.trainer_utils.IntervalStrategy.NO
        args.do_eval = False
    lengths = [len(x) for x in train_ds["input_ids"]]
    n_real_train = sum(lengths)

    # -- model and trainer ---------------------------------------------------------------------------
    if cfg.packing and (cfg.attn_implementation or "sdpa") not in ("sdpa", "eager", "flash_attention_2",
                                                                     "flash_attention_3", "flex_attention"):
        raise ConfigError("packing needs attn_implementation sdpa, eager, flex_attention or flash_attention_2")
    model = _prepare_model(cfg, tokenizer, gradient_checkpointing=bool(args.gradient_checkpointing))
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    Trainer = _make_trainer_class()
    metrics_cb, progress_cls = _make_callbacks(metrics_path, is_main)
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator,
        processing_class=tokenizer, compute_loss_func=compute_loss_from_logits, callbacks=[metrics_cb],
    )
    from transformers.trainer_callback import ProgressCallback

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(progress_cls)
    trainer.sft_loss = cfg.loss
    trainer.sft_chunk_size = cfg.loss_chunk_size
    trainer.sft_group_lengths = lengths if group else None
    trainer.sft_save_total_limit = save_limit
    trainer.sft_offsets = offsets

    eff_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    _say(f"sftlab train: {len(train_ds)} train / {len(eval_ds) if eval_ds is not None else 0} eval "
         f"{'packed rows' if cfg.packing else 'conversations'}, {n_real_train} train tokens; model {cfg.model} "
         f"({n_params / 1e6:.1f}M params, {n_trainable / 1e6:.2f}M trainable), {prec['precision']}, loss "
         f"{cfg.loss}, effective batch {eff_batch} = {args.per_device_train_batch_size} x "
         f"{args.gradient_accumulation_steps} accumulation x {world} process(es)", is_main)

    # -- train -------------------------------------------------------------------------------------------
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    except torch.OutOfMemoryError as e:  # pragma: no cover - hardware dependent
        raise SftlabError("out of memory: lower per_device_train_batch_size (total_batch_size keeps the "
                          "effective batch) or model_max_length, or set gradient_checkpointing: true") from e
    totals = trainer.sft_totals()
    # From the Trainer's log history, identical on every rank (an evaluate() on one rank only would hang).
    last_eval_step = max((r.get("step", -1) for r in trainer.state.log_history if "eval_loss" in r), default=-1)
    if eval_ds is not None and args.eval_strategy != "no" and last_eval_step != trainer.state.global_step:
        trainer.evaluate()
    elif eval_ds is not None and args.eval_strategy == "no":
        trainer.evaluate()

    # -- save ----------------------------------------------------------------------------------------------
    base = trainer.model
    if cfg.lora is not None:
        trainer.save_model(str(output_dir / "adapter"))
        base = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    inner = trainer.accelerator.unwrap_model(base)
    inner.config.use_cache = True
    if cfg.lora is not None:
        if is_main:
            inner.save_pretrained(str(output_dir), safe_serialization=True)
            tokenizer.save_pretrained(str(output_dir))
    else:
        trainer.save_model(str(output_dir))  # model + tokenizer (with its chat template), any backend
    trainer.save_state()
    state.wait_for_everyone()

    summary: dict[str, Any] = {}
    if is_main:
        records = read_metrics(metrics_path)
        train_losses = [r["loss"] for r in records if r.get("loss") is not None]
        eval_losses = [r["eval_loss"] for r in records if r.get("eval_loss") is not None]
        final_ckpt = latest_checkpoint(output_dir)
        env = environment_info()
        train_seconds = totals["train_seconds"]
        summary = {
            "device": env.get("device"),
            "world_size": world,
            "precision": prec["precision"],
            "global_step": trainer.state.global_step,
            "max_steps": trainer.state.max_steps,
            "epochs": round(float(trainer.state.epoch or 0.0), 4),
            "num_train_examples": len(train_ds),
            "num_eval_examples": len(eval_ds) if eval_ds is not None else 0,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "effective_batch_size": eff_batch,
            "tokens": totals["tokens"],
            "trained_tokens": totals["trained_tokens"],
            "train_time_s": round(train_seconds, 2),
            "wall_time_s": round(time.time() - wall_start, 2),  # this invocation, loading and saving included
            "tokens_per_s": round(totals["tokens"] / max(train_seconds, 1e-9), 2),
            "trained_tokens_per_s": round(totals["trained_tokens"] / max(train_seconds, 1e-9), 2),
            "first_loss": train_losses[0] if train_losses else None,
            "final_loss": train_losses[-1] if train_losses else None,
            "best_loss": min(train_losses) if train_losses else None,
            "final_eval_loss": eval_losses[-1] if eval_losses else None,
            "best_eval_loss": min(eval_losses) if eval_losses else None,
            "resumed_from": str(ckpt) if ckpt is not None else None,
            "final_checkpoint": str(final_ckpt) if final_ckpt is not None else None,
            "output_dir": str(output_dir),
            "model": cfg.model,
            "data": cfg.data,
            "loss_kind": cfg.loss,
            "masking": cfg.masking,
            "padding": "packed" if cfg.packing else cfg.padding,
            "group_by_length": bool(group),
            "params": n_params,
            "trainable_params": n_trainable,
            "preprocess": {"cache_hit": pre.cache_hit, "cache_dir": str(pre.cache_dir),
                           **{k: v for k, v in (pre.stats or {}).items() if k in ("records_read", "kept", "skipped",
                                                                                    "truncated", "notes")}},
            "environment": env,
        }
        resolved = resolved_config_dict(cfg, {**training_args, **{
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "bf16": args.bf16, "fp16": args.fp16,
            "seed": seed, "data_seed": ta["data_seed"], "eval_strategy": _plain(args.eval_strategy),
        }}, extra={"world_size": world, "resolved_dtype": prec["dtype"], "sftlab_version": _version()})
        atomic_write_text(output_dir / CONFIG_FILE, "# Fully resolved config of this run (sftlab train).\n"
                          + yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
        atomic_write_json(output_dir / SUMMARY_FILE, summary)
        plot_loss_curve(records, output_dir / PLOT_FILE, title=f"{cfg.model} on {cfg.data}")
        _say(f"sftlab train: done in {summary['wall_time_s']:.0f}s: step {summary['global_step']}, loss "
             f"{_fmt(summary['first_loss'])} -> {_fmt(summary['final_loss'])}"
             f"{'' if summary['final_eval_loss'] is None else ', eval loss ' + _fmt(summary['final_eval_loss'])}, "
             f"{summary['tokens_per_s']:.1f} tokens/s; model saved to {output_dir}", is_main)
    state.wait_for_everyone()
    if lock is not None:
        lock.close()
    return summary


def _lock_output_dir(output_dir: Path):
    """An exclusive lock on ``output_dir`` for this run; two runs writing one directory corrupt each other.

    ``flock`` locks die with their process, so a killed run never leaves a stale lock behind.
    """
    import fcntl

    f = open(output_dir / ".sftlab-train.lock", "w")  # noqa: SIM115 - held until the run ends
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.close()
        raise SftlabError(f"another sftlab train is running in {output_dir}; wait for it to finish or "
                          "choose another output_dir") from e
    return f


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _version() -> str:
    from sftlab import __version__

    return __version__
