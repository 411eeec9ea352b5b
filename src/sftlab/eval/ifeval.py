"""IFEval scoring with lm-evaluation-harness's checkers, made deterministic and official-conformant.

The instruction checkers come from ``lm_eval.tasks.ifeval`` (a maintained copy of Google's
``instruction_following_eval``); nothing is vendored. The per-prompt loop is sftlab's own, written
to match the official ``evaluation_lib`` (strict: the response as is; loose: any of eight
variants with the first/last line and ``*`` removed), with two deliberate differences from
``lm_eval.tasks.ifeval.utils``:

1. *kwargs.* lm_eval drops every falsy kwarg (``if v``) before ``build_description``; the official
   scorer passes the input's kwargs as they are. The two agree on the released data, but a
   legitimate ``0`` (``let_frequency: 0``, ``num_highlights: 0``) would silently become a *random*
   threshold in lm_eval. sftlab drops only ``None`` (the padding the hub's ``google/IFEval`` adds
   for unused arguments), which is exactly the official input format.
2. *Randomness.* Two official checkers draw random values while scoring: ``keywords:letter_frequency``
   replaces a non-letter (prompts 1122 and 1129 ask for ``#`` and ``!``) with a random letter, and
   ``langdetect`` samples n-grams at random (``language:response_language``, ``change_case:english_*``).
   Every argument-less ``build_description`` also draws (``random.choice``/``randint``, and
   ``instructions_util.generate_keywords`` via ``random.sample``). sftlab seeds Python's ``random``
   per (prompt, instruction index) and sets ``langdetect.DetectorFactory.seed = 0`` around each
   check, restoring the caller's state afterwards, so the same responses always get the same
   verdicts, independent of order. Strict and loose share one seeded instruction, so loose is
   never below strict (the official scorer draws twice and can disagree with itself).

NLTK's ``punkt_tab`` must be installed locally: ``lm_eval``'s ``instructions_util`` downloads it at
import time otherwise, so :func:`ensure_punkt` checks first and fails with instructions.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sftlab.data import iter_jsonl, load_hub_split
from sftlab.errors import DataError, SftlabError
from sftlab.eval.inputcheck import check_kwargs
from sftlab.utils import atomic_write_json, atomic_write_text, environment_info, file_fingerprint, stable_hash

IFEVAL_HUB_ID = "google/IFEval"
REQUIRED_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
RESULT_FIELDS = ("instruction_id_list", "prompt", "response", "follow_all_instructions", "follow_instruction_list")
LANGDETECT_SEED = 0
PUNKT_HINT = (
    "NLTK's punkt_tab tokenizer data is not installed locally, and IFEval scoring needs it; "
    "point NLTK_DATA at a folder that holds tokenizers/punkt_tab (here: ../shared/nltk_data) "
    "or install it once with: python -m nltk.downloader punkt_tab"
)


# --------------------------------------------------------------------------- the checkers


def ensure_punkt() -> None:
    """Make sure ``punkt_tab`` is found locally *before* lm_eval's ifeval modules are imported."""
    from sftlab.utils import setup_nltk_data

    setup_nltk_data()
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError as e:
        raise SftlabError(PUNKT_HINT) from e


def instruction_registry() -> dict[str, Any]:
    """lm_eval's ``INSTRUCTION_DICT`` (instruction id -> checker class), imported safely."""
    ensure_punkt()
    from lm_eval.tasks.ifeval import instructions_registry

    return instructions_registry.INSTRUCTION_DICT


@contextmanager
def seeded_checkers(seed: int) -> Iterator[None]:
    """Seed every randomness source the checkers use, then restore the caller's state."""
    import langdetect

    factory = langdetect.DetectorFactory
    old_state = random.getstate()
    old_seed = factory.seed
    random.seed(seed)
    factory.seed = LANGDETECT_SEED
    try:
        yield
    finally:
        random.setstate(old_state)
        factory.seed = old_seed


def _seed_for(prompt: str, index: int) -> int:
    return zlib.crc32(f"{index}\x1f{prompt}".encode())


def clean_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Drop the hub's ``None`` padding; keep everything else exactly as given (see module docstring)."""
    return {k: v for k, v in (kwargs or {}).items() if v is not None}


