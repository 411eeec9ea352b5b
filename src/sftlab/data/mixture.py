"""Mix several data specs into one training (or eval) set, drawn with a seed.

How a mix is drawn, exactly:

1. Each spec is loaded on its own (:func:`sftlab.data.loading.load_source`): its records are
   read, converted, normalised; the *usable* conversations form the source's pool. A spec's
   ``max_samples`` keeps the first N usable conversations of that source (reading stops there).
2. Weights: when no spec sets ``weight``, each source weighs its pool size, so the mix is simply
   everything (or, with an overall ``max_samples``, a sample proportional to the sources'
   sizes). When any spec sets one, a spec without a weight counts as ``1``; a source's share of
   the mix is ``weight / sum(weights)``; ``weight: 0`` loads and checks a source but draws
   nothing from it.
3. Size: a conversation is never repeated. The mix is the largest one in which every source
   gets its share without running out (``min(pool / share)`` over sources with a weight), capped
   by the overall ``max_samples``. Shares are rounded by largest remainder so they sum to the size.
4. Draw: each source's quota is a uniform sample without replacement from its pool, with
   ``random.Random(f"{seed}:{index}")`` (kept in source order); with more than one spec, the
   drawn conversations are then shuffled with ``random.Random(seed)``. Same specs and seed, same
   mix; another seed, another sample.

``stats["sources"]`` lists per source: records read, kept (usable), skipped by reason, dropped
turns, weight and how many were drawn into the mix.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

from sftlab.data.loading import LoadResult, load_source
from sftlab.data.readers import LOCAL_SPLIT
from sftlab.data.specs import DataSpec, parse_data_specs
from sftlab.errors import ConfigError, DataError, SftlabError


def _weights(specs: list[DataSpec], pools: list[int]) -> tuple[list[float], bool]:
    """Effective weights and whether they were given explicitly (see the module docstring)."""
    if all(s.weight is None for s in specs):
        return [float(n) for n in pools], False
    weights = [1.0 if s.weight is None else s.weight for s in specs]
    if sum(weights) <= 0:
        raise ConfigError("data: every source has weight 0; give at least one source a positive weight")
    for spec, w, n in zip(specs, weights, pools, strict=True):
        if w > 0 and n == 0:
            raise DataError(spec.label(), f"no usable conversations, but weight {w:g} asks for a share of the mix")
    return weights, True


def mix_quotas(pools: list[int], weights: list[float], max_samples: int | None = None) -> list[int]:
    """How many conversations each source gives: shares of the largest mix without repeats, capped."""
    total_w = sum(weights)
    if total_w <= 0:
        return [0] * len(pools)
    size = min(math.floor(n * total_w / w + 1e-9) for n, w in zip(pools, weights, strict=True) if w > 0)
    size = min(size, sum(pools))
    if max_samples is not None:
        size = min(size, max_samples)
    exact = [size * w / total_w for w in weights]
    quotas = [min(math.floor(x), n) for x, n in zip(exact, pools, strict=True)]
    order = sorted(range(len(pools)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    for i in order:
        if sum(quotas) >= size:
            break
        if quotas[i] < pools[i]:
            quotas[i] += 1
    return quotas


def _source_stats(spec: DataSpec, res: LoadResult, weight: float | None, drawn: int) -> dict[str, Any]:
    s = res.stats
    out = {"source": spec.label(), "path": spec.path, "name": spec.name, "split": spec.split, "format": spec.format,
           "records_read": s["records_read"], "kept": s["kept"], "skipped": s["skipped"],
           "dropped_turns": s["dropped_turns"], "weight": weight, "drawn": drawn, "notes": s["notes"]}
    for key in ("system_prompt_added", "repaired_surrogates"):
        if key in s:
            out[key] = s[key]
    return out


def _merge_stats(per_source: list[dict[str, Any]], size: int, seed: int, explicit: bool) -> dict[str, Any]:
    skipped: Counter = Counter()
    dropped: Counter = Counter()
    notes: list[str] = []
    for s in per_source:
        skipped.update(s["skipped"])
        dropped.update(s["dropped_turns"])
        if len(per_source) > 1:
            w = "" if s["weight"] is None else f", weight {s['weight']:g}"
            notes.append(f"source {s['source']}: read {s['records_read']}, kept {s['kept']}, "
                         f"drawn {s['drawn']}{w}")
            notes += [f"{s['source']}: {n}" for n in s["notes"]]
        else:
            notes += s["notes"]
    stats = {
        "source": " + ".join(s["source"] for s in per_source),
        "records_read": sum(s["records_read"] for s in per_source),
        "kept": size,
        "skipped": dict(skipped),
        "dropped_turns": dict(dropped),
        "notes": notes,
        "sources": per_source,
        "mix": {"seed": seed, "size": size, "weights": "explicit" if explicit else "source sizes"},
    }
    for key in ("system_prompt_added", "repaired_surrogates"):
        if any(key in s for s in per_source):
            stats[key] = sum(s.get(key, 0) for s in per_source)
    return stats


def load_mixture(
    specs: Any,
    *,
    seed: int,
    max_samples: int | None = None,
    max_rounds: int | None = None,
    strict: bool = False,
    conversation_field: str = "conversations",
    system_prompt: str | None = None,
) -> LoadResult:
    """Load every spec and draw the mix described in the module docstring.

    ``specs`` is a list of :class:`DataSpec` or anything :func:`parse_data_specs` accepts.
    ``max_samples`` caps the size of the whole mix; ``system_prompt`` is added to conversations
    without a system message. Returns the mixed conversations, their ids and the statistics
    (``stats["sources"]`` per source, ``stats["mix"]`` for the draw).
    """
    specs = parse_data_specs(specs)
    if max_samples is not None and max_samples < 1:
        raise SftlabError(f"max_samples must be at least 1, got {max_samples}")
    loaded = [
        load_source(s.path, name=s.name, split=s.split, fmt=s.format, columns=s.columns,
                    conversation_field=conversation_field, max_samples=s.max_samples, max_rounds=max_rounds,
                    strict=strict, system_prompt=system_prompt)
        for s in specs
    ]
    pools = [len(r.conversations) for r in loaded]
    weights, explicit = _weights(specs, pools)
    quotas = mix_quotas(pools, weights, max_samples)
    picked: list[tuple[list[dict[str, str]], str]] = []
    per_source = []
    for i, (spec, res, quota) in enumerate(zip(specs, loaded, quotas, strict=True)):
        idx = range(pools[i]) if quota == pools[i] else sorted(random.Random(f"{seed}:{i}").sample(range(pools[i]), quota))
        picked += [(res.conversations[k], res.ids[k]) for k in idx]
        per_source.append(_source_stats(spec, res, weights[i] if explicit else None, quota))
    if len(specs) > 1:
        random.Random(seed).shuffle(picked)
    stats = _merge_stats(per_source, len(picked), seed, explicit)
    return LoadResult(conversations=[c for c, _ in picked], ids=[i for _, i in picked], stats=stats)


def load_conversations(
    source: Any,
    *,
    conversation_field: str = "conversations",
    max_samples: int | None = None,
    sample_seed: int | None = None,
    max_rounds: int | None = None,
    strict: bool = False,
) -> LoadResult:
    """Load, validate and normalise conversations from ``source``.

    ``source`` is a JSON file (an array, or an object whose list values hold the records), a
    JSONL, Parquet or CSV file, a directory of those, ``"sharegpt"`` (the bundled ShareGPT V3),
    or a hub dataset id (``datasets.load_dataset(id, split="train")``); records may be in any
    format :mod:`sftlab.data.formats` detects. A list of data specs (or one
    :class:`DataSpec`) is loaded as a mix by :func:`load_mixture`, with ``sample_seed`` (0 when
    unset) as its seed.

    ``max_samples`` keeps the first N *usable* conversations (reading stops there), or, with
    ``sample_seed``, a seeded random sample of N of them (kept in source order).
    """
    if not isinstance(source, str):
        seed = sample_seed if (sample_seed is not None and max_samples is not None) else 0
        return load_mixture(source, seed=seed, max_samples=max_samples, max_rounds=max_rounds, strict=strict,
                            conversation_field=conversation_field)
    return load_source(source, split=LOCAL_SPLIT, conversation_field=conversation_field, max_samples=max_samples,
                       sample_seed=sample_seed, max_rounds=max_rounds, strict=strict)
