"""Every directory sftlab writes, and the files in it: the one place artifact names live.

Stages hand each other files on disk (a training run's summary is read by the sweep, the results
table and the report; an evaluation's ``summary.json`` by all of them), so a file name is a contract
between modules. Each kind of directory is a small frozen dataclass over its root path whose
properties name its files; modules ask it for paths instead of spelling names themselves::

    TrainDir(Path("runs/x")).summary          # runs/x/train_summary.json
    RunDir(Path("runs/demo")).finetuned.summary  # runs/demo/finetuned_eval/summary.json

Only names and paths live here: no reading, writing or validation (see :mod:`sftlab.train.checkpoints`,
:mod:`sftlab.report.results` and the stage modules for that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sftlab.utils import stable_hash

# ---------------------------------------------------------------------------------------- training

TRAIN_CONFIG = "sftlab_config.yaml"  # the resolved training config, TrainingArguments included
TRAIN_SUMMARY = "train_summary.json"  # written last: its presence means training finished
METRICS = "metrics.jsonl"  # one record per logged step
TRAINER_STATE = "trainer_state.json"
LOSS_CURVE = "loss_curve.png"
ADAPTER = "adapter"  # the LoRA adapter, next to the merged model
CACHE = "cache"  # preprocessing caches, one folder per key
EVAL_DATA = "eval_data"  # the preprocessed ``eval_data`` (its cache and stats), when a config names one
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Written into a checkpoint after everything else: its presence means the checkpoint is complete.
CHECKPOINT_MARKER = "sftlab_state.json"
#: The Trainer's pickle of TrainingArguments; sftlab removes it after every save.
TRAINING_ARGS_PICKLE = "training_args.bin"
LOCK = ".sftlab-train.lock"

# -------------------------------------------------------------------------------------- preprocess

CACHE_MANIFEST = "manifest.json"  # written last into a cache folder: lists every file and checksum
CACHE_DATA = "data"  # the Arrow dataset inside a cache folder
STATS = "stats.json"
#: Self-distilled replies under ``$SFTLAB_CACHE``: ``replies/<key>/responses.jsonl``.
REPLIES_CACHE = "replies"

# ------------------------------------------------------------------------------------------- eval

EVAL_SUMMARY = "summary.json"  # written last: its presence means the evaluation finished
RESPONSES = "responses.jsonl"  # appended as prompts finish; a rerun generates only the missing ones
GENERATION = "generation.json"  # the generation settings the responses were made with
RESULTS_STRICT = "eval_results_strict.jsonl"
RESULTS_LOOSE = "eval_results_loose.jsonl"

# ----------------------------------------------------------------------------------- sweep and run

SWEEP_MANIFEST = "sweep.json"
SWEEP_RUNS = "runs"
RUN_TRAIN_CONFIG = "train_config.yaml"  # the training config a sweep run or an experiment trains from
RUN_CONFIG = "run_config.yaml"  # the resolved config of ``sftlab run``
DONE = "DONE"  # a sweep run's marker, written once training and evaluation finished
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
BASELINE_EVAL = "baseline_eval"
FINETUNED_EVAL = "finetuned_eval"
TRAIN = "train"
EVAL = "eval"
REPORT = "report"

# ----------------------------------------------------------------------------------------- report

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
LOSS_ALL_RUNS = "loss_all_runs.png"
IFEVAL_PLOT = "ifeval.png"


def safe_name(text: str, max_len: int = 96) -> str:
    """A file or directory name made from free text: letters, digits, ``.``, ``+``, ``-``, ``_``.

    Over ``max_len`` characters the name is cut and a hash of the whole text appended, so it stays unique.
    """
    s = re.sub(r"[^A-Za-z0-9.+_-]+", "-", text).strip("-.") or "run"
    if len(s) > max_len:
        s = s[: max_len - 9].rstrip("-_.") + "-" + stable_hash(text, 8)
    return s


def eval_dir_name(name: str, benchmark: str) -> str:
    """An evaluation directory of one benchmark: IFEval keeps the plain name (``baseline_eval``, as
    before benchmarks existed, so old experiments resume), another is suffixed (``baseline_eval_ifbench``)."""
    return name if benchmark == "ifeval" else f"{name}_{benchmark}"  # eval.tasks.DEFAULT_BENCHMARK (no import: layout is a leaf)


def loss_plot_name(run: str) -> str:
    """The report's loss-curve PNG of one run."""
    return f"loss_{safe_name(run)}.png"


