"""sftlab's Trainer: the HF Trainer plus token accounting, the chunked loss, seeded length grouping
and safe checkpoints; and the callbacks that write ``metrics.jsonl`` and show progress.

Why these are done by hand rather than left to the Trainer:

* **Length grouping.** transformers' train-time ``LengthGroupedSampler`` draws its permutation from
  the global RNG, which differs between a fresh and a resumed process; ours is seeded by
  ``(seed, epoch)`` so the resumed epoch sees the same batches, on every rank.
* **Token accounting.** ``tokens`` (real, non-pad) and ``trained_tokens`` (positions with a target)
  are counted per micro-batch and summed over processes at each log, so tokens/s means real work.
* **Checkpoints.** A completion marker is written after the Trainer's files, and rotation happens
  after the marker (see :mod:`sftlab.train.checkpoints`); the pickled ``training_args.bin`` is removed
  after every save (``sftlab_config.yaml`` is the record).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from sftlab import layout
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.train.checkpoints import checkpoint_write_error, prune_checkpoints, write_marker
from sftlab.train.collate import length_grouped_indices
from sftlab.train.loss import DEFAULT_CHUNK_SIZE, compute_loss_from_logits, make_compute_loss
from sftlab.utils import append_jsonl


class SeededLengthGroupedSampler(torch.utils.data.Sampler):
    """Length-grouped sampling with a (seed, epoch) generator: reproducible across resume and ranks."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(length_grouped_indices(self.lengths, self.batch_size, self.seed, self.epoch))


