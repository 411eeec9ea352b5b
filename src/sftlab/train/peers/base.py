"""What a peer profile is made of: one entry per key of a peer's config format.

Every key a peer (TRL, Axolotl, LLaMA-Factory) documents gets exactly one :class:`PeerKey`:

- an **alias** (``target`` set): the key is sftlab's ``target`` under another name, with a value
  ``transform`` where the shapes differ (``lora_r: 8`` -> ``lora.r: 8``);
- **refused** (``refused`` set): sftlab cannot do what the key asks; the reason says what sftlab does
  instead. A value in ``off`` (the peer's own "not used" value, such as ``load_in_4bit: false`` or
  an empty ``wandb_project:``) asks for nothing and is accepted with a note;
- **noted** (``note`` set): what the peer does with the key is what sftlab always does (``plot_loss``:
  sftlab always draws loss_curve.png); accepted, with the note printed once. ``check`` may refuse
  values that would mean something else.

Keys that are ``TrainingArguments`` fields or sftlab keys of the same name and meaning need no entry;
each profile lists them in ``SAME`` so that a test can walk the peer's whole key list.
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
class PeerKey:
    """One key of a peer's config format and what sftlab makes of it (see the module docstring)."""

    name: str
    source: str  # the profile: "TRL", "Axolotl", "LLaMA-Factory" (joined with "/" when shared)
    target: str | None = None
    transform: Callable[[Any], Any] | None = None
    refused: str = ""
    note: str = ""
    off: tuple = ()
    check: Callable[[Any], None] | None = None

    @property
    def kind(self) -> str:
        return "alias" if self.target else "refused" if self.refused else "noted"


# An alias keeps the name ``Alias`` (TRL/Axolotl key -> sftlab key), as before the profiles.
Alias = PeerKey


class Profile:
    """A peer's keys, built entry by entry: ``P.alias(...)``, ``P.refuse(...)``, ``P.noted(...)``."""

    def __init__(self, name: str):
        self.name = name
        self.keys: dict[str, PeerKey] = {}

    def _add(self, key: PeerKey) -> None:
        if key.name in self.keys:
            raise ValueError(f"{self.name} profile lists {key.name} twice")
        self.keys[key.name] = key

    def alias(self, name: str, target: str, transform: Callable[[Any], Any] | None = None) -> None:
        self._add(PeerKey(name, self.name, target=target, transform=transform))

    def refuse(self, name: str, reason: str, off: tuple = (None,)) -> None:
        self._add(PeerKey(name, self.name, refused=reason, off=off))

    def noted(self, name: str, note: str, check: Callable[[Any], None] | None = None) -> None:
        self._add(PeerKey(name, self.name, note=note, check=check))


def is_off(value: Any, off: tuple) -> bool:
    """``value`` is one of the peer's "not used" values (``None`` and ``""`` count as each other)."""
    if value in (None, "") and (None in off or "" in off):
        return True
    return any(value is o or (type(value) is type(o) and value == o) for o in off)