def loose_variants(response: str) -> list[str]:
    """The eight variants the official loose scorer tries: first/last line removed, ``*`` removed."""
    lines = response.split("\n")
    no_first = "\n".join(lines[1:]).strip()
    no_last = "\n".join(lines[:-1]).strip()
    no_both = "\n".join(lines[1:-1]).strip()
    base = [response, no_first, no_last, no_both]
    return [base[0], base[0].replace("*", ""), no_first, no_last, no_both,
            no_first.replace("*", ""), no_last.replace("*", ""), no_both.replace("*", "")]


def check_instruction(registry: dict[str, Any], inp: dict[str, Any], index: int, response: str,
                      variants: list[str]) -> tuple[bool, bool]:
    """(strict, loose) verdict for instruction ``index`` of ``inp``, deterministically seeded."""
    instruction_id = inp["instruction_id_list"][index]
    with seeded_checkers(_seed_for(inp["prompt"], index)):
        checker = registry[instruction_id](instruction_id)
        checker.build_description(**clean_kwargs(inp["kwargs"][index]))
        args = checker.get_instruction_args()
        if args and "prompt" in args:  # as the official scorer does
            checker.build_description(prompt=inp["prompt"])
        strict = bool(response.strip() and checker.check_following(response))
        loose = strict or any(bool(r.strip() and checker.check_following(r)) for r in variants)
    return strict, loose


# --------------------------------------------------------------------------- inputs


def _looks_like_file(spec: str) -> bool:
    return spec.endswith((".jsonl", ".json")) or spec.startswith((".", "/", "~")) or Path(spec).exists()


def load_ifeval_inputs(path_or_id: str) -> list[dict]:
    """IFEval inputs (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``) from a JSONL file or the hub.

    The hub dataset (default ``google/IFEval``) is loaded through ``datasets`` only when asked for;
    offline users pass the local JSONL. Every record is validated, errors name file, line and field.
    """
    spec = str(path_or_id)
    if _looks_like_file(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(spec, "IFEval input file not found")
        records = list(iter_jsonl(path, where=spec, allow_empty=True))
    else:
        records = list(enumerate(_load_hub(spec), 1))
    if not records:
        raise DataError(spec, "no IFEval records")
    registry = instruction_registry()
    inputs = [_validate_input(spec, lineno, rec, registry) for lineno, rec in records]
    seen: dict[str, int] = {}
    for (lineno, _), inp in zip(records, inputs, strict=True):
        if inp["prompt"] in seen:
            raise DataError(spec, f"duplicate prompt (first seen at line {seen[inp['prompt']]})", line=lineno,
                            field="prompt")
        seen[inp["prompt"]] = lineno
    return inputs


def _load_hub(dataset_id: str) -> list[dict]:
    ds = load_hub_split(dataset_id, what="IFEval data", offline_hint="Offline? Pass the local JSONL with "
                        "--ifeval-data (e.g. ../shared/ifeval/input_data.jsonl)")
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
    check_kwargs(spec, lineno, ids, kwargs, registry, seeded_checkers)  # sftlab.eval.inputcheck
    return {"key": rec["key"], "prompt": rec["prompt"], "instruction_id_list": list(ids),
            "kwargs": [dict(k or {}) for k in kwargs]}


def select_inputs(inputs: list[dict], *, limit: int | None = None, sample: int | None = None,
                  seed: int = 0, sample_offset: int = 0) -> list[dict]:
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
                              f"prompts, but the IFEval inputs hold only {len(inputs)}")
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


