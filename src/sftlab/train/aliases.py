"""Peers' key names: TRL (``trl sft``) and Axolotl config keys read as sftlab's own.

A config written for ``trl sft`` or Axolotl mostly names the same settings differently
(``max_length`` for ``model_max_length``, ``model_name_or_path`` for ``model``, ...). Rather than
stopping with "unknown key", :func:`resolve_aliases` rewrites each such key onto sftlab's key, with a
value transform where the shapes differ (``lora_r: 8`` -> ``lora: {r: 8}``,
``assistant_only_loss: true`` -> ``masking: assistant``), and prints each rewrite once to stderr::

    `warmup_ratio: 0.1` read as `warmup_steps: 0.1`

An alias next to the key it stands for (or two aliases of one key) is an error: which one wins would
be a guess. Keys of those tools that sftlab has no use for (``dataset_text_field``) are accepted with a
note; every other unknown key still stops with "unknown key" and a suggestion (see ``sftlab.train.config``).
The table is :data:`ALIASES`; README's "Keys from TRL and Axolotl" section documents it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sftlab.errors import ConfigError, suggest
from sftlab.prep.masking import STRATEGIES as MASKING_STRATEGIES


@dataclass(frozen=True)
class Alias:
    """``name`` (a TRL/Axolotl key) read as sftlab's ``target`` (dotted for a key inside a block)."""

    name: str
    target: str
    source: str  # "TRL", "Axolotl" or "TRL/Axolotl"
    transform: Callable[[Any], Any] | None = None
    note: str = ""


def _warmup_ratio(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"warmup_ratio must be a fraction in [0, 1), got {value!r} "
                          "(sftlab reads it as warmup_steps, where a value below 1 is a fraction of the steps)")
    return value


#: Strategies that train on every token, in order of preference, for ``assistant_only_loss: false``.
FULL_SEQUENCE_STRATEGIES = ("none", "all", "full")


def _assistant_only_loss(value: Any) -> str:
    if value is True:
        return "assistant"
    if value is False:
        for name in FULL_SEQUENCE_STRATEGIES:
            if name in MASKING_STRATEGIES:
                return name
        raise ConfigError("assistant_only_loss: false (a loss on every token) has no sftlab masking strategy "
                          f"(masking is one of {', '.join(MASKING_STRATEGIES)}); drop the key to train on "
                          "assistant turns, or set masking: explicitly")
    raise ConfigError(f"assistant_only_loss must be true or false, got {value!r}")


def _train_on_inputs(value: Any) -> str:
    if not isinstance(value, bool):
        raise ConfigError(f"train_on_inputs must be true or false, got {value!r}")
    return _assistant_only_loss(not value)


#: Axolotl ``datasets[].type`` -> sftlab data format.
AXOLOTL_TYPES = {"chat_template": "messages", "sharegpt": "sharegpt", "alpaca": "alpaca",
                 "completion": "prompt_completion", "input_output": "prompt_completion"}
#: Axolotl ``datasets[]`` keys with the same meaning in an sftlab data spec.
AXOLOTL_SAME = ("path", "name", "split")
#: Axolotl ``datasets[]`` keys that only describe how Axolotl loads the files; sftlab finds out itself.
AXOLOTL_LOADER_KEYS = ("ds_type", "data_files", "trust_remote_code", "revision")


def _axolotl_dataset(item: Any, where: str) -> Any:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict) or "path" not in item:
        raise ConfigError(f"{where} must be a block with at least 'path', got {item!r}")
    spec: dict[str, Any] = {}
    for key, value in item.items():
        if key in AXOLOTL_SAME:
            spec[key] = value
        elif key == "type":
            if value not in AXOLOTL_TYPES:
                raise ConfigError(f"{where}.type: '{value}' has no sftlab data format"
                                  f"{suggest(str(value), list(AXOLOTL_TYPES))} (types read: {', '.join(AXOLOTL_TYPES)})")
            spec["format"] = AXOLOTL_TYPES[value]
        elif key == "field_messages":
            spec["columns"] = {"messages": value}
        elif key in ("message_property_mappings", "message_field_role", "message_field_content"):
            raise ConfigError(f"{where}.{key}: per-message field renames are not read; "
                              "convert the data to role/content messages")
        elif key not in AXOLOTL_LOADER_KEYS:
            keys = list(AXOLOTL_SAME) + ["type", "field_messages", *AXOLOTL_LOADER_KEYS]
            raise ConfigError(f"{where}: unknown Axolotl dataset key '{key}'{suggest(str(key), keys)}")
    return spec


