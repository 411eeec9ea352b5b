"""The resumable stages ``sftlab run`` and ``sftlab sweep`` are made of: train one model, evaluate one model.

Each stage is recognised as finished by the file its writer produces last (``train_summary.json``
for training, ``summary.json`` for an evaluation; see :mod:`sftlab.layout`) and then skipped with a
message; a half-done stage resumes (training from its last checkpoint, evaluation from
``responses.jsonl``).

A stage directory must never mix two experiments, so every stage that resumes records the settings
it was started with and refuses a rerun with other settings: :func:`guard_settings`, the one guard
(``run_config.yaml``, ``train_config.yaml``, ``sweep.json``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftlab.errors import ConfigError, SftlabError, suggest
from sftlab.eval.generate import GenerationConfig
from sftlab.eval.ifeval import IFEVAL_HUB_ID
from sftlab.eval.tasks import BENCHMARKS, DEFAULT_BENCHMARK, get_task
from sftlab.layout import EvalDir, TrainDir
from sftlab.train.config import augment_decontaminated, read_config_file
from sftlab.utils import atomic_write_json, atomic_write_text, log, read_json

EVAL_KEYS = ("ifeval_data", "limit", "sample", "seed", "sample_offset", "max_new_tokens", "batch_size",
             "system_prompt", "backend", "dtype", "benchmarks")
#: The keys of a per-benchmark block (``eval: {ifbench: {data: ..., sample: 100}}``): which prompts.
SELECTION_KEYS = ("data", "limit", "sample", "seed", "sample_offset")
#: Blocks of benchmarks other than IFEval, whose selection is the top-level keys (as before benchmarks existed).
BLOCK_BENCHMARKS = tuple(b for b in BENCHMARKS if b != DEFAULT_BENCHMARK)
_GEN = GenerationConfig()  # the generation defaults: EvalSettings mirrors them instead of restating them

# --------------------------------------------------------------------------------------------
# The one settings guard
# --------------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON/YAML record (tuples become lists, paths strings)."""
    return json.loads(json.dumps(obj, default=str))


def settings_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two settings records differ (nested blocks compared key by key).

    A key set to ``None`` and a missing key count as the same.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += settings_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _show(v: Any, width: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def read_settings(path: Path) -> dict[str, Any]:
    """A settings record: YAML for ``.yaml``/``.yml`` files, JSON otherwise."""
    if path.suffix in (".yaml", ".yml"):
        return read_config_file(path, "settings record")
    old = read_json(path)
    if not isinstance(old, dict):
        raise SftlabError(f"{path}: a settings record must be a JSON object")
    return old


def write_settings(path: Path, settings: dict[str, Any]) -> None:
    if path.suffix in (".yaml", ".yml"):
        atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))
    else:
        atomic_write_json(path, settings)


