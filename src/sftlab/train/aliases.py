"""Peers' configs read as sftlab's: TRL (``trl sft``), Axolotl and LLaMA-Factory keys, in one resolver.

A config written for a peer mostly names the same settings differently (``max_length`` for
``model_max_length``, ``base_model`` for ``model``, ...). :func:`resolve_aliases`, the one function every
entry point calls (``sftlab train``'s config, ``sftlab run``, a sweep's base), rewrites each such key
onto sftlab's key and prints each rewrite once to stderr::

    `warmup_ratio: 0.1` read as `warmup_steps: 0.1`

Each peer's keys live in its profile (:mod:`sftlab.train.peers`): every key the peer documents is an
alias, refused with a reason that says what sftlab does instead, or accepted with a note where what the
peer does is what sftlab always does. Nothing is dropped silently. An alias next to the key it stands
for (or two aliases of one key) is an error: which one wins would be a guess.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sftlab.errors import ConfigError, suggest
from sftlab.train.peers import axolotl, llamafactory, trl
from sftlab.train.peers.base import (
    FULL_SEQUENCE_STRATEGIES,  # noqa: F401  (re-exported: tests and docs name it here)
    TORCH_DTYPES,
    PeerKey,
    check_attention,
    check_deepspeed,
    dtype_value,
    fsdp_fallback,
    is_off,
    say_once,
    show,
)

#: The profiles, and the translations that need the rest of the config, in the order they run.
PROFILES = {"TRL": trl, "Axolotl": axolotl, "LLaMA-Factory": llamafactory}


def _merged() -> dict[str, PeerKey]:
    """One entry per key name; a name several peers share must mean the same to each."""
    out: dict[str, PeerKey] = {}
    for module in PROFILES.values():
        for name, key in module.PROFILE.keys.items():
            prev = out.get(name)
            if prev is None:
                out[name] = key
                continue
            if (prev.kind, prev.target, prev.transform) != (key.kind, key.target, key.transform):
                raise ValueError(f"{name} means different things to {prev.source} and {key.source}")
            out[name] = PeerKey(name, f"{prev.source}/{key.source}", prev.target, prev.transform, prev.refused,
                                prev.note or key.note, prev.off + tuple(o for o in key.off if o not in prev.off),
                                prev.check or key.check)
    return out


KEYS: dict[str, PeerKey] = _merged()
#: Aliases: a peer's key read as an sftlab key (``--keys`` and the README list them).
ALIASES: dict[str, PeerKey] = {k: v for k, v in KEYS.items() if v.kind == "alias"}
#: Keys accepted with a note (what the peer does with them is what sftlab does).
IGNORED: dict[str, str] = {k: v.note for k, v in KEYS.items() if v.kind == "noted"}
#: Keys refused, with the reason.
REFUSED: dict[str, str] = {k: v.refused for k, v in KEYS.items() if v.kind == "refused"}
#: Keys that switch LoRA on or off (``use_peft: true``, ``adapter: lora``, ``finetuning_type: lora``).
LORA_SWITCHES = ("use_peft", "adapter", "finetuning_type")
#: Every key name the profiles read (for ``--help``).
ALIAS_NAMES = tuple(KEYS)
#: sftlab keys never offered as a "did you mean" (they describe one process, not a setting).
NOT_SUGGESTED = ("local_rank",)


def profiles_of(raw: dict[str, Any]) -> list[str]:
    """The peers whose own keys ``raw`` uses: keys of one profile only (``lora_alpha``, shared by all three,
    says nothing; ``lora_rank`` says LLaMA-Factory). None: an sftlab config."""
    owners = {k: [n for n, m in PROFILES.items() if k in m.PROFILE.keys] for k in raw if isinstance(k, str)}
    return list(dict.fromkeys(names[0] for names in owners.values() if len(names) == 1))


def _switch(key: str, value: Any) -> bool:
    if key == "use_peft" and isinstance(value, bool):
        return value
    if key == "adapter" and value in (None, "", "lora"):
        return value == "lora"
    if key == "finetuning_type" and value in ("lora", "full"):
        return value == "lora"
    raise ConfigError(f"{key}: {show(value)} is not supported (sftlab trains full weights or LoRA: "
                      "use_peft: true, adapter: lora or finetuning_type: lora)")


def _check_switches(raw: dict[str, Any]) -> bool:
    """Whether a switch turns LoRA on; a switch that says off next to ``lora_*`` keys is an error."""
    on = False
    for key in LORA_SWITCHES:
        if key in raw:
            value = _switch(key, raw[key])
            lora_keys = [k for k in raw if isinstance(k, str) and KEYS.get(k, PeerKey("", "")).target
                         and str(KEYS[k].target).startswith("lora.")]
            if not value and lora_keys and raw[key] not in (None, ""):
                raise ConfigError(f"{key}: {show(raw[key])} contradicts {lora_keys[0]}: drop one (sftlab trains "
                                  "LoRA when lora_* keys are set)")
            on = on or value
    return on


def _precision(out: dict[str, Any], raw: dict[str, Any]) -> None:
    """``bf16: true`` (TRL, Axolotl, LLaMA-Factory, TrainingArguments) as ``dtype: bf16``, so that the log,
    ``train_summary.json`` and ``resolved_dtype`` say what the run does; ``bf16: auto`` (Axolotl) as
    ``dtype: auto``. Next to ``dtype`` the flags stay for load_config's contradiction check."""
    if "dtype" in raw:
        return
    bf16, fp16 = out.get("bf16"), out.get("fp16")
    if bf16 == "auto":
        out.pop("bf16")
        say_once("`bf16: auto` read as `dtype: auto`")
        out["dtype"] = "auto"
    elif bf16 is True or fp16 is True:
        if bf16 is True and fp16 is True:
            raise ConfigError("bf16: true and fp16: true: keep one")
        key = "bf16" if bf16 is True else "fp16"
        for k in ("bf16", "fp16"):
            out.pop(k, None)
        say_once(f"`{key}: true` read as `dtype: {key}`")
        out["dtype"] = key
    elif bf16 is False and fp16 in (None, False):
        for k in ("bf16", "fp16"):
            out.pop(k, None)
        say_once("`bf16: false` read as `dtype: fp32`")
        out["dtype"] = "fp32"


