"""A training output directory's checkpoints and lifecycle: listing, completion marker, pruning,
clearing, resume bookkeeping and the lock that keeps two runs out of one directory.

The Trainer writes checkpoints in place, so a process killed mid-save leaves a directory that
``get_last_checkpoint`` would pick. sftlab writes a completion marker (``sftlab_state.json``, with the
token counters and elapsed time) *after* the Trainer's files and only resumes from marked checkpoints;
rotation (``save_total_limit``) runs after the marker too, so a kill never leaves zero usable
checkpoints behind. Only the main process calls the functions that write or delete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sftlab import layout
from sftlab.errors import ConfigError, SftlabError
from sftlab.utils import atomic_write_json, atomic_write_text, read_json, read_jsonl

#: What ``overwrite_output_dir`` removes: sftlab's and the Trainer's outputs, nothing else.
OUTPUT_PATTERNS = (
    f"{layout.CHECKPOINT_PREFIX}*", layout.METRICS, layout.TRAIN_SUMMARY, layout.TRAIN_CONFIG, layout.LOSS_CURVE,
    layout.TRAINER_STATE, layout.TRAINING_ARGS_PICKLE, "config.json", "generation_config.json",
    "model*.safetensors", "model.safetensors.index.json", "tokenizer*.json", "special_tokens_map.json",
    "chat_template.jinja", "vocab.json", "merges.txt", layout.ADAPTER, "runs", "all_results.json",
    "train_results.json", "eval_results.json",
)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` directory, oldest first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = layout.CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def is_complete_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    return (p / layout.CHECKPOINT_MARKER).is_file() and (p / layout.TRAINER_STATE).is_file()


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* checkpoint (one a kill did not interrupt), or None."""
    for _step, p in reversed(list_checkpoints(output_dir)):
        if is_complete_checkpoint(p):
            return p
    return None


def checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[-1])


def write_marker(ckpt: Path, state: dict[str, Any]) -> None:
    """Mark ``ckpt`` complete; call after every other file of the checkpoint is on disk."""
    atomic_write_json(ckpt / layout.CHECKPOINT_MARKER, state)


def read_marker(ckpt: Path) -> dict[str, Any]:
    """The marker's contents (step, epoch, token counters, seconds), or ``{}`` when unreadable."""
    try:
        marker = read_json(ckpt / layout.CHECKPOINT_MARKER)
    except SftlabError:
        return {}
    return marker if isinstance(marker, dict) else {}


def resume_offsets(ckpt: Path | None) -> dict[str, float]:
    """The counters a resumed run continues from (zeros for a fresh run)."""
    if ckpt is None:
        return {}
    marker = read_marker(ckpt)
    return {k: marker.get(k, 0) for k in ("tokens", "trained_tokens", "train_seconds")}


def prune_checkpoints(output_dir: str | Path, save_total_limit: int | None,
                      best_model_checkpoint: str | None = None) -> None:
    """Keep the newest ``save_total_limit`` checkpoints (the best one too); call after the marker."""
    if not save_total_limit:
        return
    from transformers.trainer_utils import rotate_checkpoints

    rotate_checkpoints(output_dir=str(output_dir), save_total_limit=save_total_limit,
                       best_model_checkpoint=best_model_checkpoint, use_mtime=False)


def clear_outputs(output_dir: Path) -> None:
    """Remove a previous run's outputs (for ``overwrite_output_dir``); other files stay."""
    for pattern in OUTPUT_PATTERNS:
        for p in output_dir.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def find_resume_checkpoint(output_dir: Path, *, explicit: Any, overwrite: bool) -> Path | None:
    """The checkpoint this run continues from: ``explicit`` (must be complete), else the newest
    complete one unless ``overwrite``. A finished run without checkpoints is refused."""
    if explicit not in (None, False, True, ""):
        ckpt: Path | None = Path(str(explicit))
        if not is_complete_checkpoint(ckpt):
            raise ConfigError(f"resume_from_checkpoint {ckpt} is not a complete sftlab checkpoint")
    else:
        ckpt = None if overwrite else latest_checkpoint(output_dir)
    if ckpt is None and not overwrite and layout.TrainDir(output_dir).summary.exists():
        raise ConfigError(f"{output_dir} already holds a finished run without checkpoints; pass "
                          "--overwrite_output_dir to train again, or choose another output_dir")
    return ckpt


def finished_run(output_dir: Path, args: Any, *, explicit: Any, overwrite: bool) -> dict[str, Any] | None:
    """The summary of the finished run in ``output_dir`` when this config would not extend it, else None.

    Rerunning a finished run does nothing (it used to resume from the last checkpoint and train another
    step). It continues only when it asks for more: a larger ``max_steps`` or, without ``max_steps``,
    more ``num_train_epochs`` than the finished run reached.
    """
    path = layout.TrainDir(output_dir).summary
    if overwrite or explicit not in (None, False, True, "") or not path.exists():
        return None
    try:
        summary = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    max_steps = int(getattr(args, "max_steps", -1) or -1)
    if max_steps > 0:
        return summary if int(summary.get("global_step", 0)) >= max_steps else None
    return summary if float(summary.get("epochs", 0.0)) >= float(args.num_train_epochs) - 1e-3 else None


def remove_stale_checkpoints(output_dir: Path, resume_from: Path | None) -> None:
    """Delete incomplete checkpoints (a kill mid-save) and any newer than the one resumed from."""
    done = checkpoint_step(resume_from) if resume_from is not None else -1
    for step, p in list_checkpoints(output_dir):
        if not is_complete_checkpoint(p) or step > done:
            shutil.rmtree(p, ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to ``step`` (the resumed checkpoint) so no step appears twice."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if isinstance(r, dict) and int(r.get("step", 0)) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


@contextlib.contextmanager
def output_dir_lock(output_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``output_dir`` for the block; released on success and on error.

    Two runs writing one directory corrupt each other. ``flock`` locks die with their process, so a
    killed run never leaves a stale lock behind either. ``enabled=False`` (non-main ranks) is a no-op.
    """
    if not enabled:
        yield
        return
    import fcntl

    output_dir.mkdir(parents=True, exist_ok=True)
    f = open(layout.TrainDir(output_dir).lock, "w")  # noqa: SIM115 - closed in finally
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise SftlabError(f"another sftlab train is running in {output_dir}; wait for it to finish or "
                              "choose another output_dir") from e
        yield
    finally:
        f.close()


def checkpoint_write_error(e: BaseException, run_dir: Path, step: int, model: Any) -> BaseException:
    """A full disk while the Trainer writes checkpoint ``step``: a one-line :class:`SftlabError` naming the
    checkpoint, the space it needs (the last complete checkpoint's size, else weights plus Adam state)
    and the space free. The half-written directory has no completion marker, so the rerun (with space)
    resumes from the last complete checkpoint and removes it. Any other error is returned as it is."""
    from sftlab.prep.build_guard import disk_full_message, is_disk_full

    # torch's zip writer says "unexpected pos" or "file write failed", not ENOSPC: read the free space.
    if not is_disk_full(e) and not _low_on_space(run_dir):
        return e
    ckpt = layout.TrainDir(run_dir).checkpoint(step)
    last = latest_checkpoint(run_dir)
    if last is not None:
        needed = sum(f.stat().st_size for f in last.rglob("*") if f.is_file())
    else:
        needed = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    return SftlabError(disk_full_message("checkpoint", ckpt, written=0, needed=needed))


def _low_on_space(path: Path, floor: int = 64 << 20) -> bool:
    try:
        return shutil.disk_usage(path).free < floor
    except OSError:
        return False