def read_responses_for_scoring(path: str | Path, inputs: list[dict]) -> dict[str, str]:
    """Parse a responses JSONL (``prompt`` and ``response`` per line) and match it to ``inputs`` by prompt."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "responses file not found")
    known = {inp["prompt"] for inp in inputs}
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path, allow_empty=True):
        if not isinstance(rec, dict):
            raise DataError(str(path), "record is not a JSON object", line=lineno)
        for field in ("prompt", "response"):
            if not isinstance(rec.get(field), str):
                what = "missing field" if field not in rec else "must be a string"
                raise DataError(str(path), what, line=lineno, field=field)
        prompt = rec["prompt"]
        if prompt not in known:
            shown = prompt[:60].replace("\n", " ") + ("..." if len(prompt) > 60 else "")
            raise DataError(str(path), f"prompt not found in the IFEval inputs: '{shown}'", line=lineno,
                            field="prompt")
        if prompt in out and out[prompt] != rec["response"]:
            raise DataError(str(path), f"a second, different response to the prompt of line "
                            f"{first_line[prompt]}", line=lineno, field="prompt")
        first_line.setdefault(prompt, lineno)
        out[prompt] = rec["response"]
    if not out:
        raise DataError(str(path), "no responses")
    return out


# --------------------------------------------------------------------------- scoring


def score_responses(inputs: list[dict], responses: dict[str, str]) -> dict:
    """Score ``responses`` (prompt -> response) on ``inputs``; every input needs a response.

    Returns ``{"strict": [...], "loose": [...], "metrics": {...}, "counts": {...},
    "per_instruction": {"by_id": ..., "by_category": ...}}``; the row lists are in the official
    ``eval_results_*.jsonl`` format, in input order.
    """
    if not inputs:
        raise SftlabError("no IFEval inputs to score")
    missing = [inp["key"] for inp in inputs if inp["prompt"] not in responses]
    if missing:
        raise SftlabError(f"{len(missing)} IFEval prompt(s) have no response (keys {missing[:5]}...)")
    registry = instruction_registry()
    strict_rows, loose_rows = [], []
    for inp in inputs:
        response = responses[inp["prompt"]]
        variants = loose_variants(response)
        verdicts = [check_instruction(registry, inp, i, response, variants)
                    for i in range(len(inp["instruction_id_list"]))]
        for rows, j in ((strict_rows, 0), (loose_rows, 1)):
            follow = [v[j] for v in verdicts]
            rows.append({"instruction_id_list": inp["instruction_id_list"], "prompt": inp["prompt"],
                         "response": response, "follow_all_instructions": all(follow),
                         "follow_instruction_list": follow})
    return {"strict": strict_rows, "loose": loose_rows, **aggregate(strict_rows, loose_rows)}


def aggregate(strict_rows: list[dict], loose_rows: list[dict]) -> dict:
    """Headline accuracies, the counts behind them, and accuracy per instruction id and category."""
    n_prompts = len(strict_rows)
    n_inst = sum(len(r["follow_instruction_list"]) for r in strict_rows)
    counts = {
        "prompts": n_prompts,
        "instructions": n_inst,
        "prompt_level_strict": sum(r["follow_all_instructions"] for r in strict_rows),
        "inst_level_strict": sum(sum(r["follow_instruction_list"]) for r in strict_rows),
        "prompt_level_loose": sum(r["follow_all_instructions"] for r in loose_rows),
        "inst_level_loose": sum(sum(r["follow_instruction_list"]) for r in loose_rows),
    }
    metrics = {
        "prompt_level_strict_acc": counts["prompt_level_strict"] / n_prompts,
        "inst_level_strict_acc": counts["inst_level_strict"] / n_inst,
        "prompt_level_loose_acc": counts["prompt_level_loose"] / n_prompts,
        "inst_level_loose_acc": counts["inst_level_loose"] / n_inst,
    }
    tallies: dict[str, dict[str, list[int]]] = {"by_id": {}, "by_category": {}}
    for s_row, l_row in zip(strict_rows, loose_rows, strict=True):
        for iid, s, lo in zip(s_row["instruction_id_list"], s_row["follow_instruction_list"],
                              l_row["follow_instruction_list"], strict=True):
            for table, name in (("by_id", iid), ("by_category", iid.split(":", 1)[0])):
                t = tallies[table].setdefault(name, [0, 0, 0])
                t[0] += 1
                t[1] += int(s)
                t[2] += int(lo)
    per_instruction = {
        table: {name: {"count": c, "strict_acc": s / c, "loose_acc": lo / c}
                for name, (c, s, lo) in sorted(entries.items())}
        for table, entries in tallies.items()
    }
    return {"metrics": metrics, "counts": counts, "per_instruction": per_instruction}


def format_table(summary: dict) -> str:
    """A plain-text table: the four headline figures, then accuracy per instruction category."""
    m, c = summary, summary["counts"]
    lines = [
        f"IFEval: {c['prompts']} prompts, {c['instructions']} instructions",
        f"{'':<28}{'strict':>18}{'loose':>18}",
        f"{'prompt-level accuracy':<28}"
        f"{_cell(m['prompt_level_strict_acc'], c['prompt_level_strict'], c['prompts']):>18}"
        f"{_cell(m['prompt_level_loose_acc'], c['prompt_level_loose'], c['prompts']):>18}",
        f"{'instruction-level accuracy':<28}"
        f"{_cell(m['inst_level_strict_acc'], c['inst_level_strict'], c['instructions']):>18}"
        f"{_cell(m['inst_level_loose_acc'], c['inst_level_loose'], c['instructions']):>18}",
        "",
        f"{'category':<28}{'n':>6}{'strict':>10}{'loose':>10}",
    ]
    for name, row in summary["per_instruction"]["by_category"].items():
        lines.append(f"{name:<28}{row['count']:>6}{100 * row['strict_acc']:>9.1f}%{100 * row['loose_acc']:>9.1f}%")
    return "\n".join(lines)


def _cell(acc: float, k: int, n: int) -> str:
    return f"{100 * acc:.1f}% ({k}/{n})"


def write_results(output_dir: str | Path, results: dict, extra: dict) -> dict:
    """Write ``eval_results_{strict,loose}.jsonl`` and ``summary.json``; returns the summary."""
    out = Path(output_dir)
    for name in ("strict", "loose"):
        text = "".join(json.dumps({k: row[k] for k in RESULT_FIELDS}, ensure_ascii=False) + "\n"
                       for row in results[name])
        atomic_write_text(out / f"eval_results_{name}.jsonl", text)
    summary = {**results["metrics"], "counts": results["counts"], **extra,
               "per_instruction": results["per_instruction"]}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _scorer_info() -> dict:
    from importlib.metadata import version

    return {
        "checkers": f"lm_eval {version('lm_eval')} (lm_eval.tasks.ifeval)",
        "adjustments": [
            "kwargs: only None values dropped (official input format), not every falsy value as lm_eval does",
            "random draws seeded per (prompt, instruction index); langdetect DetectorFactory.seed = 0",
        ],
    }


def _data_info(spec: str, inputs: list[dict], n_total: int, **selection: Any) -> dict:
    info: dict[str, Any] = {"source": spec, "n_total": n_total, "n_selected": len(inputs),
                            "selection": {k: v for k, v in selection.items() if v is not None},
                            "keys_hash": stable_hash([i["key"] for i in inputs])}
    p = Path(spec).expanduser()
    if p.is_file():
        info["fingerprint"] = file_fingerprint(p)
    return info


# --------------------------------------------------------------------------- end to end


def score_file(responses_path: str | Path, output_dir: str | Path, *, ifeval_data: str = IFEVAL_HUB_ID) -> dict:
    """Score-only mode: score an existing responses JSONL, matched to the inputs by prompt."""
    t0 = time.perf_counter()
    all_inputs = load_ifeval_inputs(ifeval_data)
    responses = read_responses_for_scoring(responses_path, all_inputs)
    inputs = [inp for inp in all_inputs if inp["prompt"] in responses]
    results = score_responses(inputs, responses)
    extra = {
        "mode": "score",
        "responses": str(Path(responses_path).resolve()),
        "model": None,
        "data": _data_info(ifeval_data, inputs, len(all_inputs)),
        "generation": None,
        "scorer": _scorer_info(),
        "scoring_seconds": round(time.perf_counter() - t0, 2),
        "environment": environment_info(),
    }
    return write_results(output_dir, results, extra)


def evaluate(model_spec: str, output_dir, *, ifeval_data: str = IFEVAL_HUB_ID, limit: int | None = None,
             sample: int | None = None, seed: int = 0, sample_offset: int = 0, gen=None,
             chat_template: str | None = None, progress: bool = True) -> dict:
    """Generate responses with ``model_spec`` and score them; resumable in ``output_dir``.

    Writes ``responses.jsonl``, ``eval_results_{strict,loose}.jsonl``, ``summary.json`` (and
    ``generation.json``, the settings the responses were made with, which a rerun must match).
    Returns the summary.
    """
    from sftlab.eval.generate import GenerationConfig, generate_responses, resolve_dtype
    from sftlab.models.loading import load_tokenizer, resolve_model

    gen = gen or GenerationConfig()
    ensure_punkt()  # fail now, not after an hour of generation
    t0 = time.perf_counter()
    all_inputs = load_ifeval_inputs(ifeval_data)
    inputs = select_inputs(all_inputs, limit=limit, sample=sample, seed=seed, sample_offset=sample_offset)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    src = resolve_model(model_spec)
    tokenizer = load_tokenizer(model_spec, chat_template=chat_template)
    settings = {
        "model": model_spec,
        "model_path": str(Path(src.path_or_id).resolve()) if src.is_local else src.path_or_id,
        "gguf_file": src.gguf_file,
        "chat_template": chat_template or "auto",
        "chat_template_hash": stable_hash(tokenizer.chat_template),
        "system_prompt": gen.system_prompt,
        "max_new_tokens": gen.max_new_tokens,
        "decoding": "greedy",
        "dtype": resolve_dtype(gen.dtype) if gen.backend == "hf" else gen.dtype,
        "sample_offset": sample_offset,  # another offset is another prompt set: never one dir for two
    }
    _check_resume_settings(out, settings)

    import sftlab.eval.generate as generate_mod

    prompts = [inp["prompt"] for inp in inputs]
    have = {r["prompt"] for r in generate_mod.read_responses_file(out / "responses.jsonl")}
    model = None  # a rerun with every response on disk only rescores: no need to load the weights
    if any(p not in have for p in prompts):
        if gen.backend == "vllm":
            model = generate_mod.load_vllm_model(model_spec, dtype=gen.dtype)
        else:
            from sftlab.models.loading import load_model

            model = load_model(model_spec, dtype=settings["dtype"])
    responses, stats = generate_responses(model, tokenizer, prompts, gen, out_path=out / "responses.jsonl",
                                          progress=progress, keys=[inp["key"] for inp in inputs])
    gen_stats = stats.to_dict()
    t1 = time.perf_counter()
    results = score_responses(inputs, dict(zip(prompts, responses, strict=True)))
    extra = {
        "mode": "generate+score",
        "model": {"spec": model_spec, "path": settings["model_path"], "gguf_file": src.gguf_file},
        # sample_offset 0 is left out, so a first set's record reads as it did before offsets existed
        "data": _data_info(ifeval_data, inputs, len(all_inputs), limit=limit, sample=sample,
                           seed=seed if sample is not None else None, sample_offset=sample_offset or None),
        "generation": {**gen.to_dict(), "chat_template": settings["chat_template"],
                       "chat_template_hash": settings["chat_template_hash"], "decoding": "greedy",
                       "dtype": settings["dtype"], "stats": gen_stats},
        "scorer": _scorer_info(),
        "scoring_seconds": round(time.perf_counter() - t1, 2),
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "environment": environment_info(),
    }
    return write_results(out, results, extra)


def _check_resume_settings(out: Path, settings: dict) -> None:
    """Refuse to mix responses generated with different settings in one responses.jsonl."""
    gen_file = out / "generation.json"
    responses = out / "responses.jsonl"
    if responses.exists() and responses.stat().st_size > 0 and gen_file.exists():
        try:
            old = json.loads(gen_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if isinstance(old, dict):
            old.setdefault("dtype", "float32")  # written before generation had a dtype setting
            old.setdefault("sample_offset", 0)  # written before --sample-offset existed
            changed = [k for k in settings if old.get(k) != settings[k]]
            if changed:
                diffs = ", ".join(f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in changed)
                raise SftlabError(
                    f"{responses} holds responses generated with other settings ({diffs}); "
                    f"use another --output-dir or delete that file to start over"
                )
    atomic_write_json(gen_file, settings)
