"""Sweeps: one base training config, many override sets, each trained and evaluated in its own directory.

A sweep file (YAML)::

    base: configs/cpu-demo.yaml        # a training config file, or the config inline as a mapping
    grid:                              # cartesian product of these values ...
      learning_rate: [1.0e-5, 5.0e-5]
      num_train_epochs: [1, 2]
    runs:                              # ... and/or explicit override sets (combined with the grid when both)
      - {name: short, max_samples: 100}
    eval: {ifeval_data: ../shared/ifeval/input_data.jsonl, limit: 20, max_new_tokens: 256, batch_size: 8}
    output_dir: sweeps/demo
    baseline: true                     # evaluate the base config's model once, into output_dir/baseline_eval
    report: true                       # write output_dir/report when all runs are done
    launcher: null                     # e.g. "torchrun --nproc_per_node 8" to train each run on several GPUs

A relative ``base`` path is looked up from the current directory, then next to the sweep file. Run
names come from the varied values (``lr-1e-05_ep-2``) or an explicit ``name``.

Each run lives in ``output_dir/runs/<name>/``: ``train_config.yaml`` (the base config with the run's
overrides and its ``output_dir``), ``train/`` (the ``sftlab train`` output), ``eval/`` (the
``sftlab eval`` output) and ``DONE`` (written atomically once both finished). Training runs in a
subprocess (``python -m sftlab train``): memory is returned to the system between runs, a multi-GPU
launcher slots in, and killing the sweep leaves a checkpoint that the same command resumes from.
Evaluation runs in-process through :func:`sftlab.ifeval.evaluate`, which resumes from
``responses.jsonl``. A rerun skips runs with a ``DONE`` file.

This module also reads finished runs back (:func:`load_run`, :func:`expand_run_dirs`) for the
results table and the report.
"""

from __future__ import annotations

import copy
import csv
import difflib
import io
import itertools
import json
import math
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftlab.errors import ConfigError, SftlabError
from sftlab.train import read_config_file
from sftlab.utils import atomic_write_json, atomic_write_text, stable_hash

SWEEP_KEYS = ("base", "grid", "runs", "eval", "output_dir", "baseline", "report", "launcher")
EVAL_KEYS = ("ifeval_data", "limit", "sample", "seed", "max_new_tokens", "batch_size", "system_prompt", "backend",
             "dtype")
DEFAULT_IFEVAL_DATA = "google/IFEval"

# Short names for the settings people sweep most, used in run directory names.
NAME_ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "ep",
    "max_steps": "steps",
    "total_batch_size": "bs",
    "per_device_train_batch_size": "pdbs",
    "warmup_ratio": "wu",
    "warmup_steps": "wus",
    "lr_scheduler_type": "sched",
    "model_max_length": "len",
    "weight_decay": "wd",
    "max_samples": "n",
    "masking": "mask",
    "seed": "seed",
}


