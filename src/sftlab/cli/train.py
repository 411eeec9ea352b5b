"""``sftlab train CONFIG.yaml [--key value ...]``: supervised fine-tuning from a YAML config."""

from __future__ import annotations

import argparse

HELP = "Fine-tune a causal LM on conversations from a YAML config (keys: sftlab's + TrainingArguments)."

EPILOG = """\
Any config key can be overridden: --learning_rate 1e-4 --lora.r 8 --packing (a bare flag means true).
Values are parsed as YAML. When output_dir holds a checkpoint the same command resumes from the newest
complete one; --overwrite_output_dir starts over. Multi-process: torchrun --nproc_per_node N -m sftlab train ...

TRL and Axolotl key names are read as sftlab's (each printed once), so a `trl sft` config runs as it is:
  sftlab train tests/fixtures/trl_sft_config.yaml --model_name_or_path smollm2-135m-instruct-gguf \
      --dataset_name tests/fixtures/smoltalk_like.jsonl --max_length 512 --warmup_ratio 0.1 --max_steps 2
report_to takes any integration transformers supports (tensorboard, wandb, trackio, mlflow, ...), keys from
the environment only (WANDB_MODE=offline works offline). push_to_hub: true uploads the final model, tokenizer,
config, summary, loss curve and a model card, never cache/ or checkpoints. IFEval during training:
  --ifeval_eval_steps 50 --ifeval_eval_sample 20 --ifeval_eval_data ../shared/ifeval/input_data.jsonl
scores a seeded sample into metrics.jsonl and loss_curve.png. --keys lists every key and alias.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--key value",
                   help="override any config key")


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sftlab.train.config import load_config, valid_keys
    from sftlab.train.recipe import train

    overrides = list(args.overrides or [])
    if "--help" in overrides or "-h" in overrides or "--keys" in overrides:
        from sftlab.train.aliases import KEYS

        print("valid config keys:\n  " + "\n  ".join(valid_keys()))
        print("TRL/Axolotl/LLaMA-Factory keys (see README, Coming from TRL / Axolotl / LLaMA-Factory):\n  "
              + "\n  ".join(f"{k.name} -> {k.target} ({k.source})" if k.kind == "alias"
                             else f"{k.name} ({k.kind}, {k.source}): {k.refused or k.note}" for k in KEYS.values()))
        return 0
    cfg, training_args = load_config(args.config, overrides)
    train(cfg, training_args)
    return 0
