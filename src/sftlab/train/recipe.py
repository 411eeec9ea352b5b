"""``sftlab train``: supervised fine-tuning on the HF Trainer, as a recipe.

:func:`train` reads top to bottom: resolve the settings (:mod:`sftlab.train.config`), take the output
directory (lock, resume or start over: :mod:`sftlab.train.checkpoints`), load and preprocess the data,
load the model, build the Trainer (:mod:`sftlab.train.trainer`), fit, save. It writes the output directory
that later stages read (see :class:`sftlab.layout.TrainDir`): the model and tokenizer with the chat
template used in training, ``sftlab_config.yaml`` (every setting of the run, TrainingArguments
included), ``metrics.jsonl``, ``trainer_state.json``, ``train_summary.json`` and ``loss_curve.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sftlab import layout
from sftlab.errors import ConfigError, SftlabError
from sftlab.train import checkpoints
from sftlab.train.config import Resolved, TrainConfig, resolve_training_arguments, saved_config
from sftlab.train.loss_curve import plot_loss_curve
from sftlab.utils import atomic_write_json, atomic_write_text, environment_info, read_jsonl

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase as Tokenizer

    from sftlab.prep.pipeline import PreprocessConfig, PreprocessResult

PACKING_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class _Data:
    train: Dataset
    eval: Dataset | None
    collator: Any
    lengths: list[int]
    pre: PreprocessResult


def train(cfg: TrainConfig, training_args: dict) -> dict:
    """Run one training job end to end and return the train summary (also written to the output dir).

    Resumes from the newest complete checkpoint in ``output_dir`` unless ``overwrite_output_dir``.
    Safe under torchrun: every rank calls this; rank 0 alone writes files. The output directory is
    locked for the whole run and unlocked when it ends, whether it succeeds or fails.
    """
    from accelerate import PartialState

    wall_start = time.time()
    run = resolve_training_arguments(cfg, training_args)
    state = PartialState()  # initialised by TrainingArguments
    if state.num_processes != run.world_size:
        raise SftlabError(f"this job runs {state.num_processes} processes but its launcher announced "
                          f"{run.world_size} (WORLD_SIZE): launch with torchrun or accelerate launch")
    out = layout.TrainDir(Path(run.args.output_dir))
    with checkpoints.output_dir_lock(out.root, enabled=state.is_main_process):
        ckpt = _take_output_dir(cfg, run, out, state)
        tokenizer, data = _setup_data(cfg, run, out, state.is_main_process)
        model = _setup_model(cfg, tokenizer, gradient_checkpointing=bool(run.args.gradient_checkpointing))
        trainer = _build_trainer(cfg, run, model, tokenizer, data, ckpt, out, state.is_main_process)
        totals = _fit(trainer, data, ckpt)
        _save_model(cfg, trainer, tokenizer, out, state.is_main_process)
        state.wait_for_everyone()
        summary: dict[str, Any] = {}
        if state.is_main_process:
            summary = _write_records(cfg, run, trainer, data, ckpt, out, totals, wall_start)
        state.wait_for_everyone()
    if run.push_to_hub and state.is_main_process:
        _push(run, out)
    return summary


# --------------------------------------------------------------------------------------------------
# The recipe's steps
# --------------------------------------------------------------------------------------------------


def _say(msg: str, is_main: bool = True) -> None:
    if is_main:
        print(msg, flush=True)


def _take_output_dir(cfg: TrainConfig, run: Resolved, out: layout.TrainDir, state: Any) -> Path | None:
    """Start over, resume, or refuse; returns the checkpoint to resume from."""
    is_main = state.is_main_process
    if is_main and cfg.overwrite_output_dir:
        checkpoints.clear_outputs(out.root)
    state.wait_for_everyone()
    ckpt = checkpoints.find_resume_checkpoint(out.root, explicit=run.resume_from_checkpoint,
                                              overwrite=cfg.overwrite_output_dir)
    if is_main:  # leftovers of a kill mid-save, or of a later run
        checkpoints.remove_stale_checkpoints(out.root, ckpt)
    if ckpt is not None:
        _say(f"Resuming from {ckpt}", is_main)
        if is_main:
            step = int(checkpoints.read_marker(ckpt).get("global_step", checkpoints.checkpoint_step(ckpt)))
            checkpoints.truncate_metrics(out.metrics, step)
    elif is_main:
        out.metrics.unlink(missing_ok=True)
    state.wait_for_everyone()
    return ckpt


def _setup_data(cfg: TrainConfig, run: Resolved, out: layout.TrainDir, is_main: bool) -> tuple[Any, _Data]:
    """Tokenizer, preprocessing (rank 0 first, the others read its cache), split, packing, collator."""
    from sftlab.models.loading import load_tokenizer
    from sftlab.prep.pipeline import PreprocessConfig, format_stats, preprocess
    from sftlab.train.collate import PackedCollator, SFTDataCollator, pack_examples

    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model, chat_template=cfg.chat_template,
                               trust_remote_code=cfg.trust_remote_code)
    pcfg = PreprocessConfig.from_train_config(cfg, sample_seed=run.args.seed)
    with run.args.main_process_first(local=False, desc="preprocessing"):
        pre = preprocess(pcfg, out.root, tokenizer=tokenizer, progress=is_main)
    if is_main:
        try:
            print(format_stats(pre.stats), flush=True)
        except (KeyError, TypeError, ValueError):  # a summary line is not worth failing the run
            pass
    train_ds, eval_ds = _features_of(pre.dataset), None
    if cfg.eval_data is not None:  # a held-out set of its own: nothing is split off the training data
        eval_ds = _features_of(_preprocess_eval_data(cfg, pcfg, out, tokenizer, run, is_main).dataset)
    else:
        train_ds, eval_ds = _split(train_ds, cfg.eval_fraction, run.args.seed)
    if cfg.packing:
        from datasets import Dataset

        train_ds = Dataset.from_list(pack_examples(list(train_ds), cfg.model_max_length))
        if eval_ds is not None:
            eval_ds = Dataset.from_list(pack_examples(list(eval_ds), cfg.model_max_length))
        collator: Any = PackedCollator(pad_token_id=tokenizer.pad_token_id)
    else:
        collator = SFTDataCollator(pad_token_id=tokenizer.pad_token_id, padding=cfg.padding,
                                   max_length=cfg.model_max_length if cfg.padding == "max_length" else None)
    lengths = [len(x) for x in train_ds["input_ids"]]
    return tokenizer, _Data(train=train_ds, eval=eval_ds, collator=collator, lengths=lengths, pre=pre)


def _features_of(dataset):
    keep = ("input_ids", "labels", "attention_mask", "weights")  # weights: only when a message has a weight
    return dataset.select_columns([c for c in keep if c in dataset.column_names])


def _preprocess_eval_data(cfg: TrainConfig, pcfg: PreprocessConfig, out: layout.TrainDir, tokenizer: Tokenizer, run: Resolved,
                          is_main: bool):
    """``eval_data`` through the same masking as the training data, cached in its own folder
    (never augmented: the eval loss measures the data as it is)."""
    import dataclasses

    from sftlab.prep.pipeline import preprocess

    ecfg = dataclasses.replace(pcfg, data=cfg.eval_data, max_samples=None, augment=None)
    with run.args.main_process_first(local=False, desc="preprocessing eval_data"):
        pre = preprocess(ecfg, out.eval_data, tokenizer=tokenizer, progress=is_main)
    _say(f"eval_data: {pre.stats['kept']} held-out conversations", is_main)
    return pre


def _split(dataset, eval_fraction: float, seed: int):
    n = len(dataset)
    if n == 0:
        raise SftlabError("no usable conversations after preprocessing (see the skipped counts above)")
    if eval_fraction <= 0:
        return dataset, None
    if n < 2:
        raise ConfigError(f"only {n} usable conversation: none is left to hold out for evaluation; "
                          "set eval_fraction: 0")
    n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _end_of_turn_ids(tokenizer, model) -> list[int]:
    """The template's end-of-turn token first (probed from the template), then every eos id."""
    from sftlab.eval.generate import end_of_turn_token, stop_token_ids

    eot = end_of_turn_token(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids(eot)] if eot is not None else []
    try:
        ids += stop_token_ids(tokenizer, model)
    except SftlabError:  # neither eos nor end-of-turn: generation keeps the model's own settings
        pass
    return list(dict.fromkeys(int(i) for i in ids))


