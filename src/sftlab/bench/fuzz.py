"""The fuzz harness: seeded hostile inputs through sftlab's command line, in-process.

Every case (see :mod:`sftlab.bench.fuzz_cases` and :mod:`sftlab.bench.fuzz_configs`) runs
``sftlab.cli.main(argv)`` with stdout and stderr captured and a time bound, and must end cleanly:

* success (exit 0) with the expected counts: every good record kept, every skipped one counted
  (``stats.json``; ``summary.json`` for ``eval``), or
* a one-line error (exit 2) that names the file (or the config key) it is about,

never a traceback, a hang (past the time bound), another exit code, an accepted value that must be
refused, or a silently dropped record. Config cases run ``sftlab train`` up to the resolved
``TrainingArguments`` (the training itself is replaced by that dry run: cases stay cheap); the
tokenizer is loaded once per run and reused (a fresh copy of its template each case).

``python -m sftlab.bench.fuzz --size small|full [--seed N]`` prints a table by category and the ids
of unclean cases; ``--case data.jsonl:17`` reruns one case and keeps its directory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab import layout
from sftlab.bench.fuzz_cases import DATA_BUILDERS, Case, Env
from sftlab.bench.fuzz_configs import CONFIG_BUILDERS, EVAL_BUILDERS

BUILDERS = {**DATA_BUILDERS, **CONFIG_BUILDERS, **EVAL_BUILDERS}
#: Cases per category: ``small`` for ``make test`` (a few hundred, well under a minute of work),
#: ``full`` for ``make fuzz`` (over 10,000 data records and 1,000 configs).
SIZES: dict[str, dict[str, int]] = {
    "small": {"data.json": 20, "data.jsonl": 25, "data.csv": 12, "data.parquet": 10, "data.hub": 6, "data.dir": 8,
              "data.template": 8, "data.path": 10, "data.output_dir": 8, "config.yaml_key": 80,
              "config.override": 50, "config.yaml_shape": 14, "eval.inputs": 10, "eval.responses": 10},
    "full": {"data.json": 250, "data.jsonl": 400, "data.csv": 120, "data.parquet": 100, "data.hub": 60,
             "data.dir": 80, "data.template": 40, "data.path": 40, "data.output_dir": 40, "config.yaml_key": 600,
             "config.override": 400, "config.yaml_shape": 60, "eval.inputs": 100, "eval.responses": 100},
}
TIME_BOUND_S = 30.0


class CaseTimeout(BaseException):
    """Raised by SIGALRM in a case past its time bound (BaseException: no ``except Exception`` eats it)."""


@dataclass
class Outcome:
    case: Case
    clean: bool
    verdict: str  # "ok", "error" or what was unclean ("traceback: ...", "hang", "exit 1", ...)
    seconds: float
    stderr: str = ""


def case_rng(seed: int, case_id: str) -> random.Random:
    return random.Random(f"{seed}/{case_id}")


def build_case(case_id: str, seed: int, root: Path, env: Env) -> Case:
    """The case ``case_id`` (``category:index``) of the run seeded ``seed``, its files under ``root``."""
    category = case_id.rsplit(":", 1)[0]
    d = root / case_id.replace(":", "-")
    d.mkdir(parents=True)
    case = BUILDERS[category](case_rng(seed, case_id), d, env)
    case.id, case.category = case_id, category
    return case


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def harness_patches() -> Iterator[None]:
    """One tokenizer load per run (its template reset every case) and ``sftlab train`` as a dry run."""
    import sftlab.models.loading as loading
    import sftlab.train.recipe as recipe
    from sftlab.train.config import resolve_training_arguments

    real_load = loading.load_tokenizer
    cache: dict[tuple, tuple[Any, Any]] = {}

    def load_tokenizer(spec: str, *, chat_template: str | None = None, trust_remote_code: bool = False):
        key = (spec, trust_remote_code)
        if key not in cache:
            tok = real_load(spec, chat_template=None, trust_remote_code=trust_remote_code)
            cache[key] = (tok, tok.chat_template)
        tok, own = cache[key]
        tok.chat_template = own
        tok.chat_template = loading.resolve_chat_template(tok, chat_template)
        return tok

    def dry_train(cfg: Any, training_args: dict) -> dict:
        resolve_training_arguments(cfg, training_args)
        return {}

    real_train = recipe.train
    loading.load_tokenizer, recipe.train = load_tokenizer, dry_train
    try:
        yield
    finally:
        loading.load_tokenizer, recipe.train = real_load, real_train


def _error_line(stderr: str, command: str) -> str | None:
    lines = [ln for ln in stderr.splitlines() if f"sftlab {command}: error: " in ln]
    return lines[0] if len(lines) == 1 else None


def _counts_problem(case: Case) -> str | None:
    """For a success: the counts the case expects, read from what the command wrote."""
    out = Path(case.argv[case.argv.index("--output-dir") + 1]) if "--output-dir" in case.argv else None
    exp = case.expect
    if case.command == "preprocess" and out is not None:
        stats = json.loads((out / layout.STATS).read_text(encoding="utf-8"))
        skipped = sum(stats.get("skipped", {}).values())
        if stats["kept"] + skipped != stats["records_read"]:
            return f"counts do not add up: read {stats['records_read']}, kept {stats['kept']}, skipped {skipped}"
        if exp.kind == "ok" and exp.kept is not None and (stats["kept"], skipped) != (exp.kept, exp.skipped):
            return f"kept {stats['kept']} skipped {skipped}, expected kept {exp.kept} skipped {exp.skipped}"
        if exp.kind == "ok" and stats.get("repaired_surrogates", 0) != exp.repaired:
            return f"repaired {stats.get('repaired_surrogates', 0)}, expected {exp.repaired}"
    if case.command == "eval" and out is not None and exp.kind == "ok":
        summary = json.loads((out / layout.EVAL_SUMMARY).read_text(encoding="utf-8"))
        if summary["counts"]["prompts"] != exp.kept:
            return f"scored {summary['counts']['prompts']} prompts, expected {exp.kept}"
    return None


def judge(case: Case, rc: Any, stderr: str) -> tuple[bool, str]:
    """(clean, verdict) of a finished case."""
    if "Traceback (most recent call last)" in stderr:
        return False, "traceback on stderr"
    exp = case.expect
    if rc == 0:
        if exp.kind == "error":
            return False, "accepted, must be refused"
        problem = _counts_problem(case)
        return (False, problem) if problem else (True, "ok")
    if rc != 2:
        return False, f"exit {rc}"
    line = _error_line(stderr, case.command)
    if line is None:
        return False, "exit 2 without exactly one error line"
    if exp.kind == "ok":
        return False, f"refused, must succeed: {line[:160]}"
    if exp.names and not any(n in line for n in exp.names):
        return False, f"error does not name {exp.names[0]!r}: {line[:160]}"
    return True, "error"


def run_case(case: Case, *, time_bound: float = TIME_BOUND_S) -> Outcome:
    from sftlab.cli import main

    err, out = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    rc: Any = None
    crash = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            with _alarm(time_bound):
                rc = main(list(case.argv))
        except CaseTimeout:
            crash = f"hang: past {time_bound:.0f} s"
        except SystemExit as e:  # argparse
            rc = e.code
        except BaseException as e:  # noqa: BLE001 - everything that escapes main is a finding
            crash = f"traceback: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    seconds = time.perf_counter() - t0
    if crash:
        return Outcome(case, False, crash, seconds, err.getvalue())
    clean, verdict = judge(case, rc, err.getvalue())
    return Outcome(case, clean, verdict, seconds, err.getvalue())


def case_ids(size: str | dict[str, int], categories: list[str] | None = None) -> list[str]:
    plan = SIZES[size] if isinstance(size, str) else size
    return [f"{cat}:{i}" for cat, n in plan.items() if not categories or cat in categories for i in range(n)]


def run_fuzz(ids: list[str], *, seed: int, env: Env, keep: Path | None = None,
             time_bound: float = TIME_BOUND_S) -> list[Outcome]:
    """Build and run every case; case directories are removed unless ``keep`` is given."""
    import logging

    logging.getLogger("sftlab").setLevel(logging.ERROR)
    outcomes = []
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="sftlab-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    with harness_patches():
        _warm_up(env)
        for cid in ids:
            case = build_case(cid, seed, root, env)
            outcomes.append(run_case(case, time_bound=time_bound))
            if keep is None:
                shutil.rmtree(root / cid.replace(":", "-"), ignore_errors=True)
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return outcomes


def _warm_up(env: Env) -> None:
    """Load the tokenizer and import the heavy stages once, so that no case's time bound pays for them."""
    import sftlab.cli.eval_cmd  # noqa: F401
    import sftlab.prep.pipeline  # noqa: F401
    import sftlab.train.recipe  # noqa: F401
    from sftlab.models.loading import load_tokenizer

    load_tokenizer(env.tokenizer)
    if env.ifeval_inputs:
        from sftlab.eval.ifeval import instruction_registry

        instruction_registry()


