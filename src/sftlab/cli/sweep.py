"""``sftlab sweep SWEEP.yaml [--key value ...]``: train and evaluate a grid (or list) of configs."""

from __future__ import annotations

import argparse

HELP = "Train and evaluate every configuration of a sweep file; rerun to resume; writes results.csv/.md (and a report)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP.yaml",
                   help="sweep file: base (config file or mapping), grid and/or runs, eval, output_dir")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--key value",
                   help="override sweep keys (--output_dir DIR, --eval.limit 20, --report false) or, for any other "
                        "key, the base training config of every run (--max_steps 10)")


def run(args: argparse.Namespace) -> int:
    from sftlab.experiment.sweep import load_sweep_config, run_sweep
    from sftlab.report.results import results_markdown, varied_keys_of
    from sftlab.train.config import parse_overrides

    cfg = load_sweep_config(args.sweep, parse_overrides(args.overrides or [], nested=False))
    res = run_sweep(cfg)
    print(results_markdown(res["rows"], varied_keys_of([cfg.output_dir])))
    print(f"results: {res['results_csv']}  {res['results_md']}")
    if res.get("report"):
        print(f"report: {res['report']}")
    if res["failed"]:
        for name, err in res["failed"].items():
            print(f"sftlab sweep: run '{name}' failed: {err}")
        print("sftlab sweep: run the same command again to resume the failed runs")
        return 1
    return 0
