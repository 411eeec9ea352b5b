"""``sftlab eval``: generate IFEval responses with a model and score them, or score a responses file."""

from __future__ import annotations

import argparse

from sftlab.eval.generate import _DTYPE_ALIASES, BACKENDS, DTYPES, ENGINES, GenerationConfig
from sftlab.eval.ifbench import IFBENCH_HUB_ID
from sftlab.eval.ifeval import IFEVAL_HUB_ID
from sftlab.eval.tasks import BENCHMARKS, DEFAULT_BENCHMARK

_GEN = GenerationConfig()  # the one home of every generation default this command shows

HELP = "Evaluate a model on IFEval (greedy generation + official strict/loose scoring), or score a responses file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="MODEL",
                     help="model to evaluate: hub id, checkpoint or `sftlab train` output dir, .gguf file, "
                          "or smollm2-135m-instruct-gguf")
    src.add_argument("--responses", metavar="FILE",
                     help="score only: JSONL with 'prompt' and 'response' per line, matched to the inputs by prompt")
    p.add_argument("--output-dir", required=True, metavar="DIR",
                   help="where responses.jsonl, eval_results_{strict,loose}.jsonl and summary.json go "
                        "(rerunning into the same DIR resumes generation)")
    p.add_argument("--benchmark", default=DEFAULT_BENCHMARK, metavar="NAME",  # checked by get_task: one line
                   help=f"which benchmark: {', '.join(BENCHMARKS)} (default {DEFAULT_BENCHMARK}); ifbench is "
                        f"AllenAI's IFBench, 58 constraint types that are not IFEval's")
    p.add_argument("--data", default=None, metavar="FILE_OR_HUB_ID",
                   help="the benchmark's inputs: a local JSONL (key, prompt, instruction_id_list, kwargs) or a hub "
                        f"dataset id (default: {IFEVAL_HUB_ID} for ifeval, {IFBENCH_HUB_ID} for ifbench; offline, "
                        "e.g. ../shared/ifbench/IFBench_test.jsonl)")
    # default None (help shows the real one): so an IFEval-only option given with --benchmark ifbench is caught
    p.add_argument("--ifeval-data", default=None, metavar="FILE_OR_HUB_ID",
                   help="IFEval inputs: a local JSONL (key, prompt, instruction_id_list, kwargs) or a hub "
                        f"dataset id (default: {IFEVAL_HUB_ID}; offline, pass the local file)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--limit", type=int, metavar="N", help="evaluate the first N prompts only")
    sel.add_argument("--sample", type=int, metavar="N", help="evaluate N prompts drawn at random (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    p.add_argument("--sample-offset", type=int, default=0, metavar="K",
                   help="with --sample N: take draws K..K+N-1 of the seeded order instead of the first N; "
                        "--sample-offset N gives a second set disjoint from the first (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=_GEN.max_new_tokens,
                   help=f"response length cap in tokens (default {_GEN.max_new_tokens})")
    p.add_argument("--batch-size", type=_batch_size, default=_GEN.batch_size, metavar="N|auto",
                   help="prompts generated together (default auto: up to 64 rows for the continuous engine, "
                        "fewer when their KV cache would take over a quarter of the available memory; 16 for static)")
    p.add_argument("--dtype", default=_GEN.dtype, choices=DTYPES + tuple(_DTYPE_ALIASES),
                   help="weights and activations while generating: auto (default: bfloat16 on a CPU with native "
                        "bf16 instructions or a GPU that supports it, else float32), float32 (the exact path), "
                        "bfloat16, or int8 (CPU: float32 with int8 dynamic-quantised linear layers; fidelity "
                        "not yet measured); recorded in generation.json and the summary")
    p.add_argument("--backend", choices=BACKENDS, default=_GEN.backend,
                   help="hf (transformers, CPU or GPU) or vllm (needs vLLM and a CUDA GPU)")
    p.add_argument("--engine", choices=ENGINES, default=_GEN.engine,
                   help="hf batching: continuous (finished rows are refilled with waiting prompts), static "
                        "(transformers generate() batch by batch), or auto (continuous when the model allows)")
    p.add_argument("--system-prompt", metavar="TEXT", default=_GEN.system_prompt,
                   help="system message before each prompt (default: none, or the template's own default)")
    p.add_argument("--chat-template", metavar="NAME|FILE", default=None,
                   help="chat template: 'chatml', a .jinja file, or the tokenizer's own (default)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def _inputs(args: argparse.Namespace, benchmark: str) -> str | None:
    """``--data``, or ``--ifeval-data`` for IFEval (kept as it was); both, or the IFEval one elsewhere, is an error."""
    from sftlab.errors import SftlabError

    if args.ifeval_data is not None and args.data is not None:
        raise SftlabError("give the inputs with either --data or --ifeval-data, not both")
    if args.ifeval_data is not None and benchmark != DEFAULT_BENCHMARK:
        raise SftlabError(f"--ifeval-data names IFEval inputs; for --benchmark {benchmark} use --data FILE_OR_HUB_ID")
    return args.data if args.data is not None else args.ifeval_data


def run(args: argparse.Namespace) -> int:
    from sftlab.errors import SftlabError
    from sftlab.eval.bridge import evaluate, score_file
    from sftlab.eval.scoring import format_table
    from sftlab.eval.tasks import get_task
    from sftlab.train.validate import check_output_dir

    check_output_dir(args.output_dir)  # a file, /dev/null, under /proc: refused before any work

    task = get_task(args.benchmark)
    data = _inputs(args, task.name)
    if args.responses:
        gen_only = [f"--{n.replace('_', '-')}" for n in ("limit", "sample", "system_prompt", "chat_template")
                    if getattr(args, n) is not None]
        if args.sample_offset:
            gen_only.append("--sample-offset")
        if gen_only:
            raise SftlabError(f"{', '.join(gen_only)} only apply when generating (--model), not with --responses")
        summary = score_file(args.responses, args.output_dir, benchmark=args.benchmark, data=data)
    else:
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                               system_prompt=args.system_prompt, backend=args.backend, engine=args.engine,
                               dtype=args.dtype)
        summary = evaluate(args.model, args.output_dir, benchmark=args.benchmark, data=data, limit=args.limit,
                           sample=args.sample, seed=args.seed, sample_offset=args.sample_offset, gen=gen,
                           chat_template=args.chat_template, progress=not args.no_progress)
    # IFEval's table reads as it always did; another benchmark's names its headline figure
    print(format_table(summary, task.title, None if task.name == DEFAULT_BENCHMARK else task.headline))
    unmatched = summary["data"].get("unmatched_responses")
    if unmatched:
        lines = ", ".join(map(str, unmatched["lines"][:10])) + (", ..." if unmatched["count"] > 10 else "")
        print(f"\n{unmatched['count']} response row(s) matched no {task.title} prompt and were not scored "
              f"(line {lines} of {args.responses})")
    stats = (summary.get("generation") or {}).get("stats")
    if stats:
        print(f"\ngenerated {stats['n_generated']} responses ({stats['n_reused']} reused from an earlier run): "
              f"{stats['new_tokens']} tokens in {stats['seconds']:.1f} s = {stats['tokens_per_s']:.1f} tok/s")
    from sftlab.layout import EVAL_SUMMARY, RESULTS_LOOSE, RESULTS_STRICT

    print(f"results in {args.output_dir}/ ({EVAL_SUMMARY}, {RESULTS_STRICT}, {RESULTS_LOOSE})")
    return 0