def _setup_model(cfg: TrainConfig, tokenizer, *, gradient_checkpointing: bool):
    """The float32 model with the tokenizer's vocabulary, pad and stop tokens, and LoRA when asked."""
    import torch

    from sftlab.models.loading import load_model

    if cfg.packing and (cfg.attn_implementation or "sdpa") not in PACKING_ATTENTION:
        raise ConfigError("packing needs attn_implementation sdpa, eager, flex_attention or flash_attention_2")
    model = load_model(cfg.model, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code,
                       attn_implementation=cfg.attn_implementation or "sdpa")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    stops = _end_of_turn_ids(tokenizer, model)
    if stops:
        model.generation_config.eos_token_id = stops
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    if cfg.lora is None:
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ConfigError("lora needs the peft package: pip install peft") from e
    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lc)
    except ValueError as e:
        raise ConfigError(f"lora: {str(e).splitlines()[0]}") from e
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def _build_trainer(cfg: TrainConfig, run: Resolved, model, tokenizer, data: _Data, ckpt: Path | None,
                   out: layout.TrainDir, is_main: bool):
    from sftlab.train.ifeval_callback import make_callback
    from sftlab.train.trainer import MetricsJsonlCallback, SftlabTrainer, use_compact_progress

    callbacks: list[Any] = [MetricsJsonlCallback(out.metrics, is_main)]
    ifeval_cb = make_callback(cfg, tokenizer, metrics_path=out.metrics, seed=run.args.seed, is_main=is_main,
                              batch_size=run.args.per_device_eval_batch_size)
    if ifeval_cb is not None:
        callbacks.append(ifeval_cb)
    trainer = SftlabTrainer(
        model=model, args=run.args, train_dataset=data.train, eval_dataset=data.eval, data_collator=data.collator,
        processing_class=tokenizer, callbacks=callbacks,
        loss=cfg.loss, chunk_size=cfg.loss_chunk_size, group_lengths=data.lengths if run.group_by_length else None,
        save_total_limit=run.save_total_limit, offsets=checkpoints.resume_offsets(ckpt),
    )
    use_compact_progress(trainer)
    args = run.args
    n_params, n_trainable = trainer.param_counts
    _say(f"sftlab train: {len(data.train)} train / {len(data.eval) if data.eval is not None else 0} eval "
         f"{'packed rows' if cfg.packing else 'conversations'}, {sum(data.lengths)} train tokens; model {cfg.model} "
         f"({n_params / 1e6:.1f}M params, {n_trainable / 1e6:.2f}M trainable), {run.precision}, loss "
         f"{cfg.loss}, effective batch {_effective_batch(run)} = {args.per_device_train_batch_size} x "
         f"{args.gradient_accumulation_steps} accumulation x {run.world_size} process(es)", is_main)
    return trainer