class SftlabTrainer(Trainer):
    """The HF Trainer plus sftlab's token accounting, seeded length grouping and safe checkpoints.

    ``loss``: "reference" (full logits) or "chunked"; ``chunk_size``: positions per chunk of the
    chunked loss; ``group_lengths``: per-example lengths for the seeded length-grouped sampler (None:
    the Trainer's sampler); ``save_total_limit``: checkpoints kept, rotated after the marker;
    ``offsets``: counters restored from the resumed checkpoint. Every other argument is the Trainer's
    (``compute_loss_func`` defaults to sftlab's reference loss, see :mod:`sftlab.train.loss`).
    """

    def __init__(self, *args: Any, loss: str = "reference", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 group_lengths: list[int] | None = None, save_total_limit: int | None = None,
                 offsets: dict[str, float] | None = None, **kwargs: Any):
        kwargs.setdefault("compute_loss_func", compute_loss_from_logits)
        super().__init__(*args, **kwargs)
        params = list(self.model.parameters())
        #: Parameters of the model as trained (before a LoRA merge): all of them, and the trainable ones.
        self.param_counts = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
        self.sft_loss = loss
        self.sft_chunked = make_compute_loss("chunked", chunk_size) if loss == "chunked" else None
        self.sft_reference = make_compute_loss("reference")
        self.sft_group_lengths = group_lengths
        self.sft_save_total_limit = save_total_limit
        self.sft_offsets = dict(offsets or {})
        self.sft_local = {"tokens": 0, "trained_tokens": 0}
        self.sft_session_start: float | None = None
        self.sft_last: dict[str, float] = {}

    def _start_clock(self) -> None:
        if self.sft_session_start is None:
            self.sft_session_start = time.time()
            off = self.sft_offsets
            self.sft_last = {"time": self.sft_session_start, "tokens": int(off.get("tokens", 0)),
                             "trained_tokens": int(off.get("trained_tokens", 0))}

    # -- token accounting -------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        self._start_clock()
        inputs = dict(inputs)
        real = inputs.pop("num_real_tokens", None)
        if real is None:
            mask = inputs.get("attention_mask")
            real = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
        labels = inputs.get("labels")
        trained = (labels[..., 1:] != IGNORE_INDEX).sum() if labels is not None else 0
        self.sft_local["tokens"] += int(real)
        self.sft_local["trained_tokens"] += int(trained)
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {k: v for k, v in inputs.items() if k != "num_real_tokens"}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def sft_totals(self) -> dict[str, float]:
        """Global counters (all processes, all sessions). A collective: call on every rank."""
        self._start_clock()
        t = torch.tensor([self.sft_local["tokens"], self.sft_local["trained_tokens"]],
                         dtype=torch.long, device=self.args.device)
        if self.accelerator.num_processes > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        off = self.sft_offsets
        now = time.time()
        return {
            "tokens": int(off.get("tokens", 0)) + int(t[0]),
            "trained_tokens": int(off.get("trained_tokens", 0)) + int(t[1]),
            "train_seconds": float(off.get("train_seconds", 0.0)) + (now - self.sft_session_start),
            "now": now,
        }

    def log(self, logs, start_time=None):
        if "loss" in logs and "train_runtime" not in logs:
            tot = self.sft_totals()
            dt = max(tot["now"] - self.sft_last["time"], 1e-9)
            logs["tokens"] = tot["tokens"]
            logs["trained_tokens"] = tot["trained_tokens"]
            logs["tokens_per_s"] = round((tot["tokens"] - self.sft_last["tokens"]) / dt, 2)
            logs["trained_tokens_per_s"] = round((tot["trained_tokens"] - self.sft_last["trained_tokens"]) / dt, 2)
            logs["elapsed_s"] = round(tot["train_seconds"], 2)
            self.sft_last = {"time": tot["now"], "tokens": tot["tokens"], "trained_tokens": tot["trained_tokens"]}
        return super().log(logs, start_time)

    # -- loss and sampling --------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.sft_chunked is not None:
            return self.sft_chunked(self, model, inputs, return_outputs, num_items_in_batch)
        if "weights" in inputs:  # per-token weights: the Trainer's own path would hand them to forward()
            return self.sft_reference(self, model, inputs, return_outputs, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "weights" not in self._signature_columns:  # keep the per-token weights column in the batches
            self._signature_columns.append("weights")

    def _get_train_sampler(self, train_dataset=None):
        if self.sft_group_lengths is not None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(self.sft_group_lengths, self.args.per_device_train_batch_size, seed)
        return super()._get_train_sampler(train_dataset)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save, less ``training_args.bin``: a pickle of TrainingArguments that sftlab
        never reads (the resolved config is ``sftlab_config.yaml``), and a file a user could be
        tempted to unpickle. No output of sftlab is a pickle meant for loading."""
        super()._save(output_dir, state_dict=state_dict)
        (Path(output_dir or self.args.output_dir) / layout.TRAINING_ARGS_PICKLE).unlink(missing_ok=True)

    def _save_checkpoint(self, model, trial):
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as e:  # torch's writer reports ENOSPC as "unexpected pos"
            raise checkpoint_write_error(e, Path(self._get_output_dir(trial=trial)), self.state.global_step,
                                         model) from None
        tot = self.sft_totals()  # collective: every rank is here
        self.accelerator.wait_for_everyone()  # every rank's RNG state is on disk
        if self.args.should_save:
            run_dir = Path(self._get_output_dir(trial=trial))
            write_marker(layout.TrainDir(run_dir).checkpoint(self.state.global_step), {
                "global_step": self.state.global_step,
                "epoch": self.state.epoch,
                "tokens": tot["tokens"],
                "trained_tokens": tot["trained_tokens"],
                "train_seconds": round(tot["train_seconds"], 3),
            })
            prune_checkpoints(run_dir, self.sft_save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()


# --------------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------------


class MetricsJsonlCallback(TrainerCallback):
    """One JSON line per logged training step (and per evaluation), appended and flushed at once."""

    TRAIN_KEYS = ("loss", "learning_rate", "grad_norm", "tokens", "trained_tokens", "tokens_per_s",
                  "trained_tokens_per_s", "elapsed_s")

    def __init__(self, metrics_path: Path, is_main: bool):
        self.metrics_path = Path(metrics_path)
        self.is_main = is_main

    def _write(self, rec: dict[str, Any]) -> None:
        if self.is_main:
            append_jsonl(self.metrics_path, rec)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs and "train_runtime" not in logs:
            rec = {"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 6)}
            for k in self.TRAIN_KEYS:
                if k in logs:
                    rec[k] = _plain_number(logs[k])
            self._write(rec)
        elif "eval_loss" in logs:
            self._write({"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 6),
                         "eval_loss": _plain_number(logs["eval_loss"])})


class CompactProgressCallback(ProgressCallback):
    """The Trainer's progress bar, with the latest loss in the bar instead of a printed dict per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs and "train_runtime" not in logs:
            post = {"loss": f"{logs['loss']:.4f}"}
            if "learning_rate" in logs:
                post["lr"] = f"{logs['learning_rate']:.2e}"
            if "tokens_per_s" in logs:
                post["tok/s"] = f"{logs['tokens_per_s']:.0f}"
            self.training_bar.set_postfix(post, refresh=False)
        elif "eval_loss" in logs:
            self.training_bar.write(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")


def use_compact_progress(trainer: Trainer) -> None:
    """Swap the Trainer's progress bar for :class:`CompactProgressCallback` (when it shows one)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(CompactProgressCallback)


def _plain_number(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
