"""IFEval during training: ``ifeval_eval_steps: N`` scores a small seeded IFEval sample every N steps.

Every ``ifeval_eval_steps`` optimizer steps, :class:`IFEvalCallback` generates greedy answers for
``ifeval_eval_sample`` IFEval prompts (drawn once, seeded by the run's ``seed``, from
``ifeval_eval_data``; default: the experiment's ``eval.ifeval_data``, else ``google/IFEval``) with at
most ``ifeval_eval_max_new_tokens`` new tokens each, scores them with :mod:`sftlab.eval.ifeval` and appends
``{"step", "epoch", "ifeval_prompt_strict", "ifeval_inst_strict", "ifeval_prompts"}`` to
``metrics.jsonl``. With ``ifeval_eval_ifbench_sample: K``, K seeded IFBench prompts are answered in
the same generation call and scored with :mod:`sftlab.eval.ifbench`, adding ``ifbench_prompt_loose``
(IFBench's headline), ``ifbench_prompt_strict``, ``ifbench_inst_loose`` and ``ifbench_prompts``.
``loss_curve.png`` draws both on a second axis, and a sweep (or a person) can stop a
run whose instruction following stopped improving.

It runs on the main process only, with the model switched to eval mode (and the KV cache on) for the
generation and back to training mode afterwards; the other processes wait at the next collective.
Models sharded over processes (FSDP, DeepSpeed ZeRO-3) cannot generate on one rank: not supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from sftlab.errors import ConfigError
from sftlab.eval.ifeval import IFEVAL_HUB_ID
from sftlab.utils import append_jsonl

if TYPE_CHECKING:
    from transformers import PreTrainedModel as Model
    from transformers import PreTrainedTokenizerBase as Tokenizer

    from sftlab.train.config import TrainConfig


def validate(cfg: TrainConfig) -> None:
    """The ``ifeval_eval_*`` keys of a train config, checked before any work."""
    steps = cfg.ifeval_eval_steps
    if steps is not None and steps < 1:
        raise ConfigError(f"ifeval_eval_steps must be >= 1 (or null for none), got {steps}")
    for key in ("ifeval_eval_sample", "ifeval_eval_max_new_tokens"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    k = cfg.ifeval_eval_ifbench_sample
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ConfigError(f"ifeval_eval_ifbench_sample must be >= 1 (or null for none), got {k!r}")


def ifeval_data_of(cfg: TrainConfig) -> str:
    """``ifeval_eval_data``, else the ``eval:`` block's ``ifeval_data`` (``sftlab run``), else google/IFEval."""
    if cfg.ifeval_eval_data:
        return str(cfg.ifeval_eval_data)
    block = cfg.eval if isinstance(cfg.eval, dict) else {}
    return str(block.get("ifeval_data") or IFEVAL_HUB_ID)


def ifbench_data_of(cfg: TrainConfig) -> str:
    """``ifeval_eval_ifbench_data``, else the ``eval:`` block's ``ifbench.data``, else allenai/IFBench_test."""
    from sftlab.eval.ifbench import IFBENCH_HUB_ID

    if cfg.ifeval_eval_ifbench_data:
        return str(cfg.ifeval_eval_ifbench_data)
    block = cfg.eval if isinstance(cfg.eval, dict) else {}
    sub = block.get("ifbench") if isinstance(block.get("ifbench"), dict) else {}
    return str(sub.get("data") or IFBENCH_HUB_ID)