def _datasets(value: Any) -> Any:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"datasets must be a list of dataset blocks, got {value!r}")
    specs = [_axolotl_dataset(item, f"datasets[{i}]") for i, item in enumerate(value)]
    return specs[0] if len(specs) == 1 else specs


ALIASES: dict[str, Alias] = {a.name: a for a in (
    Alias("warmup_ratio", "warmup_steps", "TRL/Axolotl", _warmup_ratio),
    Alias("max_seq_length", "model_max_length", "TRL (before 0.20)"),
    Alias("max_length", "model_max_length", "TRL"),
    Alias("sequence_len", "model_max_length", "Axolotl"),
    Alias("model_name_or_path", "model", "TRL"),
    Alias("base_model", "model", "Axolotl"),
    Alias("tokenizer_name_or_path", "tokenizer", "TRL"),
    Alias("tokenizer_config", "tokenizer", "Axolotl"),
    Alias("dataset_name", "data", "TRL"),
    Alias("dataset_config", "data.name", "TRL"),
    Alias("dataset_train_split", "data.split", "TRL"),
    Alias("dataset_num_proc", "num_proc", "TRL"),
    Alias("chat_template_path", "chat_template", "TRL"),
    Alias("torch_dtype", "dtype", "TRL (before 0.20)", lambda v: _dtype_value(v, "torch_dtype")),
    Alias("datasets", "data", "Axolotl", _datasets),
    Alias("test_datasets", "eval_data", "Axolotl", _datasets),
    Alias("assistant_only_loss", "masking", "TRL", _assistant_only_loss),
    Alias("train_on_inputs", "masking", "Axolotl", _train_on_inputs),
    Alias("lora_r", "lora.r", "TRL/Axolotl"),
    Alias("lora_alpha", "lora.alpha", "TRL/Axolotl"),
    Alias("lora_dropout", "lora.dropout", "TRL/Axolotl"),
    Alias("lora_target_modules", "lora.target_modules", "TRL/Axolotl"),
    Alias("val_set_size", "eval_fraction", "Axolotl"),
    Alias("micro_batch_size", "per_device_train_batch_size", "Axolotl"),
    Alias("num_epochs", "num_train_epochs", "Axolotl"),
    Alias("sample_packing", "packing", "Axolotl"),
)}

#: Keys of TRL/Axolotl configs that sftlab has no use for: accepted, with a note saying why.
IGNORED: dict[str, str] = {
    "dataset_text_field": "sftlab trains on conversations (messages, sharegpt, alpaca or prompt/completion records), "
                          "found by their fields",
}
#: Keys that switch LoRA on (``use_peft: true``, ``adapter: lora``): sftlab's ``lora`` block with the
#: ``lora_*`` keys, or its defaults.
LORA_SWITCHES = ("use_peft", "adapter")

#: Every key name this module reads (for ``--help`` and "unknown key" suggestions).
ALIAS_NAMES = tuple(ALIASES) + tuple(IGNORED) + LORA_SWITCHES

_printed: set[str] = set()


def _say_once(message: str) -> None:
    """Print ``message`` once per process, on the first process of a multi-process job only."""
    if os.environ.get("RANK", "0") != "0":
        return
    if message not in _printed:
        _printed.add(message)
        print(message, file=sys.stderr, flush=True)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        import yaml

        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)


def _check_ignored(raw: dict[str, Any]) -> None:
    lora_keys = [k for k in raw if k.startswith("lora_") and k in ALIASES]
    if raw.get("use_peft") is False and lora_keys:
        raise ConfigError(f"use_peft: false contradicts {lora_keys[0]}: drop one (sftlab trains LoRA when "
                          "lora_* keys are set)")
    adapter = raw.get("adapter")
    if adapter not in (None, "lora"):
        raise ConfigError(f"adapter: {adapter} is not supported (sftlab trains full weights or LoRA: adapter: lora)")


