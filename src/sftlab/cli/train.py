"""``sftlab train CONFIG.yaml [--key value ...]``: supervised fine-tuning from a YAML config."""

from __future__ import annotations

import argparse

HELP = "Fine-tune a causal LM on conversations from a YAML config (keys: sftlab's + TrainingArguments)."

EPILOG = """\
Any config key can be overridden: --learning_rate 1e-4 --lora.r 8 --packing (a bare flag means true).
Values are parsed as YAML. When output_dir holds a checkpoint the same command resumes from the newest
complete one; --overwrite_output_dir starts over. Multi-process: torchrun --nproc_per_node N -m sftlab train ...
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
    from sftlab.config import load_config, valid_keys
    from sftlab.train import train

    overrides = list(args.overrides or [])
    if "--help" in overrides or "-h" in overrides or "--keys" in overrides:
        print("valid config keys:\n  " + "\n  ".join(valid_keys()))
        return 0
    cfg, training_args = load_config(args.config, overrides)
    train(cfg, training_args)
    return 0
