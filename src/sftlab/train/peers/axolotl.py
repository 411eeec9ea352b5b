"""Axolotl's keys: the top-level keys of its example configs for small Llama-family models and the keys of a
``datasets:`` entry (also TRL's ``DatasetMixtureConfig`` entries, which share the ``datasets`` key).

Written from Axolotl's documented config format (``docs/config-reference``, ``docs/dataset-formats``,
``examples/llama-3/*.yml``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sftlab.errors import ConfigError, suggest
from sftlab.train.peers import base
from sftlab.train.peers.base import Profile

P = Profile("Axolotl")

P.alias("base_model", "model")
P.refuse("base_model_config", "sftlab reads the model's config from the model itself")
P.alias("tokenizer_config", "tokenizer")
P.noted("model_type", "sftlab loads every model as a causal LM (AutoModelForCausalLM)",
        check=lambda v: _suffix("model_type", v, "ForCausalLM"))
P.noted("tokenizer_type", "sftlab loads the model's own tokenizer class (AutoTokenizer)",
        check=lambda v: _suffix("tokenizer_type", v, "Tokenizer", "TokenizerFast"))
P.refuse("load_in_8bit", "sftlab trains fp32/bf16 weights; it has no bitsandbytes quantisation", off=(None, False))
P.refuse("load_in_4bit", "sftlab trains fp32/bf16 weights; it has no bitsandbytes quantisation (QLoRA)",
         off=(None, False))
P.refuse("chat_template_jinja", "save the template to a .jinja file and give its path as chat_template")
P.alias("default_system_message", "system_prompt")
P.alias("test_datasets", "eval_data", lambda v: datasets(v, "test_datasets"))
P.noted("dataset_prepared_path", "sftlab caches preprocessing under output_dir/cache, keyed by the data and "
        "every setting that shapes it")
P.alias("dataset_processes", "num_proc")
P.noted("shuffle_merged_datasets", "sftlab's sampler shuffles the training data every epoch (seed)",
        check=lambda v: _only("shuffle_merged_datasets", v, (None, True)))
P.alias("val_set_size", "eval_fraction")
P.alias("sequence_len", "model_max_length")
P.alias("sample_packing", "packing")
P.noted("pad_to_sequence_len", "with sample_packing rows already fill sequence_len; without it, read as "
        "padding: max_length")
P.refuse("eval_sample_packing", "sftlab packs the eval split exactly when it packs training (sample_packing)")
P.noted("adapter", "lora: LoRA on (the lora block, from the lora_* keys or their defaults)",
        check=lambda v: _only("adapter", v, (None, "", "lora")))
P.refuse("lora_model_dir", "sftlab starts a new adapter; merge the old one into the model and train on that")
for _k in ("lora_r", "lora_alpha", "lora_dropout"):
    P.alias(_k, f"lora.{_k.removeprefix('lora_')}")
P.alias("lora_target_modules", "lora.target_modules", base.lora_targets)
P.alias("lora_target_linear", "lora.target_modules", lambda v: _linear(v))
P.refuse("lora_modules_to_save", "sftlab's LoRA trains the adapters only; train full weights to train more",
         off=(None, []))
P.refuse("lora_fan_in_fan_out", "sftlab's LoRA is for nn.Linear layers (fan_in_fan_out false)", off=(None, False))
P.refuse("peft_use_dora", "sftlab's LoRA is plain LoRA, not DoRA", off=(None, False))
P.refuse("peft_use_rslora", "sftlab's LoRA scales by alpha/r (plain LoRA)", off=(None, False))
P.noted("wandb_project", "report_to: wandb, with WANDB_PROJECT set (empty: no wandb)")
P.noted("wandb_entity", "read as the environment's WANDB_ENTITY for wandb")
P.noted("wandb_watch", "read as the environment's WANDB_WATCH for wandb")
P.noted("wandb_name", "read as run_name (the wandb run's name)")
P.noted("wandb_run_id", "read as the environment's WANDB_RUN_ID for wandb")
P.noted("wandb_log_model", "read as the environment's WANDB_LOG_MODEL for wandb")
P.noted("wandb_mode", "read as the environment's WANDB_MODE for wandb")
P.alias("micro_batch_size", "per_device_train_batch_size")
P.alias("num_epochs", "num_train_epochs")
P.alias("optimizer", "optim")
P.alias("lr_scheduler", "lr_scheduler_type")
P.alias("warmup_ratio", "warmup_steps", base.warmup_ratio)
P.alias("train_on_inputs", "masking", base.negated_loss_switch("train_on_inputs"))
P.noted("evals_per_epoch", "read as eval_strategy: steps with eval_steps the matching fraction of all steps")
P.noted("saves_per_epoch", "read as save_strategy: steps with save_steps the matching fraction of all steps")
P.refuse("eval_table_size", "sftlab scores generations with IFEval during training instead "
         "(ifeval_eval_steps)", off=(None, 0))
P.refuse("eval_max_new_tokens", "sftlab's in-training generations take ifeval_eval_max_new_tokens")
P.refuse("early_stopping_patience", "sftlab trains the steps it is given and keeps the best checkpoint "
         "(load_best_model_at_end)")
P.refuse("loss_watchdog_threshold", "sftlab has no loss watchdog; the loss of every step is in metrics.jsonl")
P.refuse("loss_watchdog_patience", "sftlab has no loss watchdog; the loss of every step is in metrics.jsonl")
P.noted("auto_resume_from_checkpoints", "sftlab always resumes from the newest complete checkpoint in "
        "output_dir", check=lambda v: _only("auto_resume_from_checkpoints", v, (None, True)))
P.noted("flash_attention", "true: attn_implementation: flash_attention_2")
P.noted("sdp_attention", "true: attn_implementation: sdpa")
P.refuse("xformers_attention", "use attn_implementation: sdpa (PyTorch's kernel) or flash_attention_2",
         off=(None, False))
for _k in ("flash_attn_cross_entropy", "flash_attn_rms_norm", "flash_attn_fuse_qkv", "flash_attn_fuse_mlp"):
    P.refuse(_k, "sftlab computes the loss and norms in PyTorch (no fused flash-attn kernels)", off=(None, False))
P.noted("special_tokens", "pads carry no loss, so pad_token is accepted as is; other tokens are refused")
P.refuse("tokens", "sftlab adds no tokens to the vocabulary")
P.refuse("plugins", "sftlab has no plugins", off=(None, []))
# "" and [] are TrainingArguments' own "no debug" (a saved sftlab_config.yaml holds that field).
P.refuse("debug", "sftlab prints its preprocessing statistics on every run", off=(None, False, "", []))
for _k in ("liger_rope", "liger_rms_norm", "liger_glu_activation", "liger_fused_linear_cross_entropy"):
    P.refuse(_k, "sftlab has no Liger kernels", off=(None, False))
P.noted("save_safetensors", "sftlab always saves safetensors", check=lambda v: _only("save_safetensors", v, (None, True)))
P.refuse("unfrozen_parameters", "sftlab trains every weight (full) or adapters (LoRA)", off=(None, []))

PROFILE = P
#: Axolotl keys that are sftlab keys or ``TrainingArguments`` fields of the same name and meaning.
SAME = ("trust_remote_code", "strict", "output_dir", "gradient_accumulation_steps", "learning_rate",
        "group_by_length", "bf16", "fp16", "tf32", "gradient_checkpointing", "gradient_checkpointing_kwargs",
        "resume_from_checkpoint", "local_rank", "logging_steps", "warmup_steps", "weight_decay", "max_grad_norm",
        "max_steps", "seed", "save_strategy", "save_steps", "eval_steps", "eval_strategy", "save_total_limit",
        "hub_model_id", "hub_strategy", "deepspeed", "fsdp", "fsdp_config", "torch_compile",
        "ddp_timeout", "dataloader_num_workers", "dataloader_pin_memory", "train_on_eos", "chat_template")


def _only(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {base.show(value)} is not supported: {P.keys[key].note}")


def _suffix(key: str, value: Any, *ends: str) -> None:
    if not (isinstance(value, str) and value.endswith(ends)):
        raise ConfigError(f"{key}: {value!r} is not supported: {P.keys[key].note}")


def _linear(value: Any) -> Any:
    if value is not True:
        raise ConfigError(f"lora_target_linear: {base.show(value)}: give lora_target_modules instead")
    return "all-linear"


# --------------------------------------------------------------------------------------------------
# datasets: entries (Axolotl's, and TRL's DatasetMixtureConfig entries)
# --------------------------------------------------------------------------------------------------

#: Axolotl ``datasets[].type`` -> sftlab data format.
AXOLOTL_TYPES = {"chat_template": "messages", "sharegpt": "sharegpt", "alpaca": "alpaca"}
#: Types sftlab cannot read, with the reason.
REFUSED_TYPES = {
    "completion": "Axolotl's completion type trains on raw text (every token); sftlab trains conversations",
    "input_output": "Axolotl's input_output type is template-free segments; sftlab renders the chat template",
    "pretrain": "sftlab trains conversations, not raw text",
}
#: Turn layouts sftlab reads as they are (``message_property_mappings``).
TURN_LAYOUTS = ({"role": "role", "content": "content"}, {"role": "from", "content": "value"})
#: Entry keys, with what each does (the walk test and the README read this).
ENTRY_KEYS = {
    "path": "the source (file, directory, hub id)", "name": "the hub subset", "split": "the split",
    "type": "the format (chat_template, sharegpt, alpaca)", "field_messages": "columns.messages",
    "message_property_mappings": "role/content or from/value turns (sftlab reads both)",
    "message_field_role": "as message_property_mappings.role", "message_field_content":
    "as message_property_mappings.content", "roles_to_train": "[assistant] (sftlab's masking)",
    "train_on_eos": "turn (sftlab's train_on_eos: true)", "data_files": "files under a local path",
    "ds_type": "sftlab reads files by their extension", "trust_remote_code": "false only",
    "revision": "the default revision only", "data_dir": "a folder under a local path (TRL)",
    "columns": "sftlab reads the fields its format needs (TRL)", "fraction": "1.0 only (TRL)",
    "field_system": "columns.system", "chat_template": "as the top-level chat_template, same for all",
}


def datasets(value: Any, key: str = "datasets") -> list[dict[str, Any]]:
    """Always a list of specs (one entry stays a list of one)."""
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key} must be a list of dataset blocks, got {value!r}")
    out: list[Any] = []
    for i, item in enumerate(value):
        out += _entry(item, f"{key}[{i}]")
    return out


P.alias("datasets", "data", datasets)


def _entry(item: Any, where: str) -> list[Any]:
    if isinstance(item, str):
        return [item]
    if not isinstance(item, dict) or "path" not in item:
        raise ConfigError(f"{where} must be a block with at least 'path', got {item!r}")
    spec: dict[str, Any] = {}
    columns: dict[str, str] = {}
    files = None
    for key, value in item.items():
        if key in ("path", "name", "split"):
            if value is not None:
                spec[key] = value
        elif key == "type":
            spec["format"] = _type(value, where)
        elif key == "field_messages":
            columns["messages"] = value
        elif key == "field_system":
            columns["system"] = value
        elif key in ("message_property_mappings", "message_field_role", "message_field_content"):
            _turn_layout(item, where)
        elif key in ("data_files", "data_dir"):
            files = _files(item, key, value, where)
        else:
            _entry_check(key, value, where)
    if columns:
        spec["columns"] = columns
    if files is None:
        return [spec]
    return [{**spec, "path": f} for f in files]


def _type(value: Any, where: str) -> str:
    if value in REFUSED_TYPES:
        raise ConfigError(f"{where}.type: {value}: {REFUSED_TYPES[value]}")
    if value not in AXOLOTL_TYPES:
        raise ConfigError(f"{where}.type: '{value}' has no sftlab data format{suggest(str(value), list(AXOLOTL_TYPES))} "
                          f"(types read: {', '.join(AXOLOTL_TYPES)})")
    return AXOLOTL_TYPES[value]


def _turn_layout(item: dict, where: str) -> None:
    mapping = dict(item.get("message_property_mappings") or {})
    mapping.setdefault("role", item.get("message_field_role", mapping.get("role", "role")))
    mapping.setdefault("content", item.get("message_field_content", mapping.get("content", "content")))
    if {k: mapping[k] for k in ("role", "content")} not in TURN_LAYOUTS or set(mapping) - {"role", "content"}:
        raise ConfigError(f"{where}.message_property_mappings: {base.show(mapping)}: sftlab reads turns as "
                          "role/content or from/value; other field names are not read")


def _entry_check(key: str, value: Any, where: str) -> None:
    ok = {"roles_to_train": (None, ["assistant"]), "train_on_eos": (None, "turn"), "ds_type": None,
          "trust_remote_code": (None, False), "revision": (None, "main"), "columns": None,
          "fraction": (None, 1, 1.0), "chat_template": None}
    if key not in ok:
        raise ConfigError(f"{where}: unknown Axolotl dataset key '{key}'{suggest(str(key), list(ENTRY_KEYS))}")
    allowed = ok[key]
    if allowed is not None and value not in allowed:
        hint = {"train_on_eos": "; set train_on_eos at the top level (true: turn, false: none) for all data",
                "roles_to_train": "; sftlab trains assistant turns (masking: assistant, last_assistant)"}.get(key, "")
        raise ConfigError(f"{where}.{key}: {base.show(value)} is not supported (only {ENTRY_KEYS[key]}){hint}")
    if key == "chat_template" and value not in ("chatml", "tokenizer_default"):
        raise ConfigError(f"{where}.chat_template: {value}: set one chat_template at the top level "
                          "(chatml or tokenizer_default)")


def _files(item: dict, key: str, value: Any, where: str) -> list[str]:
    """``data_files``/``data_dir`` under a local directory ``path``: the files named, nothing else."""
    root = Path(str(item["path"])).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{where}.{key} needs path to be a local directory (sftlab reads a hub dataset by "
                          f"name and split; download its files and give their path), got {item['path']}")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}.{key} must be a file name or a list of them, got {value!r}")
    out = []
    for n in names:
        p = root / n
        if not p.exists():
            raise ConfigError(f"{where}.{key}: {p} does not exist")
        out.append(str(p))
    return out


# --------------------------------------------------------------------------------------------------
# Keys that need the rest of the config
# --------------------------------------------------------------------------------------------------


def prepare(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    _per_epoch(out, "evals_per_epoch", "eval")
    _per_epoch(out, "saves_per_epoch", "save")
    _wandb(out)
    pad = out.pop("pad_to_sequence_len", None)
    if pad and not out.get("sample_packing") and not out.get("packing"):
        _set(out, "padding", "max_length", "pad_to_sequence_len: true")
    elif pad is not None:
        base.say_once(f"`pad_to_sequence_len: {base.show(pad)}` accepted: {P.keys['pad_to_sequence_len'].note}")
    for key, impl in (("flash_attention", "flash_attention_2"), ("sdp_attention", "sdpa")):
        if key in out:
            if out.pop(key):
                _set(out, "attn_implementation", impl, f"{key}: true")
            else:
                base.say_once(f"`{key}: false` accepted: the model's default attention")
    if out.get("chat_template") == "tokenizer_default":  # Axolotl's name for the model's own template
        out.pop("chat_template")
        _set(out, "chat_template", "tokenizer", "chat_template: tokenizer_default")
    tokens = out.pop("special_tokens", None)
    if tokens:
        other = sorted(set(tokens) - {"pad_token"}) if isinstance(tokens, dict) else ["?"]
        if other:
            raise ConfigError(f"special_tokens: {', '.join(other)} is not supported: sftlab keeps the tokenizer's "
                              "special tokens (pad_token alone is accepted: pads carry no loss)")
        base.say_once(f"`special_tokens: {base.show(tokens)}` accepted: pads carry no loss")
    return out


def _set(out: dict[str, Any], key: str, value: Any, why: str) -> None:
    if key in out and out[key] != value:
        raise ConfigError(f"{why} contradicts {key}: {base.show(out[key])}; keep one")
    base.say_once(f"`{why}` read as `{key}: {base.show(value)}`")
    out[key] = value


def _per_epoch(out: dict[str, Any], key: str, what: str) -> None:
    """``evals_per_epoch: 4`` -> evaluate every quarter epoch: a fraction of all steps (TrainingArguments
    reads ``eval_steps`` below 1 as that), or once per epoch."""
    n = out.pop(key, None)
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{key} must be a positive integer, got {n!r}")
    if out.get("max_steps", -1) not in (-1, None):
        raise ConfigError(f"{key} with max_steps: give {what}_steps instead (a step count)")
    epochs = out.get("num_epochs", out.get("num_train_epochs", 1))
    frac = 1.0 / (n * float(epochs))
    if frac >= 1.0:
        _set(out, f"{what}_strategy", "epoch", f"{key}: {n}")
    else:
        _set(out, f"{what}_strategy", "steps", f"{key}: {n}")
        _set(out, f"{what}_steps", round(frac, 6), f"{key}: {n}")


def _wandb(out: dict[str, Any]) -> None:
    envs = {"wandb_project": "WANDB_PROJECT", "wandb_entity": "WANDB_ENTITY", "wandb_watch": "WANDB_WATCH",
            "wandb_run_id": "WANDB_RUN_ID", "wandb_log_model": "WANDB_LOG_MODEL", "wandb_mode": "WANDB_MODE"}
    values = {k: out.pop(k) for k in [*envs, "wandb_name"] if k in out}
    if not values.get("wandb_project"):
        for k, v in values.items():
            if v not in (None, ""):
                raise ConfigError(f"{k}: {v} without wandb_project: Axolotl logs to wandb only with a project")
        for k, v in values.items():
            base.say_once(f"`{k}: {base.show(v)}` accepted: no wandb (Axolotl logs to wandb only with a project)")
        return
    report = out.get("report_to")
    if report not in (None, "wandb", ["wandb"]):
        raise ConfigError(f"wandb_project contradicts report_to: {base.show(report)}; keep one")
    _set(out, "report_to", "wandb", f"wandb_project: {values['wandb_project']}")
    if values.get("wandb_name"):
        _set(out, "run_name", values["wandb_name"], f"wandb_name: {values['wandb_name']}")
    for k, var in envs.items():
        if values.get(k) not in (None, ""):
            os.environ[var] = str(values[k]).lower() if isinstance(values[k], bool) else str(values[k])
            base.say_once(f"`{k}: {base.show(values[k])}` read as the environment's {var}")