def guard_settings(path: str | Path, new: dict[str, Any], *, what: str, noun: str | dict[str, str] = "settings",
                   compared: Callable[[dict[str, Any]], Any] | None = None, where: str | Path | None = None,
                   fresh: bool = False, remedy: str | None = None) -> dict[str, Any] | None:
    """Record the settings a resumable stage starts with; refuse to resume it with other settings.

    The first time (no record at ``path``, or ``fresh``: the stage has produced nothing yet) ``new``
    is written to ``path`` (YAML or JSON by suffix) and ``None`` returned. On a rerun the record is
    read back and compared with ``new``, through ``compared`` when only part of a record must match
    (default: all of it); equal settings return the old record, different ones raise a
    :class:`ConfigError` that lists every differing key, dotted for nested blocks, with both values.

    ``what`` names the stage (``"an experiment"``), ``noun`` what differs (``"config"``, or a noun per
    top-level key such as ``{"base": "base config", "eval": "eval settings"}``), ``where`` the
    directory (or file) that holds the stage's work (default: the record's folder) and ``remedy`` what
    the user can do (default: use another output_dir or delete ``where``).
    """
    path = Path(path)
    where = Path(where) if where is not None else path.parent
    if fresh or not path.is_file():
        write_settings(path, new)
        return None
    old = read_settings(path)
    pick = compared or (lambda record: record)
    before, after = _plain(pick(old)), _plain(pick(new))
    keys = settings_diff(before, after)
    if not keys:
        return old
    if isinstance(noun, dict):
        tops = list(dict.fromkeys(k.split(".")[0] for k in keys))
        noun = " and ".join(noun.get(t, t) for t in tops)
    details = ", ".join(f"{k} ({_show(_lookup(before, k))} -> {_show(_lookup(after, k))})" for k in keys)
    raise ConfigError(f"{where} holds {what} started with a different {noun} (differs in: {details}); "
                      f"{remedy or f'use another output_dir or delete {where}'}")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """The ``eval:`` block of a sweep or run config: what ``sftlab eval`` gets for every model.

    Fields named in :data:`EVAL_KEYS` are sftlab's own; any other :class:`~sftlab.eval.generate.GenerationConfig`
    field passes through ``extra`` (so a field added there is accepted here without a change).
    """

    ifeval_data: str = IFEVAL_HUB_ID
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    sample_offset: int = 0  # skip this many seeded draws: a second, disjoint set of `sample` prompts
    max_new_tokens: int = _GEN.max_new_tokens
    batch_size: int | None = _GEN.batch_size  # None: the generation engine's memory-aware default
    system_prompt: str | None = _GEN.system_prompt
    backend: str = _GEN.backend
    dtype: str = _GEN.dtype  # auto (bf16 where the hardware has it), float32 (exact) or bfloat16
    # which benchmarks every model is evaluated on; IFEval's prompts are the keys above, another's its block
    benchmarks: list[str] = field(default_factory=lambda: [DEFAULT_BENCHMARK])
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"ifbench": {"data": ..., "sample": 50}}
    extra: dict[str, Any] = field(default_factory=dict)  # other GenerationConfig fields (e.g. engine)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "eval") -> EvalSettings:
        d = dict(d or {})
        d.update(d.pop("extra", None) or {})
        valid = list(EVAL_KEYS) + list(BLOCK_BENCHMARKS) + [f for f in _generation_fields() if f not in EVAL_KEYS]
        extra, blocks = {}, {}
        for k in list(d):
            if k not in valid:
                raise ConfigError(f"unknown key '{where}.{k}'{suggest(k, valid)}; valid keys: {', '.join(valid)}")
            if k in BLOCK_BENCHMARKS:
                blocks[k] = _selection_block(d.pop(k), f"{where}.{k}")
            elif k not in EVAL_KEYS:
                extra[k] = d.pop(k)
        s = cls(**d, blocks=blocks, extra=extra)
        s.validate(where)
        return s

    def selection(self, benchmark: str) -> dict[str, Any]:
        """Which prompts of ``benchmark``: ``data`` (None: the task's hub inputs), ``limit``/``sample``/...."""
        if benchmark == DEFAULT_BENCHMARK:
            return {"data": self.ifeval_data, "limit": self.limit, "sample": self.sample, "seed": self.seed,
                    "sample_offset": self.sample_offset}
        block = self.blocks.get(benchmark, {})
        return {"data": block.get("data"), "limit": block.get("limit"), "sample": block.get("sample"),
                "seed": block.get("seed", 0), "sample_offset": block.get("sample_offset", 0)}

    def validate(self, where: str = "eval") -> None:
        if self.limit is not None and self.sample is not None:
            raise ConfigError(f"{where}: give either 'limit' or 'sample', not both")
        if self.batch_size == "auto":
            self.batch_size = None
        for name in ("limit", "sample", "max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if v is None and name in ("limit", "sample", "batch_size"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{where}.{name} must be a positive integer, got {v!r}")
        if self.sample_offset is None:  # `sample_offset: null` means the default, as elsewhere in a record
            self.sample_offset = 0
        off = self.sample_offset
        if not isinstance(off, int) or isinstance(off, bool) or off < 0:
            raise ConfigError(f"{where}.sample_offset must be a non-negative integer, got {off!r}")
        if off and self.sample is None:
            raise ConfigError(f"{where}: 'sample_offset' needs 'sample' (it skips that many seeded draws)")
        from sftlab.eval.generate import normalize_dtype

        try:
            self.dtype = normalize_dtype(self.dtype)
        except SftlabError as e:
            raise ConfigError(f"{where}.dtype: {e}") from None
        self.ifeval_data = str(self.ifeval_data)
        self._validate_benchmarks(where)

    def _validate_benchmarks(self, where: str) -> None:
        names = [self.benchmarks] if isinstance(self.benchmarks, str) else self.benchmarks
        if not isinstance(names, list) or not names or not all(isinstance(b, str) for b in names):
            raise ConfigError(f"{where}.benchmarks must be a list of benchmark names ({', '.join(BENCHMARKS)}), "
                              f"got {self.benchmarks!r}")
        for b in names:
            if b not in BENCHMARKS:
                raise ConfigError(f"{where}.benchmarks: unknown benchmark '{b}'{suggest(b, list(BENCHMARKS))}; "
                                  f"choose from {', '.join(BENCHMARKS)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.benchmarks names a benchmark twice: {names}")
        if DEFAULT_BENCHMARK not in names:
            raise ConfigError(f"{where}.benchmarks must include {DEFAULT_BENCHMARK} (the report and a sweep's ranking "
                              f"are IFEval's); list others beside it, e.g. [ifeval, ifbench]")
        for b in self.blocks:
            if b not in names:
                raise ConfigError(f"{where}.{b} is given but '{b}' is not in {where}.benchmarks ({names}); "
                                  f"add it there or drop the block")
        self.benchmarks = list(names)

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                system_prompt=self.system_prompt, backend=self.backend, dtype=self.dtype,
                                **self.extra)

    def to_dict(self) -> dict[str, Any]:
        """The block as recorded; ``sample_offset`` 0 is left out so records from before it still match."""
        d = asdict(self)
        d.update(d.pop("extra"))
        if not d["sample_offset"]:
            d.pop("sample_offset")
        self._benchmarks_to_record(d)
        return d

    def _benchmarks_to_record(self, d: dict[str, Any]) -> None:
        """IFEval alone is left out of a record (as before benchmarks existed); blocks sit under their names."""
        blocks = d.pop("blocks")
        if d["benchmarks"] == [DEFAULT_BENCHMARK]:
            d.pop("benchmarks")
        d.update(blocks)

    def fingerprint(self) -> dict[str, Any]:
        """What decides the eval's outcome (batch size and engine do not, for greedy decoding)."""
        d = asdict(self)
        d.pop("batch_size")
        extra = d.pop("extra")
        d.update({k: v for k, v in extra.items() if k not in ("engine",)})
        if d["sample"] is None:
            d.pop("seed")
        self._benchmarks_to_record(d)
        for b in BLOCK_BENCHMARKS:
            if b in d and d[b].get("sample") is None:
                d[b] = {k: v for k, v in d[b].items() if k != "seed"}
        return d


