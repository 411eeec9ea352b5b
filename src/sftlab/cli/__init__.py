"""The ``sftlab`` command line.

Each subcommand lives in its own module here (``sftlab/cli/<name>.py``) exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import the heavy stage
modules (torch, transformers) inside ``run`` so that ``sftlab --help`` stays instant.

User errors (:class:`sftlab.errors.SftlabError`) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sftlab import __version__
from sftlab.errors import EXIT_USER_ERROR, SftlabError

# name on the command line -> module under sftlab.cli
COMMANDS: dict[str, str] = {
    "preprocess": "preprocess",
    "augment": "augment",
    "inspect": "inspect_cmd",
    "check-masking": "check_masking",
    "train": "train",
    "eval": "eval_cmd",
    "sweep": "sweep",
    "report": "report",
    "compare": "compare",
    "run": "run",
    "bench": "bench",
    "chat": "chat",
    "export": "export",
}

#: Commands whose speed depends on the CPU: they start with one line naming its kind and matmul peak
#: (stdout; ``chat`` is left out because its stdout is the replies alone, the light commands because
#: they compute nothing that the CPU's kind would explain).
START_LINE_COMMANDS = frozenset({"preprocess", "augment", "train", "eval", "sweep", "run", "bench", "export"})


def _load(module: str):
    return importlib.import_module(f"sftlab.cli.{module}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftlab",
        description="Supervised fine-tuning of small chat models: mask, train, evaluate on IFEval, sweep, report.",
    )
    parser.add_argument("--version", action="version", version=f"sftlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = _load(module)
        except ModuleNotFoundError as e:  # a command still being built must not break the others
            if e.name != f"sftlab.cli.{module}":
                raise
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if only is None or only == name:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    if args.command in START_LINE_COMMANDS and os.environ.get("RANK", "0") == "0":
        from sftlab.models.hardware import start_line

        print(start_line(args.command), flush=True)
    try:
        return int(args._run(args) or 0)
    except SftlabError as e:
        print(f"sftlab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"sftlab {args.command}: interrupted", file=sys.stderr)
        return 130
