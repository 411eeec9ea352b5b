"""The evaluation bridge: load a model, generate responses to a task's prompts, score them.

Benchmark-agnostic (as lm-evaluation-harness's ``evaluator.py`` bridges its ``Task`` and ``LM``): the
task (:mod:`sftlab.eval.tasks`) supplies inputs, checkers and metrics, the generation engine
(:mod:`sftlab.eval.generate`) the responses. Writes the files :class:`sftlab.layout.EvalDir` names:
``responses.jsonl`` (appended as prompts finish: resumable), ``generation.json`` (the settings the
responses were made with, which a rerun must match), ``eval_results_{strict,loose}.jsonl`` and
``summary.json`` (last).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.eval.inputs import load_inputs, match_responses, select_inputs
from sftlab.eval.scoring import score_responses, write_results
from sftlab.eval.task import Task
from sftlab.eval.tasks import DEFAULT_BENCHMARK, get_task
from sftlab.layout import EvalDir
from sftlab.utils import atomic_write_json, environment_info, file_fingerprint, stable_hash


def _data_info(spec: str, inputs: list[dict], n_total: int, **selection: Any) -> dict:
    info: dict[str, Any] = {"source": spec, "n_total": n_total, "n_selected": len(inputs),
                            "selection": {k: v for k, v in selection.items() if v is not None},
                            "keys_hash": stable_hash([i["key"] for i in inputs])}
    p = Path(spec).expanduser()
    if p.is_file():
        info["fingerprint"] = file_fingerprint(p)
    return info


def _task_and_data(benchmark: str, data: str | None, ifeval_data: str | None) -> tuple[Task, str]:
    """The task, and its inputs: ``data``, else (IFEval only) ``ifeval_data``, else the task's hub id."""
    task = get_task(benchmark)
    if ifeval_data is not None and task.name != DEFAULT_BENCHMARK:
        raise SftlabError(f"--ifeval-data names IFEval inputs; for {task.title} use --data")
    return task, str(data or ifeval_data or task.hub_id)


def score_file(responses_path: str | Path, output_dir: str | Path, *, benchmark: str = DEFAULT_BENCHMARK,
               data: str | None = None, ifeval_data: str | None = None) -> dict:
    """Score-only mode: score an existing responses JSONL, matched to the inputs by prompt."""
    task, spec = _task_and_data(benchmark, data, ifeval_data)
    t0 = time.perf_counter()
    all_inputs = load_inputs(task, spec)
    matched = match_responses(responses_path, all_inputs, task.title, unmatched_is_error=task.unmatched_is_error)
    responses = matched.responses
    inputs = [inp for inp in all_inputs if inp["prompt"] in responses]
    results = score_responses(inputs, responses, task.registry(), task.title)
    data_info = _data_info(spec, inputs, len(all_inputs))
    if matched.unmatched:  # recorded only when there are some: an IFEval summary reads as before
        data_info["unmatched_responses"] = matched.unmatched_record()
    extra = {
        "mode": "score",
        "benchmark": task.name,
        "responses": str(Path(responses_path).resolve()),
        "model": None,
        "data": data_info,
        "generation": None,
        "scorer": task.scorer_info(),
        "scoring_seconds": round(time.perf_counter() - t0, 2),
        "environment": environment_info(),
    }
    return write_results(output_dir, results, extra)


