"""Configuration files, command-line overrides and the training config schema.

Every sftlab config is a YAML mapping (training, ``sftlab run``, sweeps); every command takes
``--key value`` overrides on top of it. Both are parsed here, once, so that ``--lr 2e-5`` means the
same number to ``train``, ``run`` and ``sweep``.

A training config holds sftlab's own keys (:class:`TrainConfig`) plus any
``transformers.TrainingArguments`` field. :func:`load_config` validates everything up front (unknown
keys with a suggestion, wrong types, batch arithmetic, the model spec) so that a typo costs a second,
not a preprocessing pass. :func:`resolve_training_arguments` then turns the config into the one final
``TrainingArguments`` of a run (sftlab's defaults, the user's keys, derived accumulation, precision and
device flags), built once before training and written whole by :func:`saved_config`.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftlab.errors import ConfigError, check_choice, suggest
from sftlab.models.precision import DTYPE_CHOICES, resolve_precision
from sftlab.prep.pipeline import PreprocessConfig
from sftlab.train.aliases import ALIAS_NAMES, resolve_aliases, without_replaced
from sftlab.train.choices import LOSSES, PADDINGS
from sftlab.train.tracking import validate_report_to
from sftlab.train.typecheck import check_value
from sftlab.train.validate import check_strings, validate_loaded
from sftlab.train.yaml_load import fix_floats as fix_floats
from sftlab.train.yaml_load import load_yaml
from sftlab.train.yaml_load import read_config_file as read_config_file


def parse_value(raw: str) -> Any:
    """One override value: a YAML scalar or flow collection (``1e-4``, ``true``, ``null``, ``[a, b]``)."""
    if raw == "":
        return ""
    try:
        return fix_floats(load_yaml(raw))
    except yaml.YAMLError:
        return raw


def split_overrides(tokens: list[str]) -> list[tuple[str, str]]:
    """``["--lr", "1e-4", "--lora.r=8", "--packing"]`` -> ``[("lr", "1e-4"), ("lora.r", "8"), ("packing", "true")]``.

    The one tokeniser of command-line overrides; values stay raw strings. A flag with no value means
    ``true``; dashes in keys become underscores.
    """
    pairs: list[tuple[str, str]] = []
    items = list(tokens)
    i = 0
    while i < len(items):
        tok = items[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument '{tok}': overrides are written --key value (or --key=value)")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            raw = items[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        pairs.append((key.replace("-", "_"), raw))
    return pairs


def parse_overrides(overrides: list[str] | dict | None, *, nested: bool = True) -> dict[str, Any]:
    """Command-line overrides as a mapping.

    ``["--lr", "1e-4", "--lora.r=8", "--packing"]`` -> ``{"lr": 1e-4, "lora": {"r": 8}, "packing": True}``
    (``nested=False`` keeps dotted keys flat: ``{"lora.r": 8}``, for callers that route keys first).
    A mapping is taken as already parsed.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    flat = {key: parse_value(raw) for key, raw in split_overrides(overrides)}
    return apply_overrides({}, flat) if nested else flat


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` inside nested mappings, creating them as needed."""
    parts = key.split(".")
    cur = cfg
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set '{key}': '{p}' is not a block")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with each (possibly dotted) key of ``overrides`` set."""
    out = copy.deepcopy(cfg)
    for k, v in overrides.items():
        set_dotted(out, k, copy.deepcopy(v))
    return out


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, blocks merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------------
# The training config: sftlab's keys plus TrainingArguments fields
# --------------------------------------------------------------------------------------------------

#: TrainingArguments fields that would put a secret into a config file or log.
SECRET_KEYS = ("hub_token",)
#: TrainingArguments fields that describe one process, not the run: never written, never read back.
PROCESS_KEYS = ("local_rank", "resume_from_checkpoint")
#: Facts ``sftlab_config.yaml`` records next to the config; accepted (and ignored) when it is loaded back.
RECORD_KEYS = ("world_size", "resolved_dtype", "sftlab_version")

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


def _default_chunk_size() -> int:
    from sftlab.train.loss import DEFAULT_CHUNK_SIZE

    return DEFAULT_CHUNK_SIZE


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
class TrainConfig:
    """sftlab's own training keys; every other key in a train config is a ``TrainingArguments`` field."""

    model: str = ""
    tokenizer: str | None = None
    #: One source (a path, ``sharegpt`` or a hub id) or a list of data specs (see ``sftlab.data.specs``).
    data: str | list = ""
    #: Held-out conversations for the eval loss, in the same form as ``data``; replaces ``eval_fraction``.
    eval_data: str | list | None = None
    #: Added as the system message of every conversation that has none.
    system_prompt: str | None = None
    conversation_field: str = "conversations"
    max_samples: int | None = None
    max_rounds: int | None = None
    eval_fraction: float = 0.02
    strict: bool = False
    masking: str = "assistant"
    #: Train on the tokens the template puts after a trained message's content (ChatML: ``<|im_end|>\n``).
    train_on_eos: bool = True
    #: Train on the tokens the template puts before it (ChatML: ``<|im_start|>assistant\n``).
    train_on_role_header: bool = True
    chat_template: str | None = None
    model_max_length: int = 2048
    truncation: str = "right"
    loss: str = "reference"
    loss_chunk_size: int = field(default_factory=_default_chunk_size)
    total_batch_size: int | None = None
    padding: str = "longest"
    group_by_length: bool = False
    packing: bool = False
    lora: LoraSettings | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    #: Message content holding special-token text (``<|im_end|>``): skip the conversation (counted) or keep it.
    special_text: str = "skip"
    overwrite_output_dir: bool = False
    num_proc: int = 2
    #: Verifiable instruction augmentation (sftlab.augment.AugmentConfig's keys), in preprocessing; None: none.
    augment: dict | None = None
    #: Consumed by ``sftlab run`` (evaluation after training); accepted and ignored here.
    eval: dict | None = None
    #: IFEval (and IFBench) on a seeded sample every N steps, into metrics.jsonl (sftlab.train.ifeval_callback).
    ifeval_eval_steps: int | None = None
    ifeval_eval_sample: int = 20
    ifeval_eval_max_new_tokens: int = 256
    ifeval_eval_data: str | None = None
    ifeval_eval_ifbench_sample: int | None = None
    ifeval_eval_ifbench_data: str | None = None


def _dataclass_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


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


def valid_keys() -> list[str]:
    """Every key a train config accepts (for ``--help`` and error messages)."""
    return sorted(set(_dataclass_fields(TrainConfig)) | set(_training_fields()))


def world_size_from_env() -> int:
    """Processes in this job as the launcher announced them (torchrun/accelerate: WORLD_SIZE; MPI:
    PMI_SIZE, OMPI_COMM_WORLD_SIZE, MV2_COMM_WORLD_SIZE), without initialising anything."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        try:
            n = int(os.environ.get(var, "0"))
        except ValueError:
            continue
        if n > 0:
            return n
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
        divisors = [d for d in range(1, min(per_device, total_batch_size) + 1) if total_batch_size % (d * world_size) == 0]
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


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> tuple[TrainConfig, dict]:
    """Read, merge and validate a train config; returns ``(sftlab keys, TrainingArguments kwargs)``.

    ``path`` may be None to build a config from ``overrides`` alone (tests, ``sftlab run``). The
    TrainingArguments dict carries sftlab's defaults for unset fields and the derived
    ``gradient_accumulation_steps``; ``output_dir`` defaults to ``runs/<config name>``. A saved
    ``sftlab_config.yaml`` loads back as a config (its record keys are ignored).
    """
    given = parse_overrides(overrides)
    raw = without_replaced(read_config_file(path), given) if path is not None else {}
    raw = resolve_aliases(merge(raw, given), known=set(valid_keys()) | set(RECORD_KEYS + PROCESS_KEYS))  # peers
    check_strings(raw)  # NUL bytes, surrogates, huge strings: before any value is a path (train.validate)
    cfg, ta_kwargs = _split_keys(raw)
    _validate_train_config(cfg)
    if "group_by_length" in raw and ta_kwargs.get("train_sampling_strategy") not in (None, "random"):
        raise ConfigError("set either group_by_length or train_sampling_strategy, not both")
    validate_report_to(ta_kwargs.get("report_to", TRAINING_DEFAULTS["report_to"]))

    for k, v in TRAINING_DEFAULTS.items():
        ta_kwargs.setdefault(k, v)
    if not ta_kwargs.get("output_dir"):
        stem = Path(path).stem if path is not None else "sftlab"
        ta_kwargs["output_dir"] = str(Path("runs") / stem)
    validate_loaded(cfg, ta_kwargs)  # value domains, output_dir, deepspeed (sftlab.train.validate)
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


def _split_keys(raw: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """Route each key to sftlab's config or the TrainingArguments kwargs, type-checking it."""
    ours = _dataclass_fields(TrainConfig)
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
        if key in RECORD_KEYS or (key in PROCESS_KEYS and key != "resume_from_checkpoint"):
            continue
        if key == "lora":
            sft_kwargs[key] = _lora_from(value)
        elif key == "augment":
            sft_kwargs[key] = _augment_from(value)
        elif key == "eval":
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"config key 'eval' must be a block of eval settings, got {type(value).__name__}")
            sft_kwargs[key] = value
        elif key in ours:
            sft_kwargs[key] = check_value(key, value, ours[key])
        elif key in theirs:
            ta_kwargs[key] = check_value(key, value, theirs[key]) if value is not None else None
        else:
            raise ConfigError(f"unknown config key '{key}'{suggest(key, valid + list(ALIAS_NAMES))}")
    _decontaminate_against_eval(sft_kwargs)
    return TrainConfig(**sft_kwargs), ta_kwargs


def _decontaminate_against_eval(sft_kwargs: dict[str, Any]) -> None:
    """An ``augment:`` block without ``ifeval_data`` takes the config's own ``eval.ifeval_data``.

    Why: ``sftlab train`` on a demo config must build the same decontaminated data as ``sftlab run``
    does with it; the prompts a config is scored on never reach its training data.
    """
    aug, ev = sft_kwargs.get("augment"), sft_kwargs.get("eval")
    if aug and isinstance(ev, dict) and ev.get("ifeval_data"):
        ifbench = ev.get("ifbench") if isinstance(ev.get("ifbench"), dict) else {}
        wants_ifbench = isinstance(ev.get("benchmarks"), list) and "ifbench" in ev["benchmarks"]
        sft_kwargs["augment"] = augment_decontaminated(
            aug, str(ev["ifeval_data"]), str(ifbench["data"]) if wants_ifbench and ifbench.get("data") else None)


def augment_decontaminated(block: Any, ifeval_data: str, ifbench_data: str | None = None) -> Any:
    """An ``augment:`` block (``True`` or a mapping) pointed at ``ifeval_data`` (and ``ifbench_data``,
    when the experiment evaluates on IFBench) for decontamination, unless it turns decontamination off
    or names its own inputs; other values as they are.

    The one rule for ``sftlab train`` (the config's ``eval.ifeval_data`` and ``eval.ifbench.data``) and
    ``run``/``sweep`` (the experiment's inputs, see :func:`sftlab.experiment.stages.decontaminate_against`).
    """
    if block is True:
        block = {}
    if not isinstance(block, dict) or not block.get("decontaminate", True):
        return block
    out = dict(block)
    if not out.get("ifeval_data"):
        out["ifeval_data"] = ifeval_data
    if ifbench_data and not out.get("ifbench_data"):
        out["ifbench_data"] = ifbench_data
    return out


def _validate_train_config(cfg: TrainConfig) -> None:
    if not cfg.model:
        raise ConfigError("config key 'model' is required (a hub id, a checkpoint directory, a .gguf file or "
                          "'smollm2-135m-instruct-gguf')")
    if not cfg.data:
        raise ConfigError("config key 'data' is required (a JSON/JSONL file or directory, 'sharegpt' or a hub id)")
    from sftlab.data import parse_data_specs

    parse_data_specs(cfg.data, where="data")  # a bad spec fails now, before any loading
    if cfg.eval_data is not None:
        parse_data_specs(cfg.eval_data, where="eval_data")
    check_choice("loss", cfg.loss, LOSSES)
    check_choice("padding", cfg.padding, PADDINGS)
    check_choice("dtype", cfg.dtype, DTYPE_CHOICES)
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    if cfg.model_max_length < 8:
        raise ConfigError(f"model_max_length must be >= 8, got {cfg.model_max_length}")
    for key in ("max_samples", "max_rounds"):
        v = getattr(cfg, key)
        if v is not None and v < 1:
            raise ConfigError(f"{key} must be >= 1 (or null for all), got {v}")
    PreprocessConfig.from_train_config(cfg).validate()  # masking, truncation: checked where preprocessing is
    if cfg.loss_chunk_size < 1:
        raise ConfigError(f"loss_chunk_size must be >= 1, got {cfg.loss_chunk_size}")
    from sftlab.train.ifeval_callback import validate as validate_ifeval_eval  # (imports transformers)

    validate_ifeval_eval(cfg)
    if cfg.packing and cfg.padding == "max_length":
        raise ConfigError("packing: true already fills rows up to model_max_length; drop padding: max_length")

    # Model specs are checked now: a missing path or an absent GGUF package is a config error.
    from sftlab.models.loading import resolve_model

    resolve_model(cfg.model)
    if cfg.tokenizer:
        resolve_model(cfg.tokenizer)


def _augment_from(value: Any) -> dict | None:
    """The ``augment:`` block, validated now (unknown keys and instruction types fail before any work)."""
    if value is None or value is False:
        return None
    from sftlab.augment import AugmentConfig

    out = AugmentConfig.from_dict({} if value is True else value).to_dict()
    out.pop("version", None)  # a record of the catalogue, not a setting (it goes into the cache key)
    return out


def _lora_from(value: Any) -> LoraSettings | None:
    if value is None or value is False:
        return None
    if value is True:
        return LoraSettings()
    if not isinstance(value, dict):
        raise ConfigError(f"config key 'lora' must be a block (r, alpha, dropout, target_modules), got {value!r}")
    fields_ = _dataclass_fields(LoraSettings)
    kwargs = {}
    for k, v in value.items():
        if k not in fields_:
            raise ConfigError(f"unknown lora key '{k}'{suggest(str(k), list(fields_))}")
        kwargs[k] = check_value(f"lora.{k}", v, fields_[k])
    lora = LoraSettings(**kwargs)
    if lora.r < 1:
        raise ConfigError(f"lora.r must be >= 1, got {lora.r}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {lora.dropout}")
    return lora


# --------------------------------------------------------------------------------------------------
# Resolution: one final TrainingArguments, built once before training and saved whole
# --------------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    """A run's final settings: the ``TrainingArguments`` and what sftlab does itself around them."""

    args: Any  # transformers.TrainingArguments
    #: Checkpoints to keep; sftlab rotates them after its completion marker (``args.save_total_limit`` is None).
    save_total_limit: int | None
    #: Seeded length grouping by sftlab's sampler (``args.train_sampling_strategy`` stays "random").
    group_by_length: bool
    resume_from_checkpoint: Any
    precision: str  # a label for logs and the summary, e.g. "bf16 mixed (fp32 weights)"
    dtype: str  # fp32, bf16 or fp16: what ``dtype: auto`` became on this machine
    world_size: int
    #: sftlab uploads the finished run itself (:mod:`sftlab.train.hub`); ``args.push_to_hub`` stays False.
    push_to_hub: bool = False


def resolve_training_arguments(cfg: TrainConfig, training_args: dict[str, Any]) -> Resolved:
    """sftlab's defaults + the user's keys + derived fields -> the one ``TrainingArguments`` of the run.

    Derived here, never rewritten later: precision and device flags, seeds, the evaluation schedule,
    gradient accumulation for the launcher's world size, rotation and length grouping (done by sftlab).
    """
    import torch
    import transformers

    ta = dict(training_args)
    ta["output_dir"] = str(Path(ta["output_dir"]))
    prec = resolve_precision(cfg.dtype)
    for k in ("bf16", "fp16", "use_cpu"):
        if k in prec:
            ta[k] = bool(ta.get(k)) or prec[k]
    ta["seed"] = int(ta.get("seed", 42))
    ta["do_train"] = True  # what sftlab train does; the saved config says so (LLaMA-Factory refuses false)
    if ta.get("data_seed") is None:
        ta["data_seed"] = ta["seed"]
    save_limit = ta.get("save_total_limit")
    ta["save_total_limit"] = None  # rotation happens after the completion marker (see sftlab.train.trainer)
    group = cfg.group_by_length or ta.get("train_sampling_strategy") == "group_by_length"
    if ta.get("train_sampling_strategy") == "group_by_length":
        ta["train_sampling_strategy"] = "random"
    resume = ta.pop("resume_from_checkpoint", None)
    push = bool(ta.pop("push_to_hub", False))  # the Trainer's push would upload cache/ and logs too
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
    world = world_size_from_env()
    ta["gradient_accumulation_steps"] = derive_gradient_accumulation(
        cfg.total_batch_size, int(ta["per_device_train_batch_size"]), world,
        None if cfg.total_batch_size else ta.get("gradient_accumulation_steps"))
    transformers.logging.set_verbosity_warning()
    try:
        args = transformers.TrainingArguments(**ta)
    except (ValueError, TypeError, OSError) as e:  # OSError: a config file it was pointed at (accelerator_config)
        raise ConfigError(f"invalid training arguments: {str(e).splitlines()[0]}") from e
    return Resolved(args=args, save_total_limit=save_limit, group_by_length=bool(group),
                    resume_from_checkpoint=resume, precision=prec["precision"], dtype=prec["dtype"],
                    world_size=world, push_to_hub=push)


def saved_config(cfg: TrainConfig, resolved: Resolved, sftlab_version: str) -> dict[str, Any]:
    """The run's config as plain YAML data: every sftlab key and every ``TrainingArguments`` field
    (secrets and per-process fields left out), in the form :func:`load_config` reads back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        out[f.name] = _plain(getattr(cfg, f.name))
    out["group_by_length"] = resolved.group_by_length
    args = resolved.args
    for f in sorted(dataclasses.fields(args), key=lambda f: f.name):
        if f.init and not f.name.startswith("_") and f.name not in SECRET_KEYS + PROCESS_KEYS:
            out[f.name] = _plain(getattr(args, f.name))
    out["save_total_limit"] = resolved.save_total_limit
    out["push_to_hub"] = resolved.push_to_hub
    out.update({"world_size": resolved.world_size, "resolved_dtype": resolved.dtype,
                "sftlab_version": sftlab_version})
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Path):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _plain(dataclasses.asdict(v))
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)
