"""``sftlab compare``: two ``sftlab eval`` outputs compared on their shared prompts, with paired standard errors."""

from __future__ import annotations

import argparse

HELP = ("Compare a baseline and a fine-tuned 'sftlab eval' output on the prompts they share: the four IFEval "
        "figures with paired standard errors, and the per-type split into trained and held-out types.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, metavar="EVAL_DIR", help="'sftlab eval' output of the base model")
    p.add_argument("--finetuned", required=True, metavar="EVAL_DIR",
                   help="'sftlab eval' output of the fine-tuned model")
    p.add_argument("--train-dir", metavar="DIR", default=None,
                   help="'sftlab train' output whose augment: block says which instruction types were trained "
                        "(default: the fine-tuned eval's model, when that is an 'sftlab train' output)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every number as JSON (percent and points)")


def run(args: argparse.Namespace) -> int:
    from sftlab.experiment.compare import compare_evals, format_comparison
    from sftlab.utils import atomic_write_json

    res = compare_evals(args.baseline, args.finetuned, args.train_dir)
    print(format_comparison(res))
    if args.json:
        atomic_write_json(args.json, res)
        print(f"\nwrote {args.json}")
    return 0
