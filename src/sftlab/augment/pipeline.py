"""The augmentation itself: draw instruction sets, apply the entries in stage order, word the
instructions, decontaminate, verify with the IFEval checker, and count what happened.

Why: this is the only place that runs entries on conversations, so the guarantees live here:
each conversation draws from its own ``random.Random`` seeded by ``(seed, index)`` (byte-identical
output for a seed), and every emitted example is re-checked in strict mode by
:func:`sftlab.eval.ifeval.check_instruction`, the function ``sftlab eval`` scores with.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from sftlab.augment.catalogue import ALL_TYPES, conflicts
from sftlab.augment.checkers import PREFIX, check_own
from sftlab.augment.config import AugmentConfig
from sftlab.augment.decontaminate import Decontaminator, load_benchmark_prompts, load_ifeval_prompts
from sftlab.augment.entry import Entry, Job, Skip
from sftlab.augment.hygiene import DUPLICATE_PROMPT, hygiene_reason, prompt_key
from sftlab.augment.stats import (
    DROP_EMPTY,
    DROP_EMPTY_PROMPT,
    DROP_FAILED_CHECK,
    DROP_OVERLAP,
    DROP_PARTNER,
    AugmentStats,
)
from sftlab.augment.text import strip_opener
from sftlab.errors import ConfigError

if TYPE_CHECKING:
    from sftlab.data import LoadResult

MAX_ATTEMPTS = 3
"""Instruction sets tried per conversation before it is kept plain (each try is counted per type)."""


def verify(prompt: str, response: str, ids: list[str], kwargs: list[dict[str, Any]]) -> list[bool]:
    """Strict verdict per instruction, through :func:`sftlab.eval.ifeval.check_instruction` (what ``sftlab eval``
    uses) for IFEval ids, and sftlab's own checkers (:mod:`sftlab.augment.checkers`) for ``sftlab:*`` ids."""
    from sftlab.eval.ifeval import check_instruction, instruction_registry

    registry = instruction_registry()
    inp = {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}
    return [check_own(iid, kwargs[i], response) if iid.startswith(PREFIX)
            else check_instruction(registry, inp, i, response, [])[0] for i, iid in enumerate(ids)]


def _draw_types(rng: random.Random, pool: list[str], k_max: int, conflict: dict[str, set[str]],
                weights: list[float] | None = None) -> list[str]:
    """1..k_max mutually compatible ids (fewer when conflicts leave no room), drawn with ``weights``
    (one per ``pool`` id; None = uniform, drawn exactly as before weights existed)."""
    k = rng.choices(range(1, k_max + 1), weights=(5, 4, 2)[:k_max])[0]
    picked: list[str] = []
    weight = dict(zip(pool, weights, strict=True)) if weights is not None else None
    cands = list(pool)
    while cands and len(picked) < k:
        iid = rng.choice(cands) if weight is None else rng.choices(cands, weights=[weight[c] for c in cands])[0]
        picked.append(iid)
        cands = [c for c in cands if c not in conflict.get(iid, {iid}) and iid not in conflict.get(c, {c})]
    return picked


def _render(entry: Entry, kwargs: dict[str, Any], rng: random.Random) -> str:
    values = entry.fields(kwargs, rng) if entry.fields else dict(kwargs)
    return rng.choice(entry.phrasings).format(**values)