@dataclass(frozen=True)
class TrainDir:
    """The output directory of ``sftlab train``: model, tokenizer, records, checkpoints, cache."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / TRAIN_CONFIG

    @property
    def summary(self) -> Path:
        return self.root / TRAIN_SUMMARY

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def trainer_state(self) -> Path:
        return self.root / TRAINER_STATE

    @property
    def loss_curve(self) -> Path:
        return self.root / LOSS_CURVE

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER

    @property
    def cache(self) -> Path:
        return self.root / CACHE

    @property
    def eval_data(self) -> Path:
        return self.root / EVAL_DATA

    @property
    def stats(self) -> Path:
        """Preprocessing statistics of the training data (``eval_data``'s are in :attr:`eval_data`)."""
        return self.root / STATS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    def checkpoint(self, step: int) -> Path:
        return self.root / f"{CHECKPOINT_PREFIX}{step}"


@dataclass(frozen=True)
class EvalDir:
    """The output directory of ``sftlab eval``."""

    root: Path

    @property
    def summary(self) -> Path:
        return self.root / EVAL_SUMMARY

    @property
    def responses(self) -> Path:
        return self.root / RESPONSES

    @property
    def generation(self) -> Path:
        return self.root / GENERATION

    @property
    def results_strict(self) -> Path:
        return self.root / RESULTS_STRICT

    @property
    def results_loose(self) -> Path:
        return self.root / RESULTS_LOOSE


@dataclass(frozen=True)
class ReportDir:
    """The output directory of ``sftlab report``."""

    root: Path

    @property
    def markdown(self) -> Path:
        return self.root / REPORT_MD

    @property
    def html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def json(self) -> Path:
        return self.root / REPORT_JSON


@dataclass(frozen=True)
class SweepRunDir:
    """One run of a sweep: ``runs/<name>/`` with its training config, training, evaluation and marker."""

    root: Path

    @property
    def train_config(self) -> Path:
        return self.root / RUN_TRAIN_CONFIG

    @property
    def train(self) -> TrainDir:
        return TrainDir(self.root / TRAIN)

    @property
    def eval(self) -> EvalDir:
        return EvalDir(self.root / EVAL)

    def eval_for(self, benchmark: str) -> EvalDir:
        return EvalDir(self.root / eval_dir_name(EVAL, benchmark))

    @property
    def done(self) -> Path:
        return self.root / DONE


@dataclass(frozen=True)
class SweepDir:
    """The output directory of ``sftlab sweep``."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / SWEEP_MANIFEST

    @property
    def runs(self) -> Path:
        return self.root / SWEEP_RUNS

    def run(self, name: str) -> SweepRunDir:
        return SweepRunDir(self.runs / name)

    @property
    def baseline(self) -> EvalDir:
        return EvalDir(self.root / BASELINE_EVAL)

    def baseline_for(self, benchmark: str) -> EvalDir:
        return EvalDir(self.root / eval_dir_name(BASELINE_EVAL, benchmark))

    @property
    def report(self) -> ReportDir:
        return ReportDir(self.root / REPORT)

    @property
    def results_csv(self) -> Path:
        return self.root / RESULTS_CSV

    @property
    def results_md(self) -> Path:
        return self.root / RESULTS_MD


@dataclass(frozen=True)
class RunDir:
    """The output directory of ``sftlab run``: baseline eval, training, fine-tuned eval, report."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def train_config(self) -> Path:
        return self.root / RUN_TRAIN_CONFIG

    @property
    def baseline(self) -> EvalDir:
        return EvalDir(self.root / BASELINE_EVAL)

    @property
    def train(self) -> TrainDir:
        return TrainDir(self.root / TRAIN)

    @property
    def finetuned(self) -> EvalDir:
        return EvalDir(self.root / FINETUNED_EVAL)

    def baseline_for(self, benchmark: str) -> EvalDir:
        return EvalDir(self.root / eval_dir_name(BASELINE_EVAL, benchmark))

    def finetuned_for(self, benchmark: str) -> EvalDir:
        return EvalDir(self.root / eval_dir_name(FINETUNED_EVAL, benchmark))

    @property
    def report(self) -> ReportDir:
        return ReportDir(self.root / REPORT)
