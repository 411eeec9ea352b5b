"""The ``sftlab`` command line.

Each subcommand lives in its own module here (``sftlab/cli/<name>.py``) exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import the heavy stage
modules (torch, transformers) inside ``run`` so that ``sftlab --help`` stays instant.

User errors (:class:`sftlab.errors.SftlabError`) print one line and exit 2, no traceback. A full disk
is one too (naming the file). SIGTERM stops a command as Ctrl-C does (the same cleanup: partial
builds removed, checkpoints and responses so far kept), then exits 143 instead of 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT would raise KeyboardInterrupt, so that both share one cleanup."""


def _install_sigterm(main_pid: int) -> None:
    """SIGTERM raises :class:`Terminated` in this process; forked workers (a pool being terminated)
    keep the default action, so they die quietly."""

    def on_term(signum, frame):  # noqa: ARG001 - signal handler signature
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        pass


def _disk_full(e: Exception) -> str | None:
    from sftlab.prep.build_guard import is_disk_full

    if not is_disk_full(e):
        return None
    where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
    return f"no space left on device{where}; free some space and run the same command again"


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
    previous = signal.getsignal(signal.SIGTERM)
    _install_sigterm(os.getpid())
    try:
        return int(args._run(args) or 0)
    except SftlabError as e:
        print(f"sftlab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated:
        print(f"sftlab {args.command}: terminated (SIGTERM); rerun the same command to continue", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"sftlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk, however the writing library wrapped it; anything else is a bug
        msg = _disk_full(e)
        if msg is None:
            raise
        print(f"sftlab {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        if previous is not None:
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:  # not the main thread
                pass