def augment_one(messages: list[dict[str, str]], ids: list[str], rng: random.Random,
                stats: AugmentStats | None = None, decon: Decontaminator | None = None, *,
                options: frozenset[str] = frozenset(), phrasing: str = "v1") -> dict[str, Any] | None:
    """Try one instruction set on one conversation; the augmented record, or None (reasons in ``stats``).

    Instructions an entry cannot serve are dropped with their reason and the rest go on; the
    example is then verified as a whole by the IFEval checker, and dropped if any instruction fails.
    ``options`` are the construction switches entries read (``AugmentConfig.options``); ``phrasing``
    ``v2`` words and places the instructions with :mod:`sftlab.augment.phrasing`.
    """
    stats = stats or AugmentStats()
    prompt = messages[-2]["content"]
    reply = messages[-1]["content"]
    for iid in ids:
        stats.type_row(iid)["attempted"] += 1
    empty = DROP_EMPTY if not reply.strip() else DROP_EMPTY_PROMPT if not prompt.strip() else None
    if empty:  # nothing to satisfy, or nothing to attach instructions to
        for iid in ids:
            stats.drop(iid, empty)
        return None
    order = sorted(ids, key=lambda i: ALL_TYPES[i].stage)
    used: list[tuple[str, dict[str, Any]]] = []
    text = reply
    for iid in order:
        try:
            text, kw = ALL_TYPES[iid].fn(Job(prompt=prompt, reply=text, ids=tuple(ids), rng=rng, options=options,
                                             source=reply))
        except Skip as s:
            stats.drop(iid, s.reason)
            continue
        used.append((iid, kw))
    if not used:
        return None
    # Instructions are listed in the drawn (random) order, not the application order.
    used.sort(key=lambda u: ids.index(u[0]))
    system = None
    if phrasing == "v2":
        from sftlab.augment.phrasing import place

        new_prompt, system = place(prompt, used, rng)
    else:
        sentences = [_render(ALL_TYPES[iid], kw, rng) for iid, kw in used]
        # A request without final punctuation ("Java foreach") reads as a run-on before a same-line instruction.
        ends_sentence = prompt.rstrip()[-1:] in tuple(".?!:;)\"'")
        sep = rng.choice((" ", "\n\n", "\n") if ends_sentence else ("\n\n", "\n"))
        new_prompt = prompt.rstrip() + sep + " ".join(sentences)
    if decon is not None and (decon.hits(new_prompt) or (system is not None and decon.hits(system))):
        for iid, _ in used:
            stats.drop(iid, DROP_OVERLAP)
        return None
    out_ids = [iid for iid, _ in used]
    out_kwargs = [kw for _, kw in used]
    verdicts = verify(new_prompt, text, out_ids, out_kwargs)
    if not all(verdicts):
        for iid, ok in zip(out_ids, verdicts, strict=True):
            stats.drop(iid, DROP_PARTNER if ok else DROP_FAILED_CHECK)
        return None
    for iid in out_ids:
        stats.type_row(iid)["emitted"] += 1
    new_messages = [dict(m) for m in messages]
    new_messages[-2]["content"] = new_prompt
    new_messages[-1]["content"] = text
    if system is not None:  # the instructions as (or appended to) the system message
        if new_messages[0]["role"] == "system":
            new_messages[0]["content"] = new_messages[0]["content"].rstrip() + "\n\n" + system
        else:
            new_messages.insert(0, {"role": "system", "content": system})
    return {"messages": new_messages, "augment": {"instruction_id_list": out_ids, "kwargs": out_kwargs}}


def _decontaminator(cfg: AugmentConfig, ifeval_prompts: list[str] | None,
                    stats: AugmentStats) -> Decontaminator | None:
    """The n-gram index over the benchmarks' prompts (IFEval's, IFBench's when set); None when off or
    without prompts. Says which in ``stats.decontamination``."""
    if not cfg.decontaminate:
        return None
    if ifeval_prompts is None and cfg.ifeval_data:
        ifeval_prompts = load_ifeval_prompts(cfg.ifeval_data)
    ifbench_prompts = load_benchmark_prompts("ifbench", cfg.ifbench_data) if cfg.ifbench_data else []
    if not ifeval_prompts and not ifbench_prompts:
        stats.decontamination = "no IFEval prompts given"
        return None
    against = [f"{len(ifeval_prompts)} IFEval"] if ifeval_prompts else []
    against += [f"{len(ifbench_prompts)} IFBench"] if ifbench_prompts else []
    stats.decontamination = f"{cfg.ngram}-gram overlap with {' and '.join(against)} prompts"
    return Decontaminator([*(ifeval_prompts or []), *ifbench_prompts], cfg.ngram)