def generate(model: Model, tokenizer: Tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers through :func:`sftlab.eval.generate.generate_responses` (the one call site, by keyword)."""
    from sftlab.eval.generate import GenerationConfig, generate_responses

    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    responses, _stats = generate_responses(model=model, tokenizer=tokenizer, prompts=prompts, cfg=gen_cfg,
                                           progress=False)
    return responses


class IFEvalCallback(TrainerCallback):
    """Scores ``inputs`` (IFEval records) every ``every`` steps and appends the figures to ``metrics_path``."""

    def __init__(self, inputs: list[dict], tokenizer: Tokenizer, *, every: int, max_new_tokens: int, metrics_path: Path,
                 is_main: bool, batch_size: int = 8, ifbench_inputs: list[dict] | None = None):
        self.inputs = inputs
        self.ifbench_inputs = ifbench_inputs or []
        self.tokenizer = tokenizer
        self.every = every
        self.max_new_tokens = max_new_tokens
        self.metrics_path = Path(metrics_path)
        self.is_main = is_main
        self.batch_size = batch_size
        self.last_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if not self.is_main or model is None or step % self.every or step == self.last_step:
            return
        self.last_step = step
        figures = self.score(model)
        rec = {"step": step, "epoch": round(float(state.epoch or 0.0), 6), **figures}
        state.log_history.append(dict(rec))
        append_jsonl(self.metrics_path, rec)

    def score(self, model: Model) -> dict[str, Any]:
        """Generate and score the sample with ``model`` in eval mode; restores training mode and cache."""
        import torch

        from sftlab.eval.ifeval import score_responses

        was_training = model.training
        config = getattr(model, "config", None)
        use_cache = getattr(config, "use_cache", None)
        model.eval()
        if config is not None:
            config.use_cache = True
        try:
            prompts = [inp["prompt"] for inp in self.inputs]
            extra = [inp["prompt"] for inp in self.ifbench_inputs]
            with torch.no_grad():  # one call for both benchmarks: the batches stay full
                answers = generate(model, self.tokenizer, prompts + extra, max_new_tokens=self.max_new_tokens,
                                   batch_size=self.batch_size)
        finally:
            if config is not None:
                config.use_cache = use_cache
            model.train(was_training)
        result = score_responses(self.inputs, dict(zip(prompts, answers[:len(prompts)], strict=True)))
        m = result["metrics"] if "metrics" in result else result
        out = {"ifeval_prompt_strict": round(float(m["prompt_level_strict_acc"]), 6),
               "ifeval_inst_strict": round(float(m["inst_level_strict_acc"]), 6),
               "ifeval_prompts": len(prompts)}
        if extra:
            out.update(_ifbench_figures(self.ifbench_inputs, dict(zip(extra, answers[len(prompts):], strict=True))))
        return out


def _ifbench_figures(inputs: list[dict], responses: dict[str, str]) -> dict[str, Any]:
    from sftlab.eval.ifbench import TASK
    from sftlab.eval.scoring import score_responses

    m = score_responses(inputs, responses, TASK.registry(), TASK.title)["metrics"]
    return {"ifbench_prompt_loose": round(float(m["prompt_level_loose_acc"]), 6),
            "ifbench_prompt_strict": round(float(m["prompt_level_strict_acc"]), 6),
            "ifbench_inst_loose": round(float(m["inst_level_loose_acc"]), 6), "ifbench_prompts": len(inputs)}


def make_callback(cfg: TrainConfig, tokenizer: Tokenizer, *, metrics_path: Path, seed: int, is_main: bool,
                  batch_size: int = 8) -> IFEvalCallback | None:
    """The callback for a train config with ``ifeval_eval_steps`` (None without); the sample is drawn
    now, so a missing IFEval file fails before training starts."""
    if not cfg.ifeval_eval_steps:
        return None
    inputs: list[dict] = []
    ifbench: list[dict] = []
    if is_main:
        from sftlab.eval.ifeval import ensure_punkt, load_ifeval_inputs, select_inputs

        ensure_punkt()
        inputs = select_inputs(load_ifeval_inputs(ifeval_data_of(cfg)), sample=cfg.ifeval_eval_sample, seed=seed)
        if cfg.ifeval_eval_ifbench_sample:
            from sftlab.eval.ifbench import TASK
            from sftlab.eval.inputs import load_inputs

            TASK.ensure_data()
            ifbench = select_inputs(load_inputs(TASK, ifbench_data_of(cfg)), sample=cfg.ifeval_eval_ifbench_sample,
                                    seed=seed, title=TASK.title)
    return IFEvalCallback(inputs, tokenizer, every=cfg.ifeval_eval_steps, max_new_tokens=cfg.ifeval_eval_max_new_tokens,
                          metrics_path=metrics_path, is_main=is_main, batch_size=batch_size, ifbench_inputs=ifbench)