def evaluate(model_spec: str, output_dir, *, benchmark: str = DEFAULT_BENCHMARK, data: str | None = None,
             ifeval_data: str | None = None, limit: int | None = None, sample: int | None = None, seed: int = 0,
             sample_offset: int = 0, gen=None, chat_template: str | None = None, progress: bool = True) -> dict:
    """Generate responses with ``model_spec`` and score them; resumable in ``output_dir``.

    Writes ``responses.jsonl``, ``eval_results_{strict,loose}.jsonl``, ``summary.json`` (and
    ``generation.json``, the settings the responses were made with, which a rerun must match).
    Returns the summary.
    """
    from sftlab.eval.generate import GenerationConfig, generate_responses, resolve_dtype
    from sftlab.models.loading import load_tokenizer, resolve_model

    task, spec = _task_and_data(benchmark, data, ifeval_data)
    gen = gen or GenerationConfig()
    task.ensure_data()  # fail now, not after an hour of generation
    t0 = time.perf_counter()
    all_inputs = load_inputs(task, spec)
    inputs = select_inputs(all_inputs, limit=limit, sample=sample, seed=seed, sample_offset=sample_offset,
                           title=task.title)
    out = Path(output_dir)
    ed = EvalDir(out)
    out.mkdir(parents=True, exist_ok=True)

    src = resolve_model(model_spec)
    tokenizer = load_tokenizer(model_spec, chat_template=chat_template)
    settings = {
        "benchmark": task.name,  # one benchmark's responses are never reused for another's prompts
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
    have = {r["prompt"] for r in generate_mod.read_responses_file(ed.responses)}
    model = None  # a rerun with every response on disk only rescores: no need to load the weights
    if any(p not in have for p in prompts):
        if gen.backend == "vllm":
            model = generate_mod.load_vllm_model(model_spec, dtype=gen.dtype)
        else:
            from sftlab.models.loading import load_model

            model = load_model(model_spec, dtype=settings["dtype"])
    responses, stats = generate_responses(model, tokenizer, prompts, gen, out_path=ed.responses,
                                          progress=progress, keys=[inp["key"] for inp in inputs])
    gen_stats = stats.to_dict()
    t1 = time.perf_counter()
    results = score_responses(inputs, dict(zip(prompts, responses, strict=True)), task.registry(), task.title)
    extra = {
        "mode": "generate+score",
        "benchmark": task.name,
        "model": {"spec": model_spec, "path": settings["model_path"], "gguf_file": src.gguf_file},
        # sample_offset 0 is left out, so a first set's record reads as it did before offsets existed
        "data": _data_info(spec, inputs, len(all_inputs), limit=limit, sample=sample,
                           seed=seed if sample is not None else None, sample_offset=sample_offset or None),
        "generation": {**gen.to_dict(), "chat_template": settings["chat_template"],
                       "chat_template_hash": settings["chat_template_hash"], "decoding": "greedy",
                       "dtype": settings["dtype"], "stats": gen_stats},
        "scorer": task.scorer_info(),
        "scoring_seconds": round(time.perf_counter() - t1, 2),
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "environment": environment_info(),
    }
    return write_results(out, results, extra)


#: Settings a generation.json written before the key existed stands for (sftlab's behaviour then).
_RECORDED_BEFORE = {"dtype": "float32", "sample_offset": 0, "benchmark": "ifeval"}


def _read_generation_record(gen_file: Path, responses: Path) -> dict[str, Any]:
    """The settings recorded beside existing responses; missing or unreadable is an error, never a reuse."""
    start_over = f"delete {responses} to start over (or use another --output-dir)"
    if not gen_file.is_file():
        raise SftlabError(f"{responses} holds responses but {gen_file} (the settings they were generated with) is "
                          f"missing, so they cannot be checked against this run; {start_over}")
    try:
        old = json.loads(gen_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SftlabError(f"{gen_file} is unreadable ({type(e).__name__}), so the responses in {responses} cannot "
                          f"be checked against this run; {start_over}") from None
    if not isinstance(old, dict):
        raise SftlabError(f"{gen_file} is not a JSON object, so the responses in {responses} cannot be checked "
                          f"against this run; {start_over}")
    for key, value in _RECORDED_BEFORE.items():
        old.setdefault(key, value)
    return old


def _check_resume_settings(out: Path, settings: dict) -> None:
    """Reuse responses only when the settings they were generated with are recorded and match.

    Compared: every key of ``settings`` (benchmark, model identity and path, chat template and its
    hash, system prompt, token limit, decoding, dtype, sample offset); a key the record lacks counts
    as ``None`` (records from before a key existed: :data:`_RECORDED_BEFORE`).
    """
    ed = EvalDir(out)
    gen_file, responses = ed.generation, ed.responses
    if responses.exists() and responses.stat().st_size > 0:
        old = _read_generation_record(gen_file, responses)
        changed = [k for k in settings if old.get(k) != settings[k]]
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in changed)
            raise SftlabError(
                f"{responses} holds responses generated with other settings ({diffs}); "
                f"use another --output-dir or delete that file to start over"
            )
    atomic_write_json(gen_file, settings)