def augment_conversations(
    conversations: list[list[dict[str, str]]],
    cfg: AugmentConfig,
    ifeval_prompts: list[str] | None = None,
    *,
    ids: list[str] | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], AugmentStats]:
    """Augment normalised conversations (``sftlab.data`` shape); returns ``(records, stats)``.

    Each record is ``{"id", "messages"}`` for a plain conversation, plus ``"augment":
    {"instruction_id_list", "kwargs"}`` for an augmented one, in input order. Decontamination uses
    ``ifeval_prompts`` when given, else the prompts of ``cfg.ifeval_data`` when set, and the prompts of
    ``cfg.ifbench_data`` when set (with ``cfg.decontaminate``). The output depends only on the inputs and ``cfg``.
    """
    from sftlab.eval.ifeval import ensure_punkt

    ensure_punkt()
    pool = cfg.active_types()
    weights = cfg.draw_weights()
    conflict = conflicts()
    stats = AugmentStats(conversations_in=len(conversations))
    decon = _decontaminator(cfg, ifeval_prompts, stats)
    ids = ids if ids is not None else [f"conv-{i}" for i in range(len(conversations))]
    if len(ids) != len(conversations):
        raise ConfigError(f"{len(ids)} ids for {len(conversations)} conversations")

    from tqdm.auto import tqdm

    records: list[dict[str, Any]] = []
    rules = tuple(cfg.hygiene)
    seen_prompts: set[str] = set()
    for i, messages in enumerate(tqdm(conversations, desc="augment", unit="conv", disable=not progress,
                                      dynamic_ncols=True)):
        if decon is not None and decon.conversation_hits(messages):
            stats.decontaminated += 1
            continue
        if rules:
            why = hygiene_reason(ids[i], messages, rules)
            if why is None and DUPLICATE_PROMPT in rules:
                key = prompt_key(messages)
                why = DUPLICATE_PROMPT if key in seen_prompts else None
                seen_prompts.add(key)
            if why is not None:
                stats.hygiene_drop(why)
                continue
        if cfg.strip_openers and messages and messages[-1]["role"] == "assistant":
            stripped = strip_opener(messages[-1]["content"])
            if stripped is not None:
                messages = [*messages[:-1], {**messages[-1], "content": stripped}]
                stats.openers_stripped += 1
        rng = random.Random(f"sftlab-augment/{cfg.seed}/{i}")
        record = None
        if pool and rng.random() < cfg.ratio:
            for _ in range(MAX_ATTEMPTS):
                record = augment_one(messages, _draw_types(rng, pool, cfg.max_instructions, conflict, weights), rng,
                                     stats, decon, options=cfg.options, phrasing=cfg.phrasing)
                if record is not None:
                    break
            if record is None:
                stats.kept_plain_after_failure += 1
            else:
                stats.augmented += 1
                n = len(record["augment"]["instruction_id_list"])
                stats.instructions_per_example[n] = stats.instructions_per_example.get(n, 0) + 1
        else:
            stats.chosen_plain += 1
        records.append({"id": ids[i], **(record or {"messages": [dict(m) for m in messages]})})
    stats.written = len(records)
    return records, stats


def augment_loaded(loaded: LoadResult, cfg: AugmentConfig, *, progress: bool = False) -> AugmentStats:
    """Augment a :class:`sftlab.data.LoadResult` in place: the one call the training pipeline needs.

    Replaces ``loaded.conversations`` and ``loaded.ids`` by the augmented and plain conversations
    (decontaminated ones removed) and records the statistics under ``loaded.stats["augment"]``.
    """
    records, stats = augment_conversations(loaded.conversations, cfg, ids=loaded.ids, progress=progress)
    loaded.conversations = [r["messages"] for r in records]
    loaded.ids = [r["id"] for r in records]
    loaded.augmented = {r["id"] for r in records if "augment" in r}
    loaded.stats["augment"] = {"config": cfg.to_dict(), **stats.to_dict()}
    return stats


def records_to_jsonl(records: list[dict[str, Any]]) -> str:
    """The output file's text: one JSON object per line, key order fixed.

    U+2028/U+2029 are escaped: valid JSON either way, but line-splitting readers (``str.splitlines``)
    would cut a record in two at a raw one.
    """
    return "".join(json.dumps(r, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
                   + "\n" for r in records)
