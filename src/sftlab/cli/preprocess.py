"""``sftlab preprocess``: load, normalise and mask a dataset into a cached Arrow dataset, with stats."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from sftlab.prep.choices import MASKING_STRATEGIES, TRUNCATIONS

HELP = "Normalise and loss-mask conversations into a cached Arrow dataset; print and write statistics."


def positive_int(text: str) -> int:
    """argparse type of every count option (preprocess, inspect, augment, bench)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def field_default(cls: type, name: str) -> Any:
    """The default of the dataclass field ``name`` of ``cls``.

    An option that fills a config field takes its default (and the default its help names) from that
    field, as TRL builds its command line from ``SFTConfig``: the command and the YAML key cannot drift
    apart. The config modules are imported when the command's options are built, not at start-up.
    """
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")


def preprocess_defaults() -> Any:
    """:class:`~sftlab.prep.pipeline.PreprocessConfig`'s defaults, by field name (``D.max_length``)."""
    from sftlab.prep.pipeline import PreprocessConfig

    names = [f.name for f in dataclasses.fields(PreprocessConfig) if f.name not in ("data", "tokenizer")]
    return argparse.Namespace(**{n: field_default(PreprocessConfig, n) for n in names})


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``preprocess`` and ``inspect``: the source and how it is read and masked."""
    D = preprocess_defaults()
    p.add_argument("--data", required=True, action="append", metavar="SOURCE|SPEC",
                   help="JSON/JSONL/Parquet/CSV file, a directory of JSON/JSONL/Parquet files, 'sharegpt' (bundled ShareGPT V3) or a "
                        "hub dataset id; or a data spec in YAML flow style, e.g. \"{path: alpaca.json, format: alpaca, "
                        "weight: 2}\" or a list of them. Give --data several times to mix sources")
    p.add_argument("--tokenizer", required=True, metavar="PATH_OR_ID",
                   help="tokenizer: local directory, hub id, .gguf file or smollm2-135m-instruct-gguf")
    p.add_argument("--chat-template", default=D.chat_template, metavar="NAME|FILE",
                   help="'chatml', a Jinja file, or the tokenizer's own (default; chatml when it has none)")
    p.add_argument("--conversation-field", default=D.conversation_field, metavar="FIELD",
                   help=f"record field holding the turns (default: {D.conversation_field}; falls back to messages)")
    p.add_argument("--masking", choices=MASKING_STRATEGIES, default=D.masking,
                   help="train on assistant turns (default), on user turns (reverse) or on the final assistant "
                        "turn only (last_assistant); a message's own train: true/false overrides it")
    p.add_argument("--no-train-on-eos", dest="train_on_eos", action="store_false", default=D.train_on_eos,
                   help="leave what the template puts after a trained message's content out of the loss "
                        "(ChatML: the end-of-turn token <|im_end|> and the newline after it)")
    p.add_argument("--no-train-on-role-header", dest="train_on_role_header", action="store_false",
                   default=D.train_on_role_header,
                   help="leave what the template puts before a trained message's content out of the loss "
                        "(ChatML: <|im_start|>assistant and its newline)")
    p.add_argument("--max-length", type=positive_int, default=D.max_length, metavar="N",
                   help=f"truncate sequences to N tokens after masking (default {D.max_length})")
    p.add_argument("--truncation", choices=TRUNCATIONS, default=D.truncation,
                   help="keep the first (right, default) or the last (left) max-length tokens, drop (and "
                        "count) conversations longer than max-length, or drop_augmented: drop only those "
                        "augmentation gave instructions, cut the plain ones on the right")
    p.add_argument("--max-rounds", type=positive_int, default=D.max_rounds, metavar="N",
                   help="keep the first N user->assistant rounds of each conversation")
    p.add_argument("--strict", action="store_true", default=D.strict, help="make any skipped record or unknown role an error")
    p.add_argument("--special-text", choices=("skip", "keep"), default=D.special_text,
                   help="a message whose content holds a special token's text (<|im_end|>) would forge a turn "
                        "boundary: skip such conversations, counted (default), or keep them (the old behaviour)")


def data_value(values: list[str]):
    """``--data`` values (given once or more) as what the data layer takes: the plain source string
    when there is one, else a list of :class:`~sftlab.data.DataSpec`. A value starting with ``{``
    or ``[`` is a spec (or list of specs) in YAML flow style."""
    import yaml

    from sftlab.data import parse_data_specs
    from sftlab.errors import ConfigError
    from sftlab.train.yaml_load import load_yaml  # bounded depth and aliases, duplicate keys refused

    items: list = []
    for v in values:
        if v.lstrip().startswith(("{", "[")):
            try:
                parsed = load_yaml(v)
            except yaml.YAMLError as e:
                raise ConfigError(f"--data {v!r} is not a valid YAML spec: {str(e).splitlines()[0]}") from None
            items += parsed if isinstance(parsed, list) else [parsed]
        else:
            items.append(v)
    if len(items) == 1 and isinstance(items[0], str):
        return items[0]
    return parse_data_specs(items, where="--data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    D = preprocess_defaults()
    p.add_argument("--max-samples", type=positive_int, default=D.max_samples, metavar="N",
                   help="keep N conversations: the first N, or a random N with --sample-seed "
                        "(with several --data: the size cap of the mix)")
    p.add_argument("--sample-seed", type=int, default=D.sample_seed, metavar="SEED",
                   help="draw --max-samples at random with this seed instead of taking the first N "
                        "(with several --data: the seed of the mix)")
    p.add_argument("--num-proc", type=positive_int, default=D.num_proc, metavar="N",
                   help=f"worker processes (default {D.num_proc})")
    p.add_argument("--output-dir", required=True, metavar="DIR",
                   help="where the feature cache (DIR/cache/<key>/) and stats.json go")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from sftlab import layout
    from sftlab.data import format_skips
    from sftlab.prep.pipeline import PreprocessConfig, format_stats, preprocess

    cfg = PreprocessConfig(
        data=data_value(args.data),
        tokenizer=args.tokenizer,
        chat_template=args.chat_template,
        conversation_field=args.conversation_field,
        masking=args.masking,
        train_on_eos=args.train_on_eos,
        train_on_role_header=args.train_on_role_header,
        max_length=args.max_length,
        truncation=args.truncation,
        max_rounds=args.max_rounds,
        max_samples=args.max_samples,
        sample_seed=args.sample_seed,
        strict=args.strict,
        num_proc=args.num_proc,
        special_text=args.special_text,
    )
    res = preprocess(cfg, args.output_dir, progress=not args.no_progress)
    s = res.stats
    print(f"sftlab preprocess: read {s['records_read']}, kept {s['kept']}, {format_skips(s['skipped'])}",
          file=sys.stderr)
    print(format_stats(s))
    print(f"cache: {'hit' if res.cache_hit else 'built'} {res.cache_dir}")
    print(f"stats: {res.cache_dir.parent.parent / layout.STATS}")
    return 0