_printed: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` once per process, on the first process of a multi-process job only."""
    if os.environ.get("RANK", "0") != "0":
        return
    if message not in _printed:
        _printed.add(message)
        print(message, file=sys.stderr, flush=True)


def show(value: Any) -> str:
    """A value as YAML writes it inline (``true``, ``null``, ``[q_proj, v_proj]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        import yaml

        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return str(value)


# --------------------------------------------------------------------------------------------------
# Transforms shared by several peers
# --------------------------------------------------------------------------------------------------


def warmup_ratio(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"warmup_ratio must be a fraction in [0, 1), got {value!r} "
                          "(sftlab reads it as warmup_steps, where a value below 1 is a fraction of the steps)")
    return value


#: Strategies that train on every token, in order of preference, for ``assistant_only_loss: false``.
FULL_SEQUENCE_STRATEGIES = ("none", "all", "full")


def assistant_only_loss(value: Any, key: str = "assistant_only_loss", shown: Any = None) -> str:
    if value is True:
        return "assistant"
    if value is False:
        for name in FULL_SEQUENCE_STRATEGIES:
            if name in MASKING_STRATEGIES:
                return name
        raise ConfigError(f"{key}: {show(value if shown is None else shown)}: a loss on every token (prompts included) has no sftlab masking strategy "
                          f"(masking is one of {', '.join(MASKING_STRATEGIES)}); drop the key to train on "
                          "assistant turns, or set masking: explicitly")
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def negated_loss_switch(key: str) -> Callable[[Any], str]:
    """``train_on_inputs`` / ``train_on_prompt``: true means a loss on the prompt too."""
    def transform(value: Any) -> str:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return assistant_only_loss(not value, key, shown=value)
    return transform


def lora_targets(value: Any) -> Any:
    """LLaMA-Factory's ``lora_target`` (``all`` or ``q_proj,v_proj``) and peers' module lists for peft."""
    if value == "all":
        return "all-linear"  # peft: every linear layer but the output head, as LLaMA-Factory's "all"
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return value


#: TRL/torch dtype names -> sftlab's ``dtype`` values.
TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def dtype_value(value: Any) -> Any:
    if isinstance(value, str) and value.removeprefix("torch.") in TORCH_DTYPES:
        return TORCH_DTYPES[value.removeprefix("torch.")]
    return value


#: Attention kernels that need a package of their own.
KERNEL_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def check_attention(value: Any) -> None:
    """A kernel whose package is missing fails now, in one line, not as an ImportError after preprocessing."""
    import importlib.util

    pkg = KERNEL_PACKAGES.get(value) if isinstance(value, str) else None
    if pkg is not None and importlib.util.find_spec(pkg) is None:
        raise ConfigError(f"attn_implementation: {value} needs the package {pkg}, which is not installed; "
                          "install it (CUDA only) or use attn_implementation: sdpa (PyTorch's own kernel)")


def check_deepspeed(value: Any) -> None:
    """A DeepSpeed config (TRL/Axolotl/LLaMA-Factory ``deepspeed``, a TrainingArguments field) is read now:
    a missing or malformed file, an unknown ZeRO stage or an absent ``deepspeed`` package is one line here,
    not an ImportError once the model is loaded."""
    import importlib.util
    import json
    from pathlib import Path

    if value in (None, "", False):
        return
    if isinstance(value, dict):
        conf, where = value, "deepspeed"
    else:
        path = Path(str(value)).expanduser()
        if not path.is_file():
            raise ConfigError(f"deepspeed: {value} does not exist (a DeepSpeed JSON config)")
        try:
            conf = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"deepspeed: {value} is not valid JSON ({e})") from None
        where = f"deepspeed: {value}"
    stage = (conf.get("zero_optimization") or {}).get("stage", 0) if isinstance(conf, dict) else None
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{where} (ZeRO-{stage}) needs the deepspeed package, which is not installed: "
                          "pip install -e .[deepspeed] on a CUDA machine, or drop deepspeed (DDP, or fsdp)")


def check_fsdp(value: Any) -> None:
    """``fsdp`` as TrainingArguments reads it: true, or FSDP options as one space-separated string or a list
    (``full_shard auto_wrap``). Checked before the CPU fallback drops the key, so that a typo is refused on
    every machine, not only where CUDA would have read it."""
    from transformers.trainer_utils import FSDPOption

    if value in (None, "", False, True, []):
        return
    words = value.split() if isinstance(value, str) else value
    allowed = [o.value for o in FSDPOption]
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ConfigError(f"fsdp: {show(value)}: give true or FSDP options ({', '.join(allowed)})")
    bad = [w for w in words if w not in allowed]
    if bad:
        raise ConfigError(f"fsdp: unknown option '{bad[0]}'{suggest(bad[0], allowed)} (options: {', '.join(allowed)})")


def fsdp_fallback(out: dict[str, Any]) -> None:
    """``fsdp`` / ``fsdp_config`` (Axolotl's keys, TrainingArguments fields) on a machine without CUDA:
    accelerate shards only on GPUs and would train plain DDP while the saved config said FSDP. sftlab says
    so and drops the keys, so that ``sftlab_config.yaml`` records what ran (DDP over gloo: the same losses,
    every process holding the whole model)."""
    if out.get("fsdp") in (None, "", False, []) and not out.get("fsdp_config"):
        return
    check_fsdp(out.get("fsdp"))
    import torch

    if torch.cuda.is_available():
        return
    shown = show(out.get("fsdp"))
    out.pop("fsdp", None)
    out.pop("fsdp_config", None)
    say_once(f"`fsdp: {shown}` not applied: without CUDA accelerate does not shard; the run is DDP over gloo "
             "(the same losses, every process holding the whole model)")