def resolve_aliases(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every alias rewritten onto its sftlab key (a new mapping; ``raw`` is not changed).

    Each rewrite is printed once per process to stderr. Raises :class:`ConfigError` for an alias next
    to its target, two aliases of one key, or a value the transform cannot read.
    """
    if not any(isinstance(k, str) and k in ALIAS_NAMES for k in raw) and not (
            isinstance(raw.get("dtype"), str) and raw["dtype"].removeprefix("torch.") in TORCH_DTYPES) and not (
            isinstance(raw.get("train_on_eos"), str)):
        return raw
    _check_ignored(raw)
    out: dict[str, Any] = {}
    taken: dict[str, str] = {}  # target -> the key that set it
    enable_lora = raw.get("use_peft") is True or raw.get("adapter") == "lora"
    inner: dict[str, dict[str, Any]] = {}  # block -> keys set inside it by aliases (lora_r -> lora.r)
    for key, value in raw.items():
        if key in IGNORED:
            _say_once(f"`{key}: {_show(value)}` ignored: {IGNORED[key]}")
            continue
        if key in LORA_SWITCHES:
            on = value is True or value == "lora"
            _say_once(f"`{key}: {_show(value)}` read as LoRA {'on (the lora block)' if on else 'off'}")
            continue
        alias = ALIASES.get(key) if isinstance(key, str) else None
        if alias is None:
            _claim(taken, key, key)
            out[key] = (_dtype_value(value, key) if key == "dtype"
                        else _train_on_eos_value(value) if key == "train_on_eos" else value)
            continue
        new = alias.transform(value) if alias.transform is not None else value
        _claim(taken, alias.target, key)
        _say_once(f"`{key}: {_show(value)}` read as `{alias.target}: {_show(new)}`")
        if "." in alias.target:
            block, sub = alias.target.split(".", 1)
            inner.setdefault(block, {})[sub] = new
        else:
            out[alias.target] = new
    for block, items in inner.items():
        out[block] = _into_block(block, out.get(block), items)
    if enable_lora and out.get("lora") is None:
        out["lora"] = True
    return out


def _into_block(block: str, current: Any, items: dict[str, Any]) -> Any:
    """``lora_*`` keys into the ``lora`` block; ``dataset_config``/``dataset_train_split`` into the data spec."""
    if current is None or current is True:
        if block == "data":
            raise ConfigError(f"{', '.join('data.' + k for k in items)} set without the dataset "
                              "(dataset_name or data)")
        return dict(items)
    if block == "data" and isinstance(current, str):
        return {"path": current, **items}
    if isinstance(current, dict):
        return {**current, **items}
    raise ConfigError(f"{', '.join(block + '.' + k for k in items)} need '{block}' to be one block, got {current!r}")


#: TRL/torch dtype names -> sftlab's ``dtype`` values.
TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def _dtype_value(value: Any, key: str = "dtype") -> Any:
    if isinstance(value, str) and value.removeprefix("torch.") in TORCH_DTYPES:
        new = TORCH_DTYPES[value.removeprefix("torch.")]
        if key == "dtype":
            _say_once(f"`dtype: {value}` read as `dtype: {new}`")
        return new
    return value


#: Axolotl's ``train_on_eos`` words that sftlab's boolean expresses (``turn``: the end-of-turn token of
#: every trained turn, which is what ``train_on_eos: true`` does).
AXOLOTL_EOS = {"turn": True, "none": False}


def _train_on_eos_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value in AXOLOTL_EOS:
        new = AXOLOTL_EOS[value]
        _say_once(f"`train_on_eos: {value}` read as `train_on_eos: {str(new).lower()}`")
        return new
    raise ConfigError(f"train_on_eos: {value!r} has no sftlab equivalent: sftlab trains the end-of-turn token of "
                      "every trained turn (true, Axolotl's 'turn') or of none (false)")


def target_of(key: str) -> str:
    """The sftlab key that ``key`` sets (itself when it is no alias)."""
    alias = ALIASES.get(key)
    return alias.target if alias is not None else key


def without_replaced(file_raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``file_raw`` less the keys an override sets under another name: ``--data x`` replaces a file's
    ``dataset_name`` and ``--max_length 64`` a file's ``model_max_length`` (blocks still merge)."""
    replaced = {target_of(k) for k in overrides if isinstance(k, str)}

    def gone(key: Any) -> bool:
        if not isinstance(key, str) or key in overrides:
            return False
        target = target_of(key)  # a new dataset also drops the old one's dataset_config/_train_split
        return target in replaced or (target.split(".", 1)[0] in MERGED_BLOCKS and target.split(".", 1)[0] in replaced)

    return {k: v for k, v in file_raw.items() if not gone(k)}


#: Blocks whose aliased inner keys complete the block's key rather than clash with it.
MERGED_BLOCKS = ("data",)


def _claim(taken: dict[str, str], target: str, key: str) -> None:
    """Record that ``key`` sets ``target``; a second key for the same setting is an error
    (``lora`` and ``lora_r`` count as the same: the block and a key inside it)."""
    block = target.split(".", 1)[0]
    if block in MERGED_BLOCKS:  # data.name/data.split go into the spec that data/dataset_name sets
        clashes = [t for t in taken if t == target]
    else:
        clashes = [t for t in taken if t == target or t == block or t.split(".", 1)[0] == target]
    if clashes:
        prev = taken[clashes[0]]
        raise ConfigError(f"'{key}' and '{prev}' both set {target}: keep one "
                          f"(TRL/Axolotl names are read as sftlab's keys, see README)")
    taken[target] = key