def log(msg: str) -> None:
    """Progress messages go to stderr, like the progress bars, so stdout stays for results."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Config helpers shared with ``sftlab run``
# --------------------------------------------------------------------------------------------


def suggest(key: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_cli_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--lr", "1e-4", "--eval.limit=8", "--bf16"]`` -> ``{"lr": 1e-4, "eval.limit": 8, "bf16": True}``.

    Tokenised by :func:`sftlab.train.split_overrides`; values are parsed as YAML scalars so that
    numbers, booleans and ``null`` get their types (``1e-4`` included, which YAML 1.1 would leave a
    string). Dotted keys stay flat here: the sweep decides which of them are its own.
    """
    from sftlab.train import split_overrides

    return {key: parse_scalar(raw) for key, raw in split_overrides(tokens)}


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def parse_scalar(raw: str) -> Any:
    if _FLOAT_RE.match(raw.strip()):
        return float(raw)
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def fix_floats(obj: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; turn such strings back into floats."""
    if isinstance(obj, dict):
        return {k: fix_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fix_floats(v) for v in obj]
    if isinstance(obj, str) and _FLOAT_RE.match(obj.strip()):
        return float(obj)
    return obj


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` inside nested mappings, creating them as needed."""
    parts = key.split(".")
    cur = cfg
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set '{key}': '{p}' is not a mapping")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    for k, v in overrides.items():
        set_dotted(out, k, copy.deepcopy(v))
    return out


# --------------------------------------------------------------------------------------------
# Eval settings
# --------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """The ``eval:`` block of a sweep or run config: what ``sftlab eval`` gets for every model."""

    ifeval_data: str = DEFAULT_IFEVAL_DATA
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    max_new_tokens: int = 1024
    batch_size: int | None = None  # None: the generation engine's memory-aware default
    system_prompt: str | None = None
    backend: str = "hf"
    dtype: str = "auto"  # auto (bf16 where the hardware has it), float32 (exact) or bfloat16
    extra: dict[str, Any] = field(default_factory=dict)  # other GenerationConfig fields (e.g. engine)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "eval") -> EvalSettings:
        d = dict(d or {})
        d.update(d.pop("extra", None) or {})
        gen_fields = _generation_fields()
        valid = list(EVAL_KEYS) + [f for f in gen_fields if f not in EVAL_KEYS]
        extra = {}
        for k in list(d):
            if k not in valid:
                raise ConfigError(f"unknown key '{where}.{k}'{suggest(k, valid)}; valid keys: {', '.join(valid)}")
            if k not in EVAL_KEYS:
                extra[k] = d.pop(k)
        s = cls(**d, extra=extra)
        if s.limit is not None and s.sample is not None:
            raise ConfigError(f"{where}: give either 'limit' or 'sample', not both")
        for name in ("limit", "sample"):
            v = getattr(s, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ConfigError(f"{where}.{name} must be a positive integer, got {v!r}")
        for name in ("max_new_tokens", "batch_size"):
            v = getattr(s, name)
            if name == "batch_size" and v in (None, "auto"):
                s.batch_size = None
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{where}.{name} must be a positive integer, got {v!r}")
        from sftlab.errors import SftlabError
        from sftlab.generate import normalize_dtype

        try:
            s.dtype = normalize_dtype(s.dtype)
        except SftlabError as e:
            raise ConfigError(f"{where}.dtype: {e}") from None
        s.ifeval_data = str(s.ifeval_data)
        return s

    def generation_config(self):
        from sftlab.generate import GenerationConfig

        return GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                system_prompt=self.system_prompt, backend=self.backend, dtype=self.dtype,
                                **self.extra)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d

    def fingerprint(self) -> dict[str, Any]:
        """What decides the eval's outcome (batch size and engine do not, for greedy decoding)."""
        d = asdict(self)
        d.pop("batch_size")
        extra = d.pop("extra")
        d.update({k: v for k, v in extra.items() if k not in ("engine",)})
        if d["sample"] is None:
            d.pop("seed")
        return d


def _generation_fields() -> list[str]:
    import dataclasses

    from sftlab.generate import GenerationConfig

    return [f.name for f in dataclasses.fields(GenerationConfig)]


def eval_done(eval_dir: Path) -> bool:
    return (eval_dir / "summary.json").is_file()


def run_eval(model: str, eval_dir: Path, settings: EvalSettings, *, chat_template: str | None = None,
             label: str = "") -> dict:
    """Evaluate ``model`` into ``eval_dir`` unless it already holds a summary (resumes otherwise)."""
    if eval_done(eval_dir):
        log(f"sftlab: {label or eval_dir}: evaluation finished earlier, skipping ({eval_dir / 'summary.json'})")
        return json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    from sftlab.ifeval import evaluate

    if (eval_dir / "responses.jsonl").is_file():
        log(f"sftlab: {label or eval_dir}: resuming evaluation from {eval_dir / 'responses.jsonl'}")
    else:
        log(f"sftlab: {label or eval_dir}: evaluating {model} on IFEval")
    t0 = time.time()
    res = evaluate(model, eval_dir, ifeval_data=settings.ifeval_data, limit=settings.limit, sample=settings.sample,
                   seed=settings.seed, gen=settings.generation_config(), chat_template=chat_template)
    log(f"sftlab: {label or eval_dir}: evaluation took {time.time() - t0:.1f} s")
    _free_memory()
    return res


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


# --------------------------------------------------------------------------------------------
# Training in a subprocess
# --------------------------------------------------------------------------------------------


def train_done(train_dir: Path) -> bool:
    return (train_dir / "train_summary.json").is_file()


def validate_train_config(path: Path) -> None:
    """Let the training config loader judge the file now, before hours of other runs."""
    from sftlab.train import load_config

    load_config(path)


def validate_train_mapping(cfg: dict[str, Any], where: str = "") -> None:
    """Let the training config loader judge a training config *before* anything is written for it.

    Why before: a refused config (a typo, a secret such as ``hub_token``) must leave no
    ``train_config.yaml``, ``run_config.yaml`` or ``sweep.json`` behind, neither a secret on disk nor
    a record that a corrected rerun would be compared against and refused by.
    """
    from sftlab.train import load_config

    try:
        load_config(None, cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def run_training(config_path: Path, train_dir: Path, *, launcher: str | list[str] | None = None,
                 label: str = "") -> None:
    """Train from ``config_path`` in a subprocess unless ``train_dir`` holds a finished run.

    A half-done ``train_dir`` (checkpoints, no ``train_summary.json``) is resumed by ``sftlab train``
    itself, which finds the latest checkpoint.
    """
    if train_done(train_dir):
        log(f"sftlab: {label or train_dir}: training finished earlier, skipping ({train_dir / 'train_summary.json'})")
        return
    if launcher:
        cmd = shlex.split(launcher) if isinstance(launcher, str) else list(launcher)
    else:
        cmd = [sys.executable]
    cmd += ["-m", "sftlab", "train", str(config_path)]
    log(f"sftlab: {label or train_dir}: training: {shlex.join(cmd)}")
    t0 = time.time()
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SftlabError(f"training {label or config_path} failed (exit status {rc}); its output is above; "
                          f"run the same command again to resume from the last checkpoint")
    if not train_done(train_dir):
        raise SftlabError(f"training {label} exited normally but wrote no {train_dir / 'train_summary.json'}")
    log(f"sftlab: {label or train_dir}: training took {time.time() - t0:.1f} s")


def write_train_config(path: Path, cfg: dict[str, Any], *, what: str) -> None:
    """Write a run's training config, refusing to change it under a run that already started."""
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    if path.is_file():
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
        if old != yaml.safe_load(text):
            diff = sorted(k for k in set(old or {}) | set(cfg) if (old or {}).get(k) != cfg.get(k))
            raise ConfigError(
                f"{what} in {path.parent} was started with a different training config "
                f"(differs in: {', '.join(diff)}); use another output_dir or delete {path.parent}")
        return
    atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------
# Sweep config
# --------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    name: str
    overrides: dict[str, Any]
    run_dir: Path

    @property
    def train_dir(self) -> Path:
        return self.run_dir / "train"

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "train_config.yaml"

    @property
    def done_path(self) -> Path:
        return self.run_dir / "DONE"


@dataclass
class SweepConfig:
    base: dict[str, Any]
    runs: list[RunSpec]
    varied: list[str]
    eval: EvalSettings
    output_dir: Path
    baseline: bool = True
    report: bool = True
    launcher: str | list[str] | None = None
    source: str = ""
    base_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_dir(self) -> Path:
        return self.output_dir / "baseline_eval"

    @property
    def report_dir(self) -> Path:
        return self.output_dir / "report"

    def train_config(self, spec: RunSpec) -> dict[str, Any]:
        cfg = apply_overrides(self.base, spec.overrides)
        cfg["output_dir"] = str(spec.train_dir)
        return cfg


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple, dict)):
        return stable_hash(v, 6)
    s = str(v)
    if "/" in s:
        s = Path(s).name or s
    return s


