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
Evaluation runs in-process through :func:`sftlab.eval.bridge.evaluate`, which resumes from
``responses.jsonl``. A rerun skips runs with a ``DONE`` file.

This module holds the sweep file and the loop over its runs; each step is a stage of
:mod:`sftlab.experiment.stages` and the results table comes from :mod:`sftlab.report.results`.
"""

from __future__ import annotations

import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.errors import ConfigError, SftlabError, suggest
from sftlab.eval.task import METRICS
from sftlab.eval.tasks import DEFAULT_BENCHMARK
from sftlab.experiment.stages import (
    EvalSettings,
    decontaminate_against,
    eval_done,
    guard_settings,
    run_evals,
    run_training,
    validate_train_mapping,
    write_train_config,
)
from sftlab.layout import SweepDir, SweepRunDir, safe_name
from sftlab.report.results import write_results
from sftlab.train.config import apply_overrides, read_config_file, set_dotted
from sftlab.utils import atomic_write_json, log, stable_hash

SWEEP_KEYS = ("base", "grid", "runs", "eval", "output_dir", "baseline", "report", "launcher")

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


# --------------------------------------------------------------------------------------------
# Sweep config
# --------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    name: str
    overrides: dict[str, Any]
    run_dir: Path

    @property
    def dir(self) -> SweepRunDir:
        return SweepRunDir(self.run_dir)

    @property
    def train_dir(self) -> Path:
        return self.dir.train.root

    @property
    def eval_dir(self) -> Path:
        return self.dir.eval.root

    @property
    def config_path(self) -> Path:
        return self.dir.train_config

    @property
    def done_path(self) -> Path:
        return self.dir.done


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
    def dir(self) -> SweepDir:
        return SweepDir(self.output_dir)

    @property
    def baseline_dir(self) -> Path:
        return self.dir.baseline.root

    @property
    def report_dir(self) -> Path:
        return self.dir.report.root

    def train_config(self, spec: RunSpec) -> dict[str, Any]:
        cfg = decontaminate_against(apply_overrides(self.base, spec.overrides), self.eval)
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



def _read_sweep_file(path: str | Path, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sweep file's mapping with the sweep-key overrides set, and the overrides meant for the base config."""
    raw = read_config_file(path, "sweep config")
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
    return raw, base_overrides


def _read_base(path: str | Path, base: Any) -> tuple[dict[str, Any], str | None]:
    """The base training config (inline, or a file found from the current directory or next to the sweep file)."""
    from sftlab.train.aliases import resolve_aliases

    if isinstance(base, dict):
        return resolve_aliases(base), None
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a path to a training config or a mapping")
    cand = Path(base)
    if not cand.is_file() and not cand.is_absolute():
        cand = Path(path).parent / base
    return resolve_aliases(read_config_file(cand, "base training config")), str(cand)


def _run_specs(path: str | Path, sets: list[dict[str, Any]], grid_keys: set[str],
               out_dir: Path) -> tuple[list[RunSpec], list[str]]:
    """One named run per override set, and the settings that vary between them."""
    keys: list[str] = []
    for s in sets:
        keys += [k for k in s if k != "name" and k not in keys]
    varied = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in sets}) > 1]
    specs: list[RunSpec] = []
    seen: set[str] = set()
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
        seen.add(name)
        specs.append(RunSpec(name=name, overrides=ov, run_dir=SweepDir(out_dir).run(name).root))
    return specs, varied


def load_sweep_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read a sweep file. ``overrides`` (dotted keys) set sweep keys (``output_dir``, ``eval.limit``, ...);
    any other key is applied to the base training config, for every run."""
    raw, base_overrides = _read_sweep_file(path, overrides)
    base, base_path = _read_base(path, raw["base"])
    base = apply_overrides(base, base_overrides)
    base_eval = base.pop("eval", None)
    eval_settings = EvalSettings.from_dict(raw.get("eval", base_eval), "eval")
    if not raw.get("output_dir"):
        raise ConfigError(f"{path}: a sweep needs 'output_dir'")
    out_dir = Path(raw["output_dir"])
    sets = expand_override_sets(raw.get("grid"), raw.get("runs"))
    specs, varied = _run_specs(path, sets, set(raw.get("grid") or {}), out_dir)
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
        "runs": [{"name": s.name, "overrides": s.overrides, "dir": str(s.run_dir.relative_to(cfg.output_dir))}
                 for s in cfg.runs],
        "baseline_eval": cfg.dir.baseline.root.name if cfg.baseline else None,
    }


def _manifest_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What every run of one sweep directory shares: the base config and what decides the eval's outcome."""
    return {"base": manifest.get("base"), "eval": EvalSettings.from_dict(manifest.get("eval")).fingerprint()}