def resolve_aliases(raw: dict[str, Any], known: Collection[str] | None = None) -> dict[str, Any]:
    """``raw`` with every peer key rewritten onto its sftlab key (a new mapping; ``raw`` is not changed).

    Each rewrite or note is printed once per process to stderr. Every refused key of ``raw`` is named in
    one :class:`ConfigError` with its reason; so are an alias next to its target, two aliases of one key
    and a value a transform cannot read. With ``known`` (sftlab's own keys), any other key is an
    "unknown config key" error whose suggestion comes from sftlab's keys and the peers ``raw`` uses.
    """
    peers = profiles_of(raw)
    enable_lora = _check_switches(raw)
    cur = dict(raw)
    for module in PROFILES.values():
        cur = module.prepare(cur)
    out: dict[str, Any] = {}
    taken: dict[str, str] = {}  # target -> the key that set it
    inner: dict[str, dict[str, Any]] = {}  # block -> keys set inside it by aliases (lora_r -> lora.r)
    refused: list[str] = []
    for key, value in cur.items():
        entry = KEYS.get(key) if isinstance(key, str) else None
        if entry is None:
            if known is not None and isinstance(key, str) and key not in known:
                pool = [k for k in known if k not in NOT_SUGGESTED]
                pool += [k for p in (peers or PROFILES) for k in PROFILES[p].PROFILE.keys]
                raise ConfigError(f"unknown config key '{key}'{suggest(key, pool)}")
            _claim(taken, key, key)
            out[key] = _own_value(key, value)
        elif entry.kind == "refused":
            if is_off(value, entry.off):
                say_once(f"`{key}: {show(value)}` accepted: it turns nothing on (sftlab: {entry.refused})")
            else:
                refused.append(f"`{key}` ({entry.source}): {entry.refused}")
        elif entry.kind == "noted":
            if key not in LORA_SWITCHES and entry.check is not None:
                entry.check(value)
            word = "LoRA on" if key in LORA_SWITCHES and _switch(key, value) else (
                "LoRA off" if key in LORA_SWITCHES else entry.note)
            say_once(f"`{key}: {show(value)}` {'read as ' + word if key in LORA_SWITCHES else 'accepted: ' + word}")
        else:
            _alias(entry, key, value, out, taken, inner)
    if refused:
        raise ConfigError("not supported by sftlab: " + "; ".join(refused))
    for block, items in inner.items():
        out[block] = _into_block(block, out.get(block), items)
    if enable_lora and out.get("lora") is None:
        out["lora"] = True
    _precision(out, raw)
    check_attention(out.get("attn_implementation"))
    check_deepspeed(out.get("deepspeed"))
    fsdp_fallback(out)
    return out


