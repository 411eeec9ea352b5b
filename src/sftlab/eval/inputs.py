"""A benchmark's inputs: read and validated (file or hub), selected (--limit, seeded --sample), and
responses matched to them by prompt. Benchmark-agnostic: the task says which instruction ids exist.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.data import iter_jsonl, load_hub_split
from sftlab.errors import DataError, SftlabError
from sftlab.eval.inputcheck import check_kwargs
from sftlab.eval.task import Task

REQUIRED_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


def _looks_like_file(spec: str) -> bool:
    return spec.endswith((".jsonl", ".json")) or spec.startswith((".", "/", "~")) or Path(spec).exists()


def load_inputs(task: Task, path_or_id: str) -> list[dict]:
    """A task's inputs (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``) from a JSONL file or the hub.

    The hub dataset (e.g. ``google/IFEval``) is loaded through ``datasets`` only when asked for;
    offline users pass the local JSONL. Every record is validated, errors name file, line and field.
    """
    spec = str(path_or_id)
    if _looks_like_file(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(spec, f"{task.title} input file not found")
        records = list(iter_jsonl(path, where=spec, allow_empty=True))
    else:
        records = list(enumerate(_load_hub(task, spec), 1))
    if not records:
        raise DataError(spec, f"no {task.title} records")
    registry = task.registry()
    inputs = [_validate_input(spec, lineno, rec, registry) for lineno, rec in records]
    seen: dict[str, int] = {}
    for (lineno, _), inp in zip(records, inputs, strict=True):
        if inp["prompt"] in seen:
            raise DataError(spec, f"duplicate prompt (first seen at line {seen[inp['prompt']]})", line=lineno,
                            field="prompt")
        seen[inp["prompt"]] = lineno
    return inputs


def _load_hub(task: Task, dataset_id: str) -> list[dict]:
    ds = load_hub_split(dataset_id, what=f"{task.title} data", offline_hint=task.offline_hint)
    return [dict(r) for r in ds]


def _validate_input(spec: str, lineno: int, rec: Any, registry: dict[str, Any]) -> dict:
    if not isinstance(rec, dict):
        raise DataError(spec, "record is not a JSON object", line=lineno)
    for field in REQUIRED_FIELDS:
        if field not in rec:
            raise DataError(spec, "missing field", line=lineno, field=field)
    if not isinstance(rec["prompt"], str) or not rec["prompt"].strip():
        raise DataError(spec, "must be a non-empty string", line=lineno, field="prompt")
    ids, kwargs = rec["instruction_id_list"], rec["kwargs"]
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids) or not ids:
        raise DataError(spec, "must be a non-empty list of instruction ids", line=lineno, field="instruction_id_list")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) or k is None
                                                                         for k in kwargs):
        raise DataError(spec, f"must be a list of {len(ids)} objects, one per instruction", line=lineno,
                        field="kwargs")
    for iid in ids:
        if iid not in registry:
            raise DataError(spec, f"unknown instruction id '{iid}'", line=lineno, field="instruction_id_list")
    check_kwargs(spec, lineno, ids, kwargs, registry)  # against each checker's signature (sftlab.eval.inputcheck)
    return {"key": rec["key"], "prompt": rec["prompt"], "instruction_id_list": list(ids),
            "kwargs": [dict(k or {}) for k in kwargs]}


def select_inputs(inputs: list[dict], *, limit: int | None = None, sample: int | None = None,
                  seed: int = 0, sample_offset: int = 0, title: str = "IFEval") -> list[dict]:
    """The first ``limit`` inputs, or ``sample`` of them drawn at random with ``seed`` (kept in data order).

    ``sample_offset`` K takes draws K..K+sample-1 of the same seeded order instead of the first
    ``sample``: a second set disjoint from the first when K >= sample (see :func:`sample_order`).
    """
    if limit is not None and sample is not None:
        raise SftlabError("give either --limit or --sample, not both")
    n = limit if limit is not None else sample
    if n is not None and n < 1:
        raise SftlabError(f"--limit/--sample must be at least 1, got {n}")
    if sample_offset < 0:
        raise SftlabError(f"--sample-offset must be at least 0, got {sample_offset}")
    if sample_offset and sample is None:
        raise SftlabError(f"--sample-offset {sample_offset} needs --sample N (it skips seeded draws)")
    if limit is not None:
        return inputs[:limit]
    if sample is not None:
        if sample_offset and sample_offset + sample > len(inputs):
            raise SftlabError(f"--sample {sample} --sample-offset {sample_offset} needs {sample_offset + sample} "
                              f"prompts, but the {title} inputs hold only {len(inputs)}")
        if sample >= len(inputs):  # offset 0: everything, as before offsets existed
            return list(inputs)
        picked = sorted(sample_order(len(inputs), sample, seed, sample_offset))
        return [inputs[i] for i in picked]
    return list(inputs)


def sample_order(n: int, k: int, seed: int, offset: int = 0) -> list[int]:
    """Draws ``offset .. offset+k-1`` (indices below ``n``) of the order ``random.Random(seed).sample`` draws k in.

    Why not ``sample(range(n), offset + k)[offset:]``: ``random.sample`` draws from a shrinking pool
    or redraws repeats into a set, chosen by k against n, so a longer sample need not extend a
    shorter one. Continuing with the method that drew the first k keeps offset 0 exactly the old
    selection and the windows of one k disjoint.
    """
    first = random.Random(seed).sample(range(n), k)
    if offset == 0:
        return first
    for pool in (True, False):
        draws = _draw_distinct(n, offset + k, seed, pool=pool)
        if draws[:k] == first:
            return draws[offset:]
    raise RuntimeError(f"random.sample(range({n}), {k}) draws neither from a pool nor a set")  # a bug: traceback


def _draw_distinct(n: int, count: int, seed: int, *, pool: bool) -> list[int]:
    """``count`` distinct indices below ``n``, drawn exactly as ``random.sample`` draws by either method."""
    rng = random.Random(seed)
    out: list[int] = []
    if pool:
        left = list(range(n))
        for i in range(count):
            j = rng.randrange(n - i)  # randrange(m) is random.sample's _randbelow(m): the same draws
            out.append(left[j])
            left[j] = left[n - i - 1]
        return out
    seen: set[int] = set()
    while len(out) < count:
        j = rng.randrange(n)
        if j not in seen:
            seen.add(j)
            out.append(j)
    return out


@dataclass
class MatchedResponses:
    """Responses matched to a task's inputs (input prompt -> response), and the rows that matched none."""

    responses: dict[str, str]
    unmatched: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, the row's prompt, shortened)

    def unmatched_record(self) -> dict[str, Any]:
        """What summary.json records about the rows that matched no prompt: their number and lines."""
        return {"count": len(self.unmatched), "lines": [line for line, _ in self.unmatched]}


