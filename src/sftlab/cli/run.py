"""``sftlab run CONFIG.yaml [--key value ...]``: baseline eval, training, fine-tuned eval and report in one go."""

from __future__ import annotations

import argparse

HELP = ("The whole experiment: evaluate the base model, train, evaluate the result, write the report; "
        "resumable stage by stage.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG.yaml",
                   help="a training config with an eval: block (ifeval_data, limit or sample, max_new_tokens, batch_size)")
    p.add_argument("--launcher", metavar="CMD",
                   help="launch training with this command, e.g. 'torchrun --nproc_per_node 2' (default: this Python)")
    p.add_argument("--no-report", action="store_true", help="stop after the fine-tuned evaluation")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--key value",
                   help="override any config key, e.g. --learning_rate 1e-4 --eval.limit 20 --output_dir runs/x")


def run(args: argparse.Namespace) -> int:
    from sftlab.experiment.run import format_outcome, load_run_config, run_experiment
    from sftlab.train.config import parse_overrides

    overrides = parse_overrides(args.overrides or [], nested=False)
    # argparse hands everything after CONFIG to the overrides: pick our own options out of them.
    launcher = overrides.pop("launcher", None) or args.launcher
    no_report = bool(overrides.pop("no_report", False)) or args.no_report
    cfg = load_run_config(args.config, overrides)
    res = run_experiment(cfg, launcher=launcher, report=not no_report)
    print(format_outcome(res))
    failed = [c["name"] for c in (res.get("report") or {}).get("data", {}).get("checks", []) if not c["passed"]]
    if failed:
        print(f"sftlab run: report self-check(s) FAILED: {'; '.join(failed)} (see section 2 of the report)")
        return 1
    return 0