def format_table(outcomes: list[Outcome]) -> str:
    """Cases, records, clean successes, clean errors and unclean outcomes per category, then the
    unclean case ids with what went wrong."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        r = rows[o.case.category]
        r["cases"] += 1
        r["records"] += o.case.records
        r["ok" if o.clean and o.verdict == "ok" else "error" if o.clean else "unclean"] += 1
        r["ms"] = max(r["ms"], int(o.seconds * 1000))
    total: Counter = Counter()
    head = f"{'category':<20}{'cases':>7}{'records':>9}{'ok':>7}{'error':>7}{'unclean':>9}{'slowest':>10}"
    lines = [head, "-" * len(head)]
    for cat in sorted(rows):
        r = rows[cat]
        lines.append(f"{cat:<20}{r['cases']:>7}{r['records']:>9}{r['ok']:>7}{r['error']:>7}{r['unclean']:>9}"
                     f"{r['ms'] / 1000:>9.1f}s")
        for k in ("cases", "records", "ok", "error", "unclean"):
            total[k] += r[k]
    lines.append("-" * len(head))
    lines.append(f"{'total':<20}{total['cases']:>7}{total['records']:>9}{total['ok']:>7}{total['error']:>7}"
                 f"{total['unclean']:>9}")
    bad = [o for o in outcomes if not o.clean]
    lines.append(f"unclean outcomes: {len(bad)}")
    for o in bad:
        lines.append(f"  {o.case.id}  {o.verdict}  {json.dumps(o.case.notes, ensure_ascii=True)[:120]}")
    return "\n".join(lines)


def default_env() -> Env:
    """The shared offline assets next to the repository (``../shared``)."""
    shared = Path(__file__).resolve().parents[3].parent / "shared"
    ifeval = shared / "ifeval" / "input_data.jsonl"
    return Env(tokenizer=str(shared / "tokenizers" / "SmolLM2-135M"), ifeval_inputs=str(ifeval) if ifeval.is_file()
               else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sftlab.bench.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=tuple(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case", action="append", metavar="ID", help="run only this case (e.g. data.jsonl:17); keeps it")
    p.add_argument("--category", action="append", help="run only these categories")
    p.add_argument("--keep", metavar="DIR", help="build the cases under DIR and keep them")
    p.add_argument("--tokenizer", help="tokenizer directory (default: ../shared/tokenizers/SmolLM2-135M)")
    p.add_argument("--ifeval-data", help="IFEval inputs to draw eval cases from (default: ../shared/ifeval)")
    args = p.parse_args(argv)
    env = default_env()
    env.tokenizer = args.tokenizer or env.tokenizer
    env.ifeval_inputs = args.ifeval_data or env.ifeval_inputs
    ids = args.case or case_ids(args.size, args.category)
    keep = Path(args.keep) if args.keep else (Path(tempfile.mkdtemp(prefix="sftlab-fuzz-case-")) if args.case else None)
    t0 = time.perf_counter()
    outcomes = run_fuzz(ids, seed=args.seed, env=env, keep=keep)
    print(format_table(outcomes))
    print(f"seed {args.seed}, {len(outcomes)} cases in {time.perf_counter() - t0:.0f} s" +
          (f"; case files in {keep}" if keep else ""))
    if args.case:
        for o in outcomes:
            print(f"--- {o.case.id}: {o.verdict}\nargv: {o.case.argv}\nstderr:\n{o.stderr[-3000:]}", file=sys.stderr)
    return 1 if any(not o.clean for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