def _effective_batch(run: Resolved) -> int:
    return run.args.per_device_train_batch_size * run.args.gradient_accumulation_steps * run.world_size


def _fit(trainer, data: _Data, ckpt: Path | None) -> dict[str, float]:
    """Train (resuming from ``ckpt``), then evaluate once more unless the last step was evaluated."""
    import torch

    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    except torch.OutOfMemoryError as e:  # pragma: no cover - hardware dependent
        raise SftlabError("out of memory: lower per_device_train_batch_size (total_batch_size keeps the "
                          "effective batch) or model_max_length, or set gradient_checkpointing: true") from e
    totals = trainer.sft_totals()
    # From the Trainer's log history, identical on every rank (an evaluate() on one rank only would hang).
    last_eval_step = max((r.get("step", -1) for r in trainer.state.log_history if "eval_loss" in r), default=-1)
    if data.eval is not None and (trainer.args.eval_strategy == "no" or last_eval_step != trainer.state.global_step):
        trainer.evaluate()
    return totals


def _save_model(cfg: TrainConfig, trainer, tokenizer, out: layout.TrainDir, is_main: bool) -> None:
    """The final model (LoRA: the adapter in ``adapter/`` and the merged model) and trainer state."""
    base = trainer.model
    if cfg.lora is not None:
        trainer.save_model(str(out.adapter))
        base = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    inner = trainer.accelerator.unwrap_model(base)
    inner.config.use_cache = True
    if cfg.lora is not None:
        if is_main:
            inner.save_pretrained(str(out.root), safe_serialization=True)
            tokenizer.save_pretrained(str(out.root))
    else:
        trainer.save_model(str(out.root))  # model + tokenizer (with its chat template), any backend
    trainer.save_state()


