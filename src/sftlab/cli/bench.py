"""``sftlab bench``: the performance suite (see sftlab.bench)."""

from __future__ import annotations

import argparse

HELP = "Measure sftlab against the naive pipeline, side by side: preprocessing, training, loss, generation."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="shrink the work to finish in under 10 minutes on 2 cores")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write all figures to this JSON file")
    p.add_argument("--only", metavar="PARTS",
                   help="comma-separated parts to run (machine, preprocess, loss, generate, train); default all")


def run(args: argparse.Namespace) -> int:
    from sftlab.bench import run_suite

    parts = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else None
    res = run_suite(quick=args.quick, parts=parts, json_path=args.json_path)
    if res["errors"]:
        for name, err in res["errors"].items():
            print(f"sftlab bench: part '{name}' failed: {err}")
        return 1
    return 0
