"""``sftlab report``: the experiment report (Markdown + self-contained HTML) from run and eval directories."""

from __future__ import annotations

import argparse

HELP = "Write report.md and a self-contained report.html from a baseline eval and fine-tuned runs (or sweeps)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", metavar="EVAL_DIR",
                   help="'sftlab eval' output of the base model (default: baseline_eval/ inside a --runs directory)")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                   help="run directories: an 'sftlab run' output, a sweep directory (all its finished runs), a sweep "
                        "run, or an 'sftlab train' output with its eval in eval/")
    p.add_argument("--output-dir", required=True, metavar="DIR", help="where report.md, report.html and the PNGs go")
    p.add_argument("--title", default="sftlab report", help="the report's title")
    p.add_argument("--no-model-check", action="store_true",
                   help="skip the self-check that loads the fine-tuned model (the other checks still run)")


def run(args: argparse.Namespace) -> int:
    from sftlab.report import write_report

    res = write_report(baseline=args.baseline, runs=args.runs, output_dir=args.output_dir, title=args.title,
                       model_check=not args.no_model_check)
    failed = [c["name"] for c in res["data"].get("checks", []) if not c["passed"]]
    print(f"report: {res['html']}  and  {res['markdown']}  (best run: {res['best_run']})")
    if failed:
        print(f"sftlab report: self-check(s) FAILED: {'; '.join(failed)} (see section 2 of the report)")
        return 1
    return 0
