"""``sftlab bench``: the performance suite (see sftlab.bench)."""

from __future__ import annotations

import argparse

from sftlab.cli.preprocess import positive_int
from sftlab.eval.tasks import BENCHMARKS, DEFAULT_BENCHMARK

HELP = "Measure sftlab against the naive pipeline, side by side: preprocessing, training, loss, generation."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="shrink the work to finish in under 10 minutes on 2 cores")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write all figures to this JSON file")
    p.add_argument("--only", metavar="PARTS",
                   help="comma-separated parts to run (machine, preprocess, loss, generate, train); default all")
    p.add_argument("--eval-prompts", type=positive_int, metavar="N",
                   help="generate part: IFEval prompts of the real evaluation workload (default 32; 16 with --quick)")
    p.add_argument("--eval-benchmark", default=DEFAULT_BENCHMARK, metavar="NAME",
                   help=f"generate part: whose prompts the real workload answers ({', '.join(BENCHMARKS)}; "
                        f"default {DEFAULT_BENCHMARK})")
    p.add_argument("--eval-only", action="store_true",
                   help="generate part: measure only the real evaluation workload (skip the random-init comparison)")


def run(args: argparse.Namespace) -> int:
    from sftlab.bench import run_suite

    parts = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else None
    generate: dict = {}
    if args.eval_prompts is not None:
        generate["real_prompts"] = args.eval_prompts
    if args.eval_only:
        generate["synthetic"] = False
    if args.eval_benchmark != DEFAULT_BENCHMARK:
        from sftlab.eval.tasks import get_task

        get_task(args.eval_benchmark)  # an unknown name fails before any part runs
        generate["real_benchmark"] = args.eval_benchmark
    res = run_suite(quick=args.quick, parts=parts, json_path=args.json_path,
                    sizes={"generate": generate} if generate else None)
    if res["errors"]:
        for name, err in res["errors"].items():
            print(f"sftlab bench: part '{name}' failed: {err}")
        return 1
    return 0