def _shorten(prompt: str) -> str:
    return prompt[:60].replace("\n", " ") + ("..." if len(prompt) > 60 else "")


def match_responses(path: str | Path, inputs: list[dict], title: str = "IFEval", *,
                    unmatched_is_error: bool = True) -> MatchedResponses:
    """Parse a responses JSONL (``prompt`` and ``response`` per line) and match it to ``inputs`` by prompt.

    A prompt matches exactly or, failing that, after stripping surrounding whitespace (released
    response files differ from their inputs there). A row matching no prompt is an error when
    ``unmatched_is_error``, else counted in :attr:`MatchedResponses.unmatched`; a file where no row
    matches is always an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "responses file not found")
    known = {inp["prompt"].strip(): inp["prompt"] for inp in inputs}
    known.update({inp["prompt"]: inp["prompt"] for inp in inputs})
    out = MatchedResponses({})
    first_line: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path, allow_empty=True):
        if not isinstance(rec, dict):
            raise DataError(str(path), "record is not a JSON object", line=lineno)
        for name in ("prompt", "response"):
            if not isinstance(rec.get(name), str):
                what = "missing field" if name not in rec else "must be a string"
                raise DataError(str(path), what, line=lineno, field=name)
        prompt = known.get(rec["prompt"], known.get(rec["prompt"].strip()))
        if prompt is None:
            if unmatched_is_error:
                raise DataError(str(path), f"prompt not found in the {title} inputs: '{_shorten(rec['prompt'])}'",
                                line=lineno, field="prompt")
            out.unmatched.append((lineno, _shorten(rec["prompt"])))
            continue
        if prompt in out.responses and out.responses[prompt] != rec["response"]:
            raise DataError(str(path), f"a second, different response to the prompt of line "
                            f"{first_line[prompt]}", line=lineno, field="prompt")
        first_line.setdefault(prompt, lineno)
        out.responses[prompt] = rec["response"]
    if not out.responses:
        raise DataError(str(path), f"no response matches a prompt of the {title} inputs" if out.unmatched
                        else "no responses")
    return out


def read_responses_for_scoring(path: str | Path, inputs: list[dict], title: str = "IFEval") -> dict[str, str]:
    """:func:`match_responses` where a row matching no prompt is an error: input prompt -> response."""
    return match_responses(path, inputs, title).responses