def _alias(entry: PeerKey, key: str, value: Any, out: dict, taken: dict, inner: dict) -> None:
    new = entry.transform(value) if entry.transform is not None else value
    target = str(entry.target)
    _claim(taken, target, key)
    say_once(f"`{key}: {show(value)}` read as `{target}: {show(new)}`")
    if "." in target:
        block, sub = target.split(".", 1)
        inner.setdefault(block, {})[sub] = new
    else:
        out[target] = new


def _own_value(key: str, value: Any) -> Any:
    if key == "dtype":
        new = dtype_value(value)
        if new != value:
            say_once(f"`dtype: {value}` read as `dtype: {new}`")
        return new
    if key == "train_on_eos":
        return _train_on_eos_value(value)
    return value


def _into_block(block: str, current: Any, items: dict[str, Any]) -> Any:
    """``lora_*`` keys into the ``lora`` block; ``dataset_config``/``dataset_train_split`` into the data spec
    (a list of one spec, the form ``data`` takes)."""
    if current is None or current is True:
        if block == "data":
            raise ConfigError(f"{', '.join('data.' + k for k in items)} set without the dataset "
                              "(dataset_name or data)")
        return dict(items)
    if block == "data" and isinstance(current, str):
        return [{"path": current, **items}]
    if block == "data" and isinstance(current, list) and len(current) == 1:
        one = current[0]
        return [{**({"path": one} if isinstance(one, str) else one), **items}]
    if isinstance(current, dict):
        return {**current, **items}
    raise ConfigError(f"{', '.join(block + '.' + k for k in items)} need '{block}' to be one block, got {current!r}")


#: Axolotl's ``train_on_eos`` words that sftlab's boolean expresses (``turn``: the end-of-turn token of
#: every trained turn, which is what ``train_on_eos: true`` does).
AXOLOTL_EOS = {"turn": True, "none": False}


def _train_on_eos_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value in AXOLOTL_EOS:
        new = AXOLOTL_EOS[value]
        say_once(f"`train_on_eos: {value}` read as `train_on_eos: {str(new).lower()}`")
        return new
    raise ConfigError(f"train_on_eos: {value!r} has no sftlab equivalent: sftlab trains the end-of-turn token of "
                      "every trained turn (true, Axolotl's 'turn') or of none (false)")


def target_of(key: str) -> str:
    """The sftlab key that ``key`` sets (itself when it is no alias)."""
    alias = ALIASES.get(key)
    return str(alias.target) if alias is not None else key


def without_replaced(file_raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``file_raw`` less the keys an override sets under another name: ``--data x`` replaces a file's
    ``dataset_name`` and ``--max_length 64`` a file's ``model_max_length`` (blocks still merge)."""
    replaced = {target_of(k) for k in overrides if isinstance(k, str)}
    if "data" in replaced:  # a new dataset also replaces the peers' dataset keys that need code
        replaced |= {"dataset", "dataset_dir", "datasets", "dataset_test_split"}

    def gone(key: Any) -> bool:
        if not isinstance(key, str) or key in overrides:
            return False
        target = target_of(key)  # a new dataset also drops the old one's dataset_config/_train_split
        return (target in replaced or key in replaced
                or (target.split(".", 1)[0] in MERGED_BLOCKS and target.split(".", 1)[0] in replaced))

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
                          f"(peers' key names are read as sftlab's keys, see README)")
    taken[target] = key


__all__ = ["ALIASES", "IGNORED", "KEYS", "LORA_SWITCHES", "REFUSED", "TORCH_DTYPES", "resolve_aliases"]