def _write_records(cfg: TrainConfig, run: Resolved, trainer, data: _Data, ckpt: Path | None,
                   out: layout.TrainDir, totals: dict[str, float], wall_start: float) -> dict[str, Any]:
    """``sftlab_config.yaml``, ``train_summary.json`` (last: it marks the run finished), the loss curve."""
    from sftlab import __version__
    from sftlab.data import describe_data

    records = read_jsonl(out.metrics)
    summary = _summary(cfg, run, trainer, data, ckpt, out, totals, records, wall_start)
    atomic_write_text(out.config, "# Fully resolved config of this run (sftlab train).\n"
                      + yaml.safe_dump(saved_config(cfg, run, __version__), sort_keys=False, allow_unicode=True))
    atomic_write_json(out.summary, summary)
    plot_loss_curve(records, out.loss_curve, title=f"{cfg.model} on {describe_data(cfg.data)}")
    _say(f"sftlab train: done in {summary['wall_time_s']:.0f}s: step {summary['global_step']}, loss "
         f"{_fmt(summary['first_loss'])} -> {_fmt(summary['final_loss'])}"
         f"{'' if summary['final_eval_loss'] is None else ', eval loss ' + _fmt(summary['final_eval_loss'])}, "
         f"{summary['tokens_per_s']:.1f} tokens/s; model saved to {out.root}")
    return summary


def _push(run: Resolved, out: layout.TrainDir) -> None:
    """Upload exactly the final model, tokenizer, records and a model card (see :mod:`sftlab.train.hub`)."""
    from sftlab.train import hub

    args = run.args
    done = hub.push_to_hub(out.root, args.hub_model_id, private=args.hub_private_repo, revision=args.hub_revision)
    _say(f"sftlab train: pushed {len(done['files'])} files to the hub as {done['repo_id']} ({done['url']})")


def _summary(cfg: TrainConfig, run: Resolved, trainer, data: _Data, ckpt: Path | None, out: layout.TrainDir,
             totals: dict[str, float], records: list[dict], wall_start: float) -> dict[str, Any]:
    train_losses = [r["loss"] for r in records if r.get("loss") is not None]
    eval_losses = [r["eval_loss"] for r in records if r.get("eval_loss") is not None]
    final_ckpt = checkpoints.latest_checkpoint(out.root)
    env = environment_info()
    seconds = totals["train_seconds"]
    pre = data.pre
    return {
        "device": env.get("device"),
        "world_size": run.world_size,
        "precision": run.precision,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "num_train_examples": len(data.train),
        "num_eval_examples": len(data.eval) if data.eval is not None else 0,
        "per_device_train_batch_size": run.args.per_device_train_batch_size,
        "gradient_accumulation_steps": run.args.gradient_accumulation_steps,
        "effective_batch_size": _effective_batch(run),
        "tokens": totals["tokens"],
        "trained_tokens": totals["trained_tokens"],
        "train_time_s": round(seconds, 2),
        "wall_time_s": round(time.time() - wall_start, 2),  # this invocation, loading and saving included
        "tokens_per_s": round(totals["tokens"] / max(seconds, 1e-9), 2),
        "trained_tokens_per_s": round(totals["trained_tokens"] / max(seconds, 1e-9), 2),
        "first_loss": train_losses[0] if train_losses else None,
        "final_loss": train_losses[-1] if train_losses else None,
        "best_loss": min(train_losses) if train_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "best_eval_loss": min(eval_losses) if eval_losses else None,
        "resumed_from": str(ckpt) if ckpt is not None else None,
        "final_checkpoint": str(final_ckpt) if final_ckpt is not None else None,
        "output_dir": str(out.root),
        "model": cfg.model,
        "data": cfg.data,
        "loss_kind": cfg.loss,
        "masking": cfg.masking,
        "padding": "packed" if cfg.packing else cfg.padding,
        "group_by_length": run.group_by_length,
        "params": trainer.param_counts[0],
        "trainable_params": trainer.param_counts[1],
        "preprocess": {"cache_hit": pre.cache_hit, "cache_dir": str(pre.cache_dir),
                       **{k: v for k, v in (pre.stats or {}).items()
                          if k in ("records_read", "kept", "skipped", "truncated", "notes")}},
        "environment": env,
    }


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"
