"""TRL's ``trl sft`` keys: ``SFTConfig``, ``ScriptArguments``, ``ModelConfig`` and ``DatasetMixtureConfig``.

Walked field by field from TRL's source (``trl/trainer/sft_config.py``, ``trl/scripts/utils.py``,
``trl/trainer/model_config.py``). ``SFTConfig`` extends ``TrainingArguments``: those fields are sftlab's
too and need no entry here (TRL changes four of their defaults; README's "Coming from TRL" table says
where sftlab's defaults differ).
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import ConfigError
from sftlab.train.peers import base
from sftlab.train.peers.axolotl import datasets as _datasets
from sftlab.train.peers.base import Profile

P = Profile("TRL")

# ModelConfig
P.alias("model_name_or_path", "model")
P.refuse("model_revision", "sftlab loads a hub model's default revision; download the revision and give its "
         "directory as model", off=(None, "main"))
P.alias("torch_dtype", "dtype", base.dtype_value)  # TRL before 0.20
P.alias("tokenizer_name_or_path", "tokenizer")
P.noted("use_peft", "LoRA on (the lora block, from the lora_* keys or their defaults)")
for _k in ("lora_r", "lora_alpha", "lora_dropout"):
    P.alias(_k, f"lora.{_k.removeprefix('lora_')}")
P.alias("lora_target_modules", "lora.target_modules", base.lora_targets)
P.refuse("lora_target_parameters", "sftlab's LoRA adapts modules (lora_target_modules), not parameters")
P.refuse("lora_modules_to_save", "sftlab's LoRA trains the adapters only; train full weights to train more")
P.refuse("lora_task_type", "sftlab trains causal language models only", off=(None, "CAUSAL_LM"))
P.refuse("use_rslora", "sftlab's LoRA scales by alpha/r (plain LoRA)", off=(None, False))
P.refuse("use_dora", "sftlab's LoRA is plain LoRA, not DoRA", off=(None, False))
P.refuse("load_in_8bit", "sftlab trains fp32/bf16 weights; it has no bitsandbytes quantisation", off=(None, False))
P.refuse("load_in_4bit", "sftlab trains fp32/bf16 weights; it has no bitsandbytes quantisation (QLoRA)",
         off=(None, False))
for _k in ("bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage"):
    P.noted(_k, "TRL uses it only with load_in_4bit: true, which sftlab refuses")

# ScriptArguments
P.alias("dataset_name", "data")
P.alias("dataset_config", "data.name")
P.alias("dataset_train_split", "data.split")
P.noted("dataset_test_split", "read as eval_data (the same dataset's split) when eval_strategy is not 'no'")
P.refuse("dataset_streaming", "sftlab preprocesses and caches the whole dataset (max_samples caps it)",
         off=(None, False))
P.noted("ignore_bias_buffers", "a DDP workaround for boolean buffers; sftlab's models have none")

# DatasetMixtureConfig
P.alias("datasets", "data", _datasets)
P.refuse("streaming", "sftlab preprocesses and caches the whole dataset (max_samples caps it)", off=(None, False))
P.alias("test_split_size", "eval_fraction")

# SFTConfig's own fields
P.noted("model_init_kwargs", "its dtype, torch_dtype, attn_implementation and trust_remote_code are read as "
        "sftlab's keys of those names; any other entry is refused")
P.alias("chat_template_path", "chat_template")
P.noted("dataset_text_field", "sftlab trains on conversations (messages, sharegpt, alpaca or prompt/completion "
        "records); a plain-text record ({\"text\": ...}) is refused when the data is read")
P.refuse("dataset_kwargs", "sftlab always tokenises and masks the data itself (no skip_prepare_dataset)",
         off=(None, {}))
P.alias("dataset_num_proc", "num_proc")
P.refuse("eos_token", "sftlab ends each trained turn with the chat template's end-of-turn token; pick "
         "another template (chat_template) to change it")
P.alias("max_seq_length", "model_max_length")  # TRL before 0.20
P.alias("max_length", "model_max_length")
P.alias("truncation_mode", "truncation", lambda v: _pick("truncation_mode", v, {"keep_start": "right",
                                                                                 "keep_end": "left"}))
P.refuse("shuffle_dataset", "sftlab keeps the data's order in preprocessing; the Trainer's sampler shuffles "
         "every epoch (seed, data_seed)", off=(None, False))
P.noted("packing_strategy", "sftlab packs first-fit decreasing with position ids restarting per conversation, "
        "as TRL's 'bfd'", check=lambda v: _only("packing_strategy", v, ("bfd",)))
P.refuse("padding_free", "use packing: true (rows without padding, position ids restarting per conversation)",
         off=(None, False))
P.refuse("pad_to_multiple_of", "sftlab pads each batch to its longest example", off=(None, "auto"))
P.refuse("eval_packing", "sftlab packs the eval split exactly when it packs training (packing)")
P.noted("completion_only_loss", "sftlab's masking: assistant trains the completion of prompt/completion "
        "records only, as TRL's default", check=lambda v: _only("completion_only_loss", v, (None, True)))
P.alias("assistant_only_loss", "masking", base.assistant_only_loss)
P.alias("warmup_ratio", "warmup_steps", base.warmup_ratio)
P.refuse("loss_type", "sftlab's loss is the token-level negative log-likelihood (TRL's 'nll')",
         off=(None, "nll"))
P.refuse("activation_offloading", "use gradient_checkpointing: true to save activation memory",
         off=(None, False))
P.refuse("pad_token", "sftlab pads with the tokenizer's pad token (its eos when it has none); pads carry no loss")
P.refuse("router_aux_loss_coef", "sftlab adds no mixture-of-experts router loss")

PROFILE = P
#: TRL keys that are sftlab keys or ``TrainingArguments`` fields of the same name and meaning.
SAME = ("trust_remote_code", "packing", "dtype", "attn_implementation")


def _pick(key: str, value: Any, table: dict[str, Any]) -> Any:
    if value not in table:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(table)}")
    return table[value]


def _only(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(base.show(a) for a in allowed)
        raise ConfigError(f"{key}: {base.show(value)} is not supported (sftlab does {shown}): "
                          f"{P.keys[key].note}")


#: ``model_init_kwargs`` entries read as sftlab keys.
INIT_KWARGS = {"dtype": "dtype", "torch_dtype": "dtype", "attn_implementation": "attn_implementation",
               "trust_remote_code": "trust_remote_code"}


#: What peft adapts when TRL's ``lora_target_modules`` is unset: its default for Llama-family models.
PEFT_LLAMA_TARGETS = ["q_proj", "v_proj"]


def prepare(raw: dict[str, Any]) -> dict[str, Any]:
    """The keys that need the rest of the config: ``model_init_kwargs``, ``dataset_test_split`` and
    ``use_peft`` without ``lora_target_modules`` (TRL leaves the modules to peft's default)."""
    out = dict(raw)
    if out.get("use_peft") is True and "lora_target_modules" not in out and not isinstance(out.get("lora"), dict):
        base.say_once(f"`use_peft: true` without lora_target_modules: peft's default for Llama-family models, "
                      f"`lora.target_modules: {base.show(PEFT_LLAMA_TARGETS)}`, as in TRL")
        out["lora_target_modules"] = list(PEFT_LLAMA_TARGETS)
    kwargs = out.pop("model_init_kwargs", None)
    if kwargs:
        if not isinstance(kwargs, dict):
            raise ConfigError(f"model_init_kwargs must be a mapping, got {kwargs!r}")
        for k, v in kwargs.items():
            if k not in INIT_KWARGS:
                raise ConfigError(f"model_init_kwargs.{k} is not supported: sftlab reads only "
                                  f"{', '.join(INIT_KWARGS)} from it")
            if INIT_KWARGS[k] in out:
                raise ConfigError(f"model_init_kwargs.{k} and {INIT_KWARGS[k]} both set {INIT_KWARGS[k]}: keep one")
            base.say_once(f"`model_init_kwargs.{k}: {base.show(v)}` read as `{INIT_KWARGS[k]}: {base.show(v)}`")
            out[INIT_KWARGS[k]] = base.dtype_value(v)
    test_split = out.pop("dataset_test_split", None)
    if test_split is not None and out.get("eval_strategy", "no") not in ("no", None):
        if "dataset_name" not in out:
            raise ConfigError("dataset_test_split needs dataset_name (the dataset the split belongs to)")
        from sftlab.data.readers import data_files

        if data_files(str(out["dataset_name"])) is not None:
            raise ConfigError(f"dataset_test_split: {test_split}: {out['dataset_name']} is local and has one split; "
                              "sftlab holds out eval_fraction of it (default 0.02), or set eval_data to a file")
        spec = {"path": out["dataset_name"], "split": test_split}
        if out.get("dataset_config"):
            spec["name"] = out["dataset_config"]
        base.say_once(f"`dataset_test_split: {test_split}` read as `eval_data: {base.show(spec)}`")
        out["eval_data"] = [spec]
    elif test_split is not None:
        base.say_once(f"`dataset_test_split: {test_split}` accepted: unused with eval_strategy: no, as in TRL")
    return out