def _selection_block(block: Any, where: str) -> dict[str, Any]:
    """A per-benchmark block checked as the top-level keys are: known keys, limit or sample, offsets."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where} must be a block of {', '.join(SELECTION_KEYS)}, got {block!r}")
    for k in block:
        if k not in SELECTION_KEYS:
            raise ConfigError(f"unknown key '{where}.{k}'{suggest(k, list(SELECTION_KEYS))}; valid keys: "
                              f"{', '.join(SELECTION_KEYS)}")
    out = {k: v for k, v in block.items() if v is not None}
    if "limit" in out and "sample" in out:
        raise ConfigError(f"{where}: give either 'limit' or 'sample', not both")
    for k in ("limit", "sample"):
        if k in out and (not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] <= 0):
            raise ConfigError(f"{where}.{k} must be a positive integer, got {out[k]!r}")
    for k in ("seed", "sample_offset"):
        if k in out and (not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 0):
            raise ConfigError(f"{where}.{k} must be a non-negative integer, got {out[k]!r}")
    if out.get("sample_offset") and "sample" not in out:
        raise ConfigError(f"{where}: 'sample_offset' needs 'sample' (it skips that many seeded draws)")
    if not out.get("sample_offset"):
        out.pop("sample_offset", None)
    if "data" in out:
        out["data"] = str(out["data"])
    return out


def _generation_fields() -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(GenerationConfig)]


def eval_done(eval_dir: Path) -> bool:
    return EvalDir(Path(eval_dir)).summary.is_file()


def run_evals(model: str, dir_for: Callable[[str], EvalDir], settings: EvalSettings, *,
              chat_template: str | None = None, label: str = "") -> dict[str, dict]:
    """Evaluate ``model`` on every benchmark of ``settings`` (``dir_for(name)`` its directory): name -> summary."""
    return {b: run_eval(model, dir_for(b).root, settings, benchmark=b, chat_template=chat_template,
                        label=label if b == DEFAULT_BENCHMARK else f"{label} ({b})")
            for b in settings.benchmarks}


def run_eval(model: str, eval_dir: Path, settings: EvalSettings, *, benchmark: str = DEFAULT_BENCHMARK,
             chat_template: str | None = None, label: str = "") -> dict:
    """Evaluate ``model`` on ``benchmark`` into ``eval_dir`` unless it already holds a summary (resumes otherwise)."""
    ed = EvalDir(Path(eval_dir))
    label = label or str(eval_dir)
    if eval_done(ed.root):
        log(f"sftlab: {label}: evaluation finished earlier, skipping ({ed.summary})")
        return read_json(ed.summary)
    from sftlab.eval.bridge import evaluate

    if ed.responses.is_file():
        log(f"sftlab: {label}: resuming evaluation from {ed.responses}")
    else:
        log(f"sftlab: {label}: evaluating {model} on {get_task(benchmark).title}")
    t0 = time.time()
    res = evaluate(model, ed.root, benchmark=benchmark, **settings.selection(benchmark),
                   gen=settings.generation_config(), chat_template=chat_template)
    log(f"sftlab: {label}: evaluation took {time.time() - t0:.1f} s")
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
# Training (in a subprocess)
# --------------------------------------------------------------------------------------------


def train_done(train_dir: Path) -> bool:
    return TrainDir(Path(train_dir)).summary.is_file()


def decontaminate_against(train_cfg: dict[str, Any], settings: EvalSettings) -> dict[str, Any]:
    """Point an ``augment:`` block without ``ifeval_data`` (``ifbench_data``) at the experiment's own
    IFEval (IFBench) inputs.

    Why: the data must never hold text of the prompts it is scored on, so whenever an experiment
    evaluates on a benchmark, its augmentation is decontaminated against exactly those inputs (unless the
    block turns decontamination off or names other inputs).
    """
    if "augment" in train_cfg:
        ifbench = None
        if "ifbench" in settings.benchmarks:
            from sftlab.eval.ifbench import IFBENCH_HUB_ID

            ifbench = settings.selection("ifbench")["data"] or IFBENCH_HUB_ID
        train_cfg["augment"] = augment_decontaminated(train_cfg["augment"], settings.ifeval_data, ifbench)
    return train_cfg


def validate_train_mapping(cfg: dict[str, Any], where: str = "") -> None:
    """Let the training config loader judge a training config *before* anything is written for it.

    Why before: a refused config (a typo, a secret such as ``hub_token``) must leave no
    ``train_config.yaml``, ``run_config.yaml`` or ``sweep.json`` behind, neither a secret on disk nor
    a record that a corrected rerun would be compared against and refused by.
    """
    from sftlab.train.config import load_config

    try:
        load_config(None, cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def write_train_config(path: Path, cfg: dict[str, Any], *, what: str) -> None:
    """Write a run's training config, refusing to change it under a run that already started."""
    guard_settings(path, cfg, what=what, noun="training config")


def run_training(config_path: Path, train_dir: Path, *, launcher: str | list[str] | None = None,
                 label: str = "") -> None:
    """Train from ``config_path`` in a subprocess unless ``train_dir`` holds a finished run.

    A subprocess returns its memory to the system, lets a multi-GPU launcher slot in, and leaves a
    checkpoint behind when killed. A half-done ``train_dir`` (checkpoints, no summary) is resumed by
    ``sftlab train`` itself, which finds the latest checkpoint.
    """
    summary = TrainDir(Path(train_dir)).summary
    if train_done(train_dir):
        log(f"sftlab: {label or train_dir}: training finished earlier, skipping ({summary})")
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
        raise SftlabError(f"training {label} exited normally but wrote no {summary}")
    log(f"sftlab: {label or train_dir}: training took {time.time() - t0:.1f} s")