def safe_name(text: str, max_len: int = 96) -> str:
    """Filesystem-safe and shell-friendly: letters, digits, ``.``, ``+``, ``-``, ``_``."""
    s = re.sub(r"[^A-Za-z0-9.+_-]+", "-", text).strip("-.") or "run"
    if len(s) > max_len:
        s = s[: max_len - 9].rstrip("-_.") + "-" + stable_hash(text, 8)
    return s


def run_name(overrides: dict[str, Any], varied: list[str]) -> str:
    """A stable name from the varied values, e.g. ``lr-2e-05_ep-3``."""
    parts = []
    for k in varied:
        if k in overrides:
            alias = NAME_ALIASES.get(k, k.replace(".", "-"))
            parts.append(f"{alias}-{_format_value(overrides[k])}")
    return safe_name("_".join(parts)) if parts else "run"


def expand_override_sets(grid: dict[str, Any] | None, runs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` (in key order), combined with each explicit run."""
    grid_sets: list[dict[str, Any]] = [{}]
    if grid:
        if not isinstance(grid, dict):
            raise ConfigError("sweep 'grid' must map setting names to lists of values")
        keys = list(grid)
        values = []
        for k in keys:
            v = grid[k]
            if not isinstance(v, list) or not v:
                raise ConfigError(f"sweep grid '{k}' must be a non-empty list of values, got {v!r}")
            values.append(v)
        grid_sets = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    run_sets: list[dict[str, Any]] = [{}]
    if runs is not None:
        if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
            raise ConfigError("sweep 'runs' must be a non-empty list of mappings (override sets)")
        run_sets = runs
    out = []
    for r in run_sets:
        for g in grid_sets:
            clash = set(r) & set(g) - {"name"}
            if clash:
                raise ConfigError(f"sweep: '{sorted(clash)[0]}' is set both in 'grid' and in 'runs'")
            out.append({**r, **g})
    return out


def load_sweep_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read a sweep file. ``overrides`` (dotted keys) set sweep keys (``output_dir``, ``eval.limit``, ...);
    any other key is applied to the base training config, for every run."""
    raw = fix_floats(read_config_file(path, "sweep config"))
    base_overrides = {}
    for k, v in (overrides or {}).items():
        if k.split(".")[0] in SWEEP_KEYS:
            set_dotted(raw, k, v)
        else:
            base_overrides[k] = v
    for k in raw:
        if k not in SWEEP_KEYS:
            raise ConfigError(f"{path}: unknown sweep key '{k}'{suggest(k, SWEEP_KEYS)}; valid keys: {', '.join(SWEEP_KEYS)}")
    if "base" not in raw:
        raise ConfigError(f"{path}: a sweep needs 'base': a training config file or an inline mapping")
    if "grid" not in raw and "runs" not in raw:
        raise ConfigError(f"{path}: a sweep needs 'grid' (values to combine) or 'runs' (a list of override sets)")
    base_path = None
    base = raw["base"]
    if isinstance(base, str):
        cand = Path(base)
        if not cand.is_file() and not cand.is_absolute():
            cand = Path(path).parent / base
        base_path = str(cand)
        base = fix_floats(read_config_file(cand, "base training config"))
    elif not isinstance(base, dict):
        raise ConfigError(f"{path}: 'base' must be a path to a training config or a mapping")
    base = apply_overrides(base, base_overrides)
    base_eval = base.pop("eval", None)
    eval_settings = EvalSettings.from_dict(raw.get("eval", base_eval), "eval")
    out_dir = raw.get("output_dir")
    if not out_dir:
        raise ConfigError(f"{path}: a sweep needs 'output_dir'")
    out_dir = Path(out_dir)

    sets = expand_override_sets(raw.get("grid"), raw.get("runs"))
    grid_keys = set(raw.get("grid") or {})
    keys: list[str] = []
    for s in sets:
        for k in s:
            if k != "name" and k not in keys:
                keys.append(k)
    varied = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in sets}) > 1]
    specs: list[RunSpec] = []
    seen: dict[str, int] = {}
    for s in sets:
        ov = {k: v for k, v in s.items() if k != "name"}
        for k in ov:
            if k in ("output_dir", "eval"):
                raise ConfigError(f"{path}: a run may not override '{k}'")
        if s.get("name"):  # an explicit name, plus the grid's values when it is combined with a grid
            grid_varied = [k for k in varied if k in grid_keys]
            name = safe_name(str(s["name"]) + ("_" + run_name(ov, grid_varied) if grid_varied else ""))
        else:
            name = run_name(ov, varied)
        if name in seen:
            name = f"{name}-{stable_hash(ov, 6)}"
        if name in seen:
            raise ConfigError(f"{path}: two runs have the same settings ({name})")
        seen[name] = 1
        specs.append(RunSpec(name=name, overrides=ov, run_dir=out_dir / "runs" / name))
    launcher = raw.get("launcher")
    if launcher is not None and not isinstance(launcher, (str, list)):
        raise ConfigError(f"{path}: 'launcher' must be a command line such as 'torchrun --nproc_per_node 2'")
    return SweepConfig(base=base, runs=specs, varied=varied, eval=eval_settings, output_dir=out_dir,
                       baseline=bool(raw.get("baseline", True)), report=bool(raw.get("report", True)),
                       launcher=launcher, source=str(path), base_path=base_path)


# --------------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------------


def _sweep_manifest(cfg: SweepConfig) -> dict[str, Any]:
    return {
        "kind": "sftlab-sweep",
        "source": cfg.source,
        "base": cfg.base,
        "eval": cfg.eval.to_dict(),
        "varied": cfg.varied,
        "runs": [{"name": s.name, "overrides": s.overrides, "dir": str(Path("runs") / s.name)} for s in cfg.runs],
        "baseline_eval": "baseline_eval" if cfg.baseline else None,
    }


def _check_manifest(cfg: SweepConfig, path: Path) -> dict[str, Any]:
    """Refuse to mix runs of a different base config or eval settings into one sweep directory.

    Adding runs to a finished sweep (a longer grid) is fine: their names are new.
    """
    new = _sweep_manifest(cfg)
    if not path.is_file():
        return new
    old = json.loads(path.read_text(encoding="utf-8"))
    if old.get("base") != json.loads(json.dumps(new["base"], default=str)):
        diff = sorted(k for k in set(old.get("base", {})) | set(cfg.base)
                      if old.get("base", {}).get(k) != new["base"].get(k))
        raise ConfigError(f"{path.parent} holds a sweep with a different base config (differs in: {', '.join(diff)}); "
                          f"use another output_dir or delete {path.parent}")
    if EvalSettings.from_dict(old.get("eval")).fingerprint() != cfg.eval.fingerprint():
        raise ConfigError(f"{path.parent} holds a sweep evaluated with different eval settings "
                          f"({old.get('eval')}); use another output_dir or delete {path.parent}")
    names = {r["name"] for r in new["runs"]}
    new["runs"] = new["runs"] + [r for r in old.get("runs", []) if r["name"] not in names]
    return new


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Train and evaluate every run (skipping finished ones), then write results and the report.

    A failing run is reported and the sweep goes on with the others; the returned ``failed`` lists them.
    """
    # Validate every run's training config before spending time on any of them, and before
    # writing anything: a refused config leaves no sweep.json or train_config.yaml behind.
    for spec in cfg.runs:
        validate_train_mapping(cfg.train_config(spec), f"run '{spec.name}'")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cfg.output_dir / "sweep.json"
    manifest = _check_manifest(cfg, manifest_path)
    atomic_write_json(manifest_path, manifest)
    for spec in cfg.runs:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        write_train_config(spec.config_path, cfg.train_config(spec), what=f"run '{spec.name}'")

    changed = False
    if cfg.baseline:
        if not eval_done(cfg.baseline_dir):
            changed = True
        run_eval(str(cfg.base["model"]), cfg.baseline_dir, cfg.eval, chat_template=cfg.base.get("chat_template"),
                 label="baseline")

    failed: dict[str, str] = {}
    finished: list[str] = []
    for i, spec in enumerate(cfg.runs, 1):
        label = f"run {i}/{len(cfg.runs)} '{spec.name}'"
        if spec.done_path.is_file():
            log(f"sftlab sweep: {label} finished earlier, skipping ({spec.done_path})")
            finished.append(spec.name)
            continue
        changed = True
        try:
            run_training(spec.config_path, spec.train_dir, launcher=cfg.launcher, label=label)
            summary = run_eval(str(spec.train_dir), spec.eval_dir, cfg.eval, label=label)
        except SftlabError as e:
            log(f"sftlab sweep: {label} failed: {e}")
            failed[spec.name] = str(e)
            continue
        except Exception as e:  # a bug in one run must not lose the others; keep its traceback visible
            traceback.print_exc()
            log(f"sftlab sweep: {label} failed: {type(e).__name__}: {e}")
            failed[spec.name] = f"{type(e).__name__}: {e}"
            continue
        atomic_write_json(spec.done_path, {"name": spec.name, "overrides": spec.overrides,
                                           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           **{k: summary.get(k) for k in FIGURES}})
        finished.append(spec.name)
        write_results(cfg.output_dir)

    rows = write_results(cfg.output_dir)
    report_path = None
    if cfg.report and failed:
        log("sftlab sweep: no report while runs have failed; rerun the sweep to resume them")
    elif cfg.report and not cfg.baseline:
        log(f"sftlab sweep: no report without a baseline (baseline: false); write one with: sftlab report "
            f"--baseline BASE_EVAL_DIR --runs {cfg.output_dir} --output-dir {cfg.report_dir}")
    if cfg.report and not failed and cfg.baseline:
        if changed or not (cfg.report_dir / "report.html").is_file():
            from sftlab.report import write_report

            res = write_report(baseline=cfg.baseline_dir, runs=[cfg.output_dir], output_dir=cfg.report_dir)
            report_path = res["html"]
        else:
            log(f"sftlab sweep: report is up to date, skipping ({cfg.report_dir / 'report.html'})")
            report_path = cfg.report_dir / "report.html"
    return {"finished": finished, "failed": failed, "rows": rows, "results_csv": cfg.output_dir / "results.csv",
            "results_md": cfg.output_dir / "results.md", "report": report_path}


# --------------------------------------------------------------------------------------------
# Reading runs back
# --------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One finished (or partly finished) training run and its evaluation, as read from disk."""

    name: str
    run_dir: Path
    train_dir: Path
    eval_dir: Path | None
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    eval_summary: dict[str, Any] | None
    varied: dict[str, Any] = field(default_factory=dict)
    status: str = "done"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or undecodable bytes
        raise SftlabError(f"cannot read {path}: {e}") from e


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines, ignoring a half-written last line (a run killed mid-write)."""
    out = []
    if not path.is_file():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise SftlabError(f"{path}:{i + 1}: invalid JSON: {e}") from e
    return out


def is_sweep_dir(d: Path) -> bool:
    return (d / "sweep.json").is_file()


def _locate(d: Path) -> tuple[Path, Path | None]:
    """(train dir, eval dir) of a run directory in any of the layouts sftlab writes."""
    for train_name, eval_names in (("train", ("eval", "finetuned_eval")),):
        if (d / train_name / "train_summary.json").is_file() or (d / train_name / "sftlab_config.yaml").is_file():
            for e in eval_names:
                if (d / e / "summary.json").is_file():
                    return d / train_name, d / e
            return d / train_name, None
    if (d / "train_summary.json").is_file():
        for e in ("eval", "finetuned_eval"):
            if (d / e / "summary.json").is_file():
                return d, d / e
        return d, None
    raise SftlabError(f"{d} is not a run directory: expected a sweep (sweep.json), an 'sftlab run' output "
                      f"(train/ and finetuned_eval/), a sweep run (train/ and eval/) or an 'sftlab train' output")


def load_run(d: str | Path, *, name: str | None = None, varied: dict[str, Any] | None = None) -> RunRecord:
    d = Path(d)
    train_dir, eval_dir = _locate(d)
    cfg_path = train_dir / "sftlab_config.yaml"
    config = fix_floats(read_config_file(cfg_path, "resolved training config")) if cfg_path.is_file() else {}
    summary = read_json(train_dir / "train_summary.json") if (train_dir / "train_summary.json").is_file() else {}
    metrics = read_jsonl(train_dir / "metrics.jsonl")
    eval_summary = read_json(eval_dir / "summary.json") if eval_dir is not None else None
    status = "done" if summary and eval_summary else ("trained" if summary else "incomplete")
    return RunRecord(name=name or d.resolve().name, run_dir=d, train_dir=train_dir, eval_dir=eval_dir, config=config,
                     summary=summary, metrics=metrics, eval_summary=eval_summary, varied=dict(varied or {}),
                     status=status)


def expand_run_dirs(dirs: list[str | Path], *, require_eval: bool = True, quiet: bool = False) -> list[RunRecord]:
    """Run records for each directory; a sweep directory stands for all its runs (in sweep order)."""
    out: list[RunRecord] = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise SftlabError(f"run directory not found: {d}")
        if is_sweep_dir(d):
            man = read_json(d / "sweep.json")
            varied_keys = man.get("varied", [])
            for r in man.get("runs", []):
                rd = d / r["dir"]
                if not (rd / "DONE").is_file():
                    if not quiet:
                        log(f"sftlab: {rd} has not finished (no DONE file); left out")
                    continue
                ov = r.get("overrides", {})
                out.append(load_run(rd, name=r["name"], varied={k: ov.get(k) for k in varied_keys}))
        else:
            rec = load_run(d)
            if require_eval and rec.eval_summary is None:
                raise SftlabError(f"{d} has no finished evaluation (summary.json in eval/ or finetuned_eval/); "
                                  f"run 'sftlab eval --model {rec.train_dir} --output-dir {d / 'eval'}' first")
            out.append(rec)
    names = [r.name for r in out]
    for i, r in enumerate(out):  # two runs from different sweeps may share a name
        if names.count(r.name) > 1:
            r.name = f"{r.name}@{r.run_dir.resolve().parent.parent.name if r.run_dir.parent.name == 'runs' else i}"
    return out


# --------------------------------------------------------------------------------------------
# Results table
# --------------------------------------------------------------------------------------------

FIGURES = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
FIGURE_LABELS = {
    "prompt_level_strict_acc": "prompt strict",
    "inst_level_strict_acc": "inst strict",
    "prompt_level_loose_acc": "prompt loose",
    "inst_level_loose_acc": "inst loose",
}


def first(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def final_train_loss(rec: RunRecord) -> float | None:
    losses = [m["loss"] for m in rec.metrics if isinstance(m.get("loss"), (int, float)) and "eval_loss" not in m]
    if losses:
        return float(losses[-1])
    v = first(rec.summary, "final_loss", "final_train_loss", "train_loss")
    return float(v) if isinstance(v, (int, float)) else None


_TA_DEFAULTS: dict[str, Any] | None = None


def training_args_default(key: str) -> Any:
    """``TrainingArguments``' own default for a key the config left unset (it is what the run used)."""
    global _TA_DEFAULTS
    if _TA_DEFAULTS is None:
        import dataclasses

        try:
            from transformers import TrainingArguments

            _TA_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingArguments)
                            if f.default is not dataclasses.MISSING}
        except ImportError:  # pragma: no cover - transformers is a hard dependency
            _TA_DEFAULTS = {}
    return _TA_DEFAULTS.get(key)


def _setting(c: dict[str, Any], key: str) -> Any:
    v = c.get(key)
    return training_args_default(key) if v is None else v


def format_warmup(c: dict[str, Any]) -> Any:
    """transformers 5 reads ``warmup_steps`` below 1 as a fraction of the total steps."""
    ratio = c.get("warmup_ratio")
    steps = _setting(c, "warmup_steps")
    if isinstance(steps, float) and 0 < steps < 1:
        return f"{steps:g} of steps"
    if steps:
        return f"{steps:g} steps" if isinstance(steps, (int, float)) else str(steps)
    if ratio:
        return f"{ratio:g} of steps"
    return 0


def training_settings(rec: RunRecord) -> dict[str, Any]:
    """The settings the results table and the report show, from the resolved config and the summary."""
    c, s = rec.config, rec.summary
    max_steps = _setting(c, "max_steps")
    return {
        "learning_rate": _setting(c, "learning_rate"),
        "epochs": _setting(c, "num_train_epochs") if not (isinstance(max_steps, int) and max_steps > 0)
        else f"max_steps {max_steps}",
        "max_steps": max_steps,
        "total_batch": first(s, "effective_batch_size", default=first(c, "total_batch_size")),
        "per_device_batch": first(s, "per_device_train_batch_size", default=_setting(c, "per_device_train_batch_size")),
        "gradient_accumulation": first(s, "gradient_accumulation_steps", default=c.get("gradient_accumulation_steps")),
        "warmup": format_warmup(c),
        "scheduler": _setting(c, "lr_scheduler_type"),
        "max_length": first(c, "model_max_length"),
        "masking": first(c, "masking", default=first(s, "masking")),
        "loss": first(c, "loss", default=first(s, "loss_kind")),
    }


def results_row(rec: RunRecord, varied_keys: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"run": rec.name}
    for k in varied_keys:
        row[k] = rec.varied.get(k)
    st = training_settings(rec)
    for k in ("learning_rate", "epochs", "total_batch", "warmup", "scheduler", "max_length"):
        row[k] = st[k]
    row["final_train_loss"] = final_train_loss(rec)
    for f in FIGURES:
        row[f] = (rec.eval_summary or {}).get(f)
    row["n_prompts"] = _n_prompts(rec.eval_summary)
    row["status"] = rec.status
    return row


def _n_prompts(summary: dict[str, Any] | None) -> int | None:
    if not summary:
        return None
    counts = summary.get("counts") or {}
    for k in ("prompts", "num_prompts", "n_prompts", "prompt_total", "total_prompts"):
        if isinstance(counts.get(k), int):
            return counts[k]
        if isinstance(summary.get(k), int):
            return summary[k]
    return None


def best_index(rows: list[dict[str, Any]]) -> int | None:
    """The best row by prompt-level strict accuracy; ties go to instruction-level strict, then loose."""
    scored = [(i, r) for i, r in enumerate(rows) if isinstance(r.get("prompt_level_strict_acc"), (int, float))]
    if not scored:
        return None
    return max(scored, key=lambda ir: (ir[1]["prompt_level_strict_acc"], ir[1].get("inst_level_strict_acc") or 0,
                                       ir[1].get("prompt_level_loose_acc") or 0, -ir[0]))[0]


def fmt_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def pct(v: Any) -> str:
    return "" if not isinstance(v, (int, float)) else f"{100 * v:.1f}"


# Varied settings that already have a column of their own in the results table.
STANDARD_COLUMNS = {"learning_rate": "learning_rate", "num_train_epochs": "epochs", "max_steps": "epochs",
                    "total_batch_size": "total_batch", "warmup_steps": "warmup", "warmup_ratio": "warmup",
                    "lr_scheduler_type": "scheduler", "model_max_length": "max_length"}


def extra_varied(varied_keys: list[str]) -> list[str]:
    """The varied settings that need a column besides the standard ones."""
    return [k for k in varied_keys if k not in STANDARD_COLUMNS]


def results_markdown(rows: list[dict[str, Any]], varied_keys: list[str]) -> str:
    best = best_index(rows)
    varied_keys = extra_varied(varied_keys)
    headers = (["run"] + varied_keys + ["lr", "epochs", "total batch", "warmup", "scheduler", "max length",
                                        "final train loss"] + [FIGURE_LABELS[f] + " %" for f in FIGURES] + ["best"])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    for i, r in enumerate(rows):
        cells = [r["run"]] + [fmt_num(r.get(k)) for k in varied_keys]
        cells += [fmt_num(r[k]) for k in ("learning_rate", "epochs", "total_batch", "warmup", "scheduler", "max_length")]
        cells += [fmt_num(r["final_train_loss"])] + [pct(r[f]) for f in FIGURES]
        cells.append("**best**" if i == best else ("" if r["status"] == "done" else r["status"]))
        if i == best:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """(Re)write ``results.csv`` and ``results.md`` from the finished runs of a sweep directory."""
    sweep_dir = Path(sweep_dir)
    man = read_json(sweep_dir / "sweep.json")
    varied = man.get("varied", [])
    rows = [results_row(r, varied) for r in expand_run_dirs([sweep_dir], quiet=True)]
    best = best_index(rows)
    for i, r in enumerate(rows):
        r["best"] = i == best
    buf = io.StringIO()
    fields = list(rows[0].keys()) if rows else ["run"] + varied + ["status"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(sweep_dir / "results.csv", buf.getvalue())
    n = rows[best].get("n_prompts") if best is not None else None
    md = [f"# Sweep results: {sweep_dir}", "",
          f"{len(rows)} finished run(s) of {len(man.get('runs', []))}. IFEval accuracies in percent"
          + (f" on {n} prompts" if n else "") + "; the best run by prompt-level strict accuracy is in bold.", "",
          results_markdown(rows, varied)]
    atomic_write_text(sweep_dir / "results.md", "\n".join(md))
    return rows
