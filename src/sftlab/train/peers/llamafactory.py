"""LLaMA-Factory's keys: the SFT configs of ``examples/train_lora/*_lora_sft.yaml`` and
``examples/train_full/*_full_sft.yaml``, and the ``dataset_info.json`` its ``dataset`` key names.

Written from LLaMA-Factory's documented formats (``data/README.md``, ``hparams/*_args.py``). A config is
read as LLaMA-Factory's when it has ``stage``: then LLaMA-Factory's defaults apply where they differ
from sftlab's (``finetuning_type`` lora with ``lora_rank`` 8, ``lora_alpha`` 2 x rank, ``lora_dropout``
0, ``lora_target`` all; no eval split without ``val_size``) and ``max_samples`` caps each dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftlab.errors import ConfigError
from sftlab.train.peers import base
from sftlab.train.peers.base import Profile

P = Profile("LLaMA-Factory")

P.alias("model_name_or_path", "model")
P.noted("stage", "sft only; the config is then read with LLaMA-Factory's defaults",
        check=lambda v: _only("stage", v, ("sft",)))
P.noted("do_train", "sftlab train always trains", check=lambda v: _only("do_train", v, (True,)))
P.noted("finetuning_type", "lora: LoRA; full: every weight", check=lambda v: _only("finetuning_type", v,
                                                                                   ("lora", "full")))
P.alias("lora_rank", "lora.r")
P.alias("lora_alpha", "lora.alpha")
P.alias("lora_dropout", "lora.dropout")
P.alias("lora_target", "lora.target_modules", base.lora_targets)
P.refuse("additional_target", "sftlab's LoRA trains the adapters only")
P.refuse("loraplus_lr_ratio", "sftlab trains adapters with one learning rate")
P.refuse("pissa_init", "sftlab initialises LoRA as peft's default", off=(None, False))
P.refuse("use_dora", "sftlab's LoRA is plain LoRA, not DoRA", off=(None, False))
P.refuse("use_rslora", "sftlab's LoRA scales by alpha/r (plain LoRA)", off=(None, False))
P.refuse("create_new_adapter", "sftlab starts a new adapter on every run", off=(None, False))
P.refuse("adapter_name_or_path", "sftlab starts a new adapter; merge the old one into the model first")
P.refuse("quantization_bit", "sftlab trains fp32/bf16 weights; it has no quantised (QLoRA) training")
P.refuse("rope_scaling", "sftlab keeps the model's own position embeddings")
P.refuse("enable_liger_kernel", "sftlab has no Liger kernels", off=(None, False))
P.refuse("use_unsloth", "sftlab has no Unsloth kernels", off=(None, False))
P.noted("flash_attn", "auto: the model's default; sdpa, fa2 and disabled: attn_implementation sdpa, "
        "flash_attention_2, eager")
P.noted("dataset", "datasets named in dataset_dir/dataset_info.json, read as sftlab data specs")
P.noted("eval_dataset", "as dataset, read as eval_data")
P.noted("dataset_dir", "the folder of dataset_info.json (default data)")
P.noted("val_size", "eval_fraction; without it LLaMA-Factory holds out nothing (eval_fraction: 0)")
P.noted("template", "chatml: sftlab's built-in ChatML (other templates are refused: give chat_template)")
P.alias("cutoff_len", "model_max_length")
P.alias("train_on_prompt", "masking", base.negated_loss_switch("train_on_prompt"))
P.noted("mask_history", "true: masking: last_assistant (the last turn only); false: every assistant turn")
P.noted("neat_packing", "packing: true (sftlab's packing never lets packed conversations attend to each other)")
P.alias("preprocessing_num_workers", "num_proc")
P.noted("overwrite_cache", "sftlab's preprocessing cache is keyed by the data and every setting that shapes "
        "it, so it never serves stale data")
P.refuse("tokenized_path", "sftlab caches preprocessing under output_dir/cache itself")
P.noted("plot_loss", "sftlab always draws loss_curve.png")
P.refuse("streaming", "sftlab preprocesses and caches the whole dataset (max_samples caps it)", off=(None, False))
P.noted("buffer_size", "LLaMA-Factory uses it only with streaming: true, which sftlab refuses")
P.noted("mix_strategy", "concat: the datasets one after the other, as sftlab mixes specs without weights",
        check=lambda v: _only("mix_strategy", v, (None, "concat")))
P.refuse("interleave_probs", "give each dataset a weight in data: instead (sftlab.data.mixture)")
P.alias("default_system", "system_prompt")
P.refuse("enable_thinking", "sftlab renders the chat template as it is", off=(None, True))

P.alias("warmup_ratio", "warmup_steps", base.warmup_ratio)

PROFILE = P
#: Keys that are sftlab's own but mean more in a config with ``stage`` (the README lists them).
CONTEXT_NOTES = {
    "max_samples": "with dataset: the first N records of each dataset, as LLaMA-Factory (sftlab: of all data)",
    "packing": "true without neat_packing is refused: LLaMA-Factory's packing lets packed sequences attend to "
               "each other; sftlab packs only as neat_packing: true does",
}
#: LLaMA-Factory keys that are sftlab keys or ``TrainingArguments`` fields of the same name and meaning.
SAME = ("trust_remote_code", "output_dir", "logging_steps", "save_steps", "overwrite_output_dir", "save_only_model",
        "report_to", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
        "num_train_epochs", "lr_scheduler_type", "warmup_steps", "bf16", "fp16", "ddp_timeout",
        "resume_from_checkpoint", "per_device_eval_batch_size", "eval_strategy", "eval_steps", "deepspeed",
        "dataloader_num_workers", "max_steps", "seed", "save_strategy", "weight_decay", "max_grad_norm",
        "gradient_checkpointing", "run_name", "include_num_input_tokens_seen")

#: LLaMA-Factory's LoRA defaults (FinetuningArguments), which differ from sftlab's.
LORA_DEFAULTS = {"r": 8, "dropout": 0.0, "target_modules": "all-linear"}
#: LLaMA-Factory's ``flash_attn`` -> ``attn_implementation``.
FLASH_ATTN = {"sdpa": "sdpa", "fa2": "flash_attention_2", "disabled": "eager"}


def _only(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {base.show(value)} is not supported: {P.keys[key].note}")


def _set(out: dict[str, Any], key: str, value: Any, why: str) -> None:
    if key in out and out[key] != value:
        raise ConfigError(f"{why} contradicts {key}: {base.show(out[key])}; keep one")
    base.say_once(f"`{why}` read as `{key}: {base.show(value)}`")
    out[key] = value


def prepare(raw: dict[str, Any]) -> dict[str, Any]:
    """A config with ``stage`` (LLaMA-Factory's) as sftlab keys; others only lose the keys read here."""
    out = dict(raw)
    lf = "stage" in out
    if lf:
        for key in ("stage", "do_train", "finetuning_type"):
            if key in out:
                P.keys[key].check(out[key])
        for key in ("stage", "do_train"):
            if key in out:
                base.say_once(f"`{key}: {base.show(out.pop(key))}` accepted: {P.keys[key].note}")
        _lora(out)
        if "val_size" not in out and "eval_fraction" not in out and "eval_data" not in out:
            _set(out, "eval_fraction", 0.0, "val_size: 0 (LLaMA-Factory's default)")
        _packing(out)
    if "val_size" in out:
        v = out.pop("val_size")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ConfigError(f"val_size: {v!r}: sftlab holds out a fraction in [0, 1) (eval_fraction)")
        _set(out, "eval_fraction", v, f"val_size: {v}")
    _masking(out)
    _template(out)
    flash = out.pop("flash_attn", None)
    if flash not in (None, "auto"):
        if flash not in FLASH_ATTN:
            raise ConfigError(f"flash_attn: {flash!r} is not one of auto, {', '.join(FLASH_ATTN)}")
        _set(out, "attn_implementation", FLASH_ATTN[flash], f"flash_attn: {flash}")
    directory = out.pop("dataset_dir", "data")
    max_samples = out.pop("max_samples", None) if "dataset" in out else None
    for key, target in (("dataset", "data"), ("eval_dataset", "eval_data")):
        if key in out:
            names = out.pop(key)
            specs = dataset_specs(names, Path(str(directory)), max_samples if key == "dataset" else None)
            _set(out, target, specs, f"{key}: {base.show(names)}")
    for key in ("overwrite_cache", "plot_loss", "buffer_size", "mix_strategy"):
        if key in out:
            value = out.pop(key)
            if P.keys[key].check is not None:
                P.keys[key].check(value)
            base.say_once(f"`{key}: {base.show(value)}` accepted: {P.keys[key].note}")
    return out


def _lora(out: dict[str, Any]) -> None:
    kind = out.pop("finetuning_type", "lora")
    keys = [k for k in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target") if k in out]
    if kind == "full":
        if keys:
            raise ConfigError(f"finetuning_type: full with {keys[0]}: LLaMA-Factory ignores LoRA keys in a full "
                              "fine-tune; drop them or set finetuning_type: lora")
        base.say_once("`finetuning_type: full` read as `lora: null` (every weight trains)")
        return
    r = out.pop("lora_rank", LORA_DEFAULTS["r"])
    block = {"r": r, "alpha": out.pop("lora_alpha", None) or 2 * r,
             "dropout": out.pop("lora_dropout", LORA_DEFAULTS["dropout"]),
             "target_modules": base.lora_targets(out.pop("lora_target", "all"))}
    if "lora" in out:
        raise ConfigError("finetuning_type: lora and lora both set the LoRA block: keep one")
    _set(out, "lora", block, f"finetuning_type: {kind}")


def _packing(out: dict[str, Any]) -> None:
    neat = out.pop("neat_packing", None)
    packing = out.get("packing")
    if packing and not neat:
        raise ConfigError("packing: true without neat_packing: LLaMA-Factory then lets packed sequences attend to "
                          "each other, which sftlab never does; add neat_packing: true (sftlab's packing)")
    if neat:
        out.pop("packing", None)
        _set(out, "packing", True, "neat_packing: true")


def _masking(out: dict[str, Any]) -> None:
    history = out.pop("mask_history", None)
    if "train_on_prompt" in out:
        value = out.pop("train_on_prompt")
        base.negated_loss_switch("train_on_prompt")(value)  # true is refused there
    if history is True:
        _set(out, "masking", "last_assistant", "mask_history: true")
    elif history not in (None, False):
        raise ConfigError(f"mask_history must be true or false, got {history!r}")


def _template(out: dict[str, Any]) -> None:
    if "template" not in out:
        return
    name = out.pop("template")
    if name != "chatml":
        raise ConfigError(f"template: {name}: sftlab has the built-in chatml template (template: chatml) and the "
                          "model's own (chat_template: tokenizer), or a .jinja file (chat_template: path)")
    _set(out, "chat_template", "chatml", f"template: {name}")


# --------------------------------------------------------------------------------------------------
# dataset_info.json
# --------------------------------------------------------------------------------------------------

#: LLaMA-Factory's column names -> sftlab's, per formatting.
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                  "system": "system"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
#: Tags and the role each must name (sftlab reads the speaker names it knows, see sftlab.data.normalize).
TAG_ROLES = {"user_tag": "user", "assistant_tag": "assistant", "observation_tag": "tool",
             "function_tag": "assistant", "system_tag": "system"}
ENTRY_KEYS = ("file_name", "hf_hub_url", "subset", "split", "formatting", "columns", "tags", "num_samples",
              "ranking", "folder")


def dataset_specs(names: Any, directory: Path, max_samples: int | None) -> list[dict[str, Any]]:
    """``dataset: a,b`` -> one sftlab data spec per name, read from ``directory/dataset_info.json``."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, list) or not names:
        raise ConfigError(f"dataset must be a name or a comma-separated list of names, got {names!r}")
    info_path = directory / "dataset_info.json"
    if not info_path.is_file():
        raise ConfigError(f"dataset: {', '.join(map(str, names))} needs {info_path} (dataset_dir: the folder "
                          "that holds dataset_info.json)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{info_path}: not valid JSON ({e})") from None
    out = []
    for name in names:
        if name not in info:
            raise ConfigError(f"dataset '{name}' is not in {info_path}")
        spec = _spec(info[name], f"{info_path}: {name}", directory)
        if max_samples is not None:
            spec["max_samples"] = max_samples
        out.append(spec)
    return out


def _spec(entry: Any, where: str, directory: Path) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(entry) - set(ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]} (keys: {', '.join(ENTRY_KEYS)})")
    if entry.get("ranking"):
        raise ConfigError(f"{where}: ranking (preference) data is for stage rm/dpo; sftlab trains sft only")
    for key in ("num_samples", "folder"):
        if entry.get(key) is not None:
            raise ConfigError(f"{where}.{key} is not supported: use max_samples (the first N records)")
    if "file_name" in entry:
        spec: dict[str, Any] = {"path": str(directory / entry["file_name"])}
    elif "hf_hub_url" in entry:
        spec = {"path": entry["hf_hub_url"], "split": entry.get("split", "train")}
        if entry.get("subset"):
            spec["name"] = entry["subset"]
    else:
        raise ConfigError(f"{where} needs file_name or hf_hub_url")
    fmt = entry.get("formatting", "alpaca")
    table = {"alpaca": ALPACA_COLUMNS, "sharegpt": SHAREGPT_COLUMNS}.get(fmt)
    if table is None:
        raise ConfigError(f"{where}.formatting: {fmt!r}: sftlab reads alpaca and sharegpt")
    columns = entry.get("columns") or {}
    bad = sorted(set(columns) - set(table))
    if bad:
        raise ConfigError(f"{where}.columns.{bad[0]} is not supported for {fmt} (sftlab reads {', '.join(table)})")
    spec["format"] = fmt
    mapped = {table[k]: v for k, v in columns.items() if v and table[k] != v}
    if fmt == "sharegpt" and columns.get("system"):
        mapped["system"] = columns["system"]  # kept even when the names agree: it turns the column on
    if mapped:
        spec["columns"] = mapped
    _check_tags(entry.get("tags") or {}, where)
    return spec


def _check_tags(tags: dict[str, Any], where: str) -> None:
    from sftlab.data.normalize import map_role

    layout = (tags.get("role_tag", "from"), tags.get("content_tag", "value"))
    if layout not in (("from", "value"), ("role", "content")):
        raise ConfigError(f"{where}.tags: role_tag/content_tag {layout[0]}/{layout[1]}: sftlab reads turns as "
                          "from/value or role/content")
    for key, value in tags.items():
        if key in ("role_tag", "content_tag"):
            continue
        if key not in TAG_ROLES:
            raise ConfigError(f"{where}.tags.{key} is not a LLaMA-Factory tag ({', '.join(TAG_ROLES)})")
        if map_role(str(value)) != TAG_ROLES[key]:
            raise ConfigError(f"{where}.tags.{key}: '{value}' is not a speaker name sftlab reads as {TAG_ROLES[key]} "
                              "(see sftlab.data.normalize.ROLE_ALIASES); rename it in the data")