def _record_manifest(cfg: SweepConfig) -> None:
    """Refuse to mix runs of a different base config or eval settings into one sweep directory, then
    (re)write ``sweep.json``. Adding runs to a finished sweep (a longer grid) is fine: their names are new."""
    new = _sweep_manifest(cfg)
    old = guard_settings(cfg.dir.manifest, new, what="a sweep", compared=_manifest_identity,
                         noun={"base": "base config", "eval": "eval settings"})
    if old is not None:
        names = {r["name"] for r in new["runs"]}
        new["runs"] = new["runs"] + [r for r in old.get("runs", []) if r["name"] not in names]
        atomic_write_json(cfg.dir.manifest, new)


def _train_and_evaluate(cfg: SweepConfig, spec: RunSpec, label: str) -> str | None:
    """One run: train, evaluate, mark it done. Returns why it failed, or None."""
    try:
        run_training(spec.config_path, spec.train_dir, launcher=cfg.launcher, label=label)
        summary = run_evals(str(spec.train_dir), spec.dir.eval_for, cfg.eval, label=label)[DEFAULT_BENCHMARK]
    except SftlabError as e:
        log(f"sftlab sweep: {label} failed: {e}")
        return str(e)
    except Exception as e:  # a bug in one run must not lose the others; keep its traceback visible
        traceback.print_exc()
        log(f"sftlab sweep: {label} failed: {type(e).__name__}: {e}")
        return f"{type(e).__name__}: {e}"
    atomic_write_json(spec.done_path, {"name": spec.name, "overrides": spec.overrides,
                                       "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                       **{k: summary.get(k) for k in METRICS}})
    return None


def _report(cfg: SweepConfig, *, failed: bool, changed: bool) -> Path | None:
    """Write the report when every run finished and there is a baseline; skip it when it is up to date."""
    if not cfg.report:
        return None
    html = cfg.dir.report.html
    if failed:
        log("sftlab sweep: no report while runs have failed; rerun the sweep to resume them")
        return None
    if not cfg.baseline:
        log(f"sftlab sweep: no report without a baseline (baseline: false); write one with: sftlab report "
            f"--baseline BASE_EVAL_DIR --runs {cfg.output_dir} --output-dir {cfg.report_dir}")
        return None
    if not changed and html.is_file():
        log(f"sftlab sweep: report is up to date, skipping ({html})")
        return html
    from sftlab.report import write_report

    return write_report(baseline=cfg.baseline_dir, runs=[cfg.output_dir], output_dir=cfg.report_dir)["html"]


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Train and evaluate every run (skipping finished ones), then write results and the report.

    A failing run is reported and the sweep goes on with the others; the returned ``failed`` lists them.
    """
    # Validate every run's training config before spending time on any of them, and before
    # writing anything: a refused config leaves no sweep.json or train_config.yaml behind.
    for spec in cfg.runs:
        validate_train_mapping(cfg.train_config(spec), f"run '{spec.name}'")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    _record_manifest(cfg)
    for spec in cfg.runs:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        write_train_config(spec.config_path, cfg.train_config(spec), what=f"run '{spec.name}'")

    changed = False
    if cfg.baseline:
        changed = not all(eval_done(cfg.dir.baseline_for(b).root) for b in cfg.eval.benchmarks)
        run_evals(str(cfg.base["model"]), cfg.dir.baseline_for, cfg.eval, chat_template=cfg.base.get("chat_template"),
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
        error = _train_and_evaluate(cfg, spec, label)
        if error is not None:
            failed[spec.name] = error
            continue
        finished.append(spec.name)
        write_results(cfg.output_dir)

    rows = write_results(cfg.output_dir)
    report_path = _report(cfg, failed=bool(failed), changed=changed)
    return {"finished": finished, "failed": failed, "rows": rows, "results_csv": cfg.dir.results_csv,
            "results_md": cfg.dir.results_md, "report": report_path}
