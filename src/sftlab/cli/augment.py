"""``sftlab augment``: add verifiable IFEval-style instructions to conversations, with replies that satisfy them."""

from __future__ import annotations

import argparse
import sys

from sftlab.cli.preprocess import field_default, positive_int, preprocess_defaults

HELP = ("Add verifiable instructions (IFEval's types) to conversations and make the replies satisfy them; "
        "every example is checked by the IFEval scorer before it is written.")


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got '{text}'") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {v:g}")
    return v


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _weights(text: str) -> dict[str, float]:
    """``transform=3,no_comma=2`` -> ``{"transform": 3.0, "no_comma": 2.0}``."""
    out: dict[str, float] = {}
    for part in _names(text):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(part)
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT pairs (transform=3,no_comma=2), got '{part}'") from None
    return out


def _one_line_error(message: str) -> None:
    """Bad options are one line on stderr and exit 2, like every other user error (no usage dump)."""
    print(f"sftlab augment: error: {message} (see sftlab augment --help)", file=sys.stderr)
    sys.exit(2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sftlab.augment.config import INSTRUCTION_COUNTS, AugmentConfig
    from sftlab.augment.hygiene import HYGIENE_RULES
    from sftlab.augment.phrasing import PHRASINGS

    def A(name: str):  # AugmentConfig's default of a field: A("seed")
        return field_default(AugmentConfig, name)

    D = preprocess_defaults()
    p.error = _one_line_error  # type: ignore[method-assign]
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="JSON/JSONL file, a directory of them, 'sharegpt' (bundled ShareGPT V3) or a hub dataset id")
    p.add_argument("--output", required=True, metavar="FILE.jsonl",
                   help="augmented conversations, one JSON object per line; statistics go to FILE.stats.json")
    p.add_argument("--conversation-field", default=D.conversation_field, metavar="FIELD",
                   help=f"record field holding the turns (default: {D.conversation_field}; falls back to messages)")
    p.add_argument("--max-samples", type=positive_int, default=None, metavar="N",
                   help="read the first N usable conversations (a random N with --sample-seed)")
    p.add_argument("--sample-seed", type=int, default=None, metavar="SEED",
                   help="draw --max-samples at random with this seed instead of taking the first N")
    p.add_argument("--max-rounds", type=positive_int, default=None, metavar="N",
                   help="keep the first N user->assistant rounds of each conversation (the last one is augmented)")
    p.add_argument("--seed", type=int, default=A("seed"),
                   help=f"seed for choosing types, parameters and wording (default {A('seed')})")
    p.add_argument("--types", type=_names, default=A("types"), metavar="T,...",
                   help="instruction types to use: full IFEval ids, short names (no_comma) or categories "
                        "(change_case); default: all")
    p.add_argument("--holdout-types", type=_names, default=A("holdout_types"), metavar="T,...",
                   help="instruction types never used, to measure transfer to unseen constraint types")
    p.add_argument("--type-weights", type=_weights, default=A("type_weights"), metavar="NAME=W,...",
                   help="relative draw weights by type, category or kind (transform: the reply is rewritten; "
                        "relabel: the instruction fits the reply); matching weights multiply, others weigh 1")
    p.add_argument("--max-instructions", type=int, choices=INSTRUCTION_COUNTS, default=A("max_instructions"),
                   metavar="K", help=f"at most K instructions per conversation, {min(INSTRUCTION_COUNTS)} to "
                                     f"{max(INSTRUCTION_COUNTS)} (default {A('max_instructions')})")
    p.add_argument("--ratio", type=_fraction, default=A("ratio"), metavar="R",
                   help=f"fraction of conversations that get instructions; the rest are written plain "
                        f"(default {A('ratio'):g})")
    p.add_argument("--ifeval-data", default=A("ifeval_data"), metavar="FILE_OR_HUB_ID",
                   help="IFEval inputs for decontamination (e.g. ../shared/ifeval/input_data.jsonl): conversations "
                        "sharing an 8-word sequence with an IFEval prompt are dropped")
    p.add_argument("--ifbench-data", default=A("ifbench_data"), metavar="FILE_OR_HUB_ID",
                   help="IFBench inputs to decontaminate against as well (e.g. ../shared/ifbench/IFBench_test.jsonl)")
    p.add_argument("--ngram", type=int, default=A("ngram"), metavar="N",
                   help=f"decontamination n-gram length in words (default {A('ngram')})")
    p.add_argument("--no-decontaminate", action="store_true",
                   help="keep conversations that overlap IFEval (IFBench) prompts (not recommended)")
    p.add_argument("--strip-openers", action="store_true", default=A("strip_openers"),
                   help="remove chatty openings from the replies (\"Sure, here's ...:\", \"Certainly! I'd be happy "
                        "to help.\"): they restate the request, against its own constraints")
    p.add_argument("--hygiene", default=A("hygiene"), metavar="RULE,...",
                   help="drop, and count, conversations not worth learning from: all, or any of "
                        + ", ".join(HYGIENE_RULES))
    p.add_argument("--preserve-content", action="store_true", default=A("preserve_content"),
                   help="transforms keep code, URLs, identifiers, formulas, links and headings intact, or are "
                        "skipped and counted")
    p.add_argument("--phrasing", choices=PHRASINGS, default=A("phrasing"),
                   help="v1: the original wording after the request; v2: 8+ phrasings per type, terse or polite, "
                        f"before or after the request or as a system message (default {A('phrasing')})")
    p.add_argument("--own-types", action="store_true", default=A("own_types"),
                   help="add sftlab's own constraint types (sftlab:*) to the default pool")
    p.add_argument("--binding", action="store_true", default=A("binding"),
                   help="constraints that bind: tight thresholds counted on the reply itself, two different "
                        "responses, titles naming the subject, fitting endings and postscripts")
    p.add_argument("--replies-from", default=None, metavar="MODEL",
                   help="self-distillation: MODEL (the one you will fine-tune) answers each single-turn prompt "
                        "itself, greedily, and the instructions are fitted to its answers; multi-turn "
                        "conversations and answers that do not end in time are dropped and counted")
    p.add_argument("--reply-max-new-tokens", type=positive_int, default=None, metavar="N",
                   help=f"with --replies-from: longest answer in tokens (default: the augment setting's, "
                        f"{A('reply_max_new_tokens')})")
    p.add_argument("--max-length", type=positive_int, default=None, metavar="N",
                   help="with --replies-from: prompt plus answer must fit in N tokens, the training max length "
                        f"(default {D.max_length})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sftlab.augment import AugmentConfig, augment_conversations, load_ifeval_prompts, records_to_jsonl
    from sftlab.augment.decontaminate import load_benchmark_prompts
    from sftlab.data import format_skips, load_conversations
    from sftlab.errors import ConfigError
    from sftlab.utils import atomic_write_json, atomic_write_text

    out = Path(args.output)
    if out.suffix != ".jsonl":
        raise ConfigError(f"--output must be a .jsonl file, got '{args.output}'")
    if args.no_decontaminate and args.ifeval_data is None and args.ifbench_data is None:
        raise ConfigError("--no-decontaminate has no effect without --ifeval-data or --ifbench-data; drop it")
    for flag, value in (("--reply-max-new-tokens", args.reply_max_new_tokens), ("--max-length", args.max_length)):
        if value is not None and not args.replies_from:
            raise ConfigError(f"{flag} has no effect without --replies-from; drop it")
    cfg = AugmentConfig(types=args.types, holdout_types=args.holdout_types, max_instructions=args.max_instructions,
                        ratio=args.ratio, type_weights=args.type_weights, seed=args.seed, ngram=args.ngram,
                        decontaminate=not args.no_decontaminate, ifeval_data=args.ifeval_data,
                        ifbench_data=args.ifbench_data,
                        strip_openers=args.strip_openers, hygiene=args.hygiene,
                        preserve_content=args.preserve_content, phrasing=args.phrasing, own_types=args.own_types,
                        binding=args.binding, replies="model" if args.replies_from else "dataset",
                        **({"reply_max_new_tokens": args.reply_max_new_tokens} if args.reply_max_new_tokens else {}))
    tokenizer = None
    if args.replies_from:  # the model's spec and tokenizer are checked before any reading
        from sftlab.models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.replies_from)
    # IFEval inputs first: a bad --ifeval-data must fail before any reading or output.
    prompts = load_ifeval_prompts(args.ifeval_data) if args.ifeval_data and cfg.decontaminate else None
    if args.ifbench_data and cfg.decontaminate:
        load_benchmark_prompts("ifbench", args.ifbench_data)  # a bad --ifbench-data fails here too
    loaded = load_conversations(args.data, conversation_field=args.conversation_field, max_samples=args.max_samples,
                                sample_seed=args.sample_seed, max_rounds=args.max_rounds)
    print(f"sftlab augment: read {loaded.stats['records_read']}, kept {loaded.stats['kept']}, "
          f"{format_skips(loaded.stats['skipped'])}", file=sys.stderr)
    if args.ifeval_data is None:
        print("sftlab augment: warning: no --ifeval-data, so conversations were not decontaminated against IFEval",
              file=sys.stderr)
    if args.replies_from:
        from sftlab.augment.replies import self_distill

        print(self_distill(loaded, args.replies_from, tokenizer, max_length=args.max_length or preprocess_defaults().max_length,
                           max_new_tokens=cfg.reply_max_new_tokens, progress=not args.no_progress).format(),
              file=sys.stderr)
    records, stats = augment_conversations(loaded.conversations, cfg, prompts, ids=loaded.ids,
                                          progress=not args.no_progress)
    atomic_write_text(out, records_to_jsonl(records))
    stats_path = out.with_name(out.stem + ".stats.json")
    atomic_write_json(stats_path, {"config": cfg.to_dict(), "data": loaded.stats, **stats.to_dict()})
    print(stats.format())
    print(f"\nwrote {len(records)} conversations to {out} (statistics: {stats_path})")
    return 0
