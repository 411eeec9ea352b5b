"""``sftlab check-masking``: compare the masking implementation against a golden file (or write one).

SAMPLES: ``{"single_turn": [{"id", "messages"}, ...], "multi_turn": [...]}``; messages may carry
``train``/``weight`` keys (kept by normalisation), and their golden features then hold ``weights``.
GOLDEN: ``{"meta": {...}, "single_turn": [{"id", "features": {"input_ids", "labels",
"attention_mask"}}], "multi_turn": [...]}``, features right-padded to max-length (pad id,
label -100, attention 0). Messages are normalised the way the pipeline does before masking (a
no-op for already normalised conversations); the split a sample sits in is only a label, the
conversation's shape decides how it is masked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sftlab.prep.choices import CUT_SIDES, MASKING_METHODS, MASKING_STRATEGIES
from sftlab.prep.masking_parts import IGNORE_INDEX

HELP = "Check loss masks against a golden file (k/n match per split, first difference), or write one."
SPLITS = ("single_turn", "multi_turn")
FIELDS = ("input_ids", "labels", "attention_mask")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, metavar="SAMPLES.json",
                   help='{"single_turn": [{"id", "messages"}], "multi_turn": [...]}')
    p.add_argument("--golden", metavar="GOLDEN.json", help="expected features, padded to --max-length")
    p.add_argument("--write-golden", metavar="OUT", help="write a golden file from the current implementation")
    p.add_argument("--tokenizer", required=True, metavar="PATH_OR_ID")
    p.add_argument("--chat-template", default=None, metavar="NAME|FILE",
                   help="'chatml', a Jinja file, or the tokenizer's own (default; chatml when it has none)")
    p.add_argument("--strategy", choices=MASKING_STRATEGIES, required=True,
                   help="masking strategy: assistant, reverse or last_assistant")
    p.add_argument("--no-train-on-eos", dest="train_on_eos", action="store_false",
                   help="leave the end of turn (ChatML: <|im_end|> and its newline) out of the loss")
    p.add_argument("--no-train-on-role-header", dest="train_on_role_header", action="store_false",
                   help="leave the role header (ChatML: <|im_start|>assistant and its newline) out of the loss")
    p.add_argument("--max-length", type=int, default=2048, metavar="N")
    p.add_argument("--truncation", choices=CUT_SIDES, default="right")
    p.add_argument("--method", choices=MASKING_METHODS, default="fast",
                   help="masking implementation to check (default fast; prefix is the reference)")


def _read_json(path: str, what: str) -> Any:
    from sftlab.errors import DataError

    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(path, f"{what} file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read {what} file: {e.strerror or e}") from None
    if not raw.strip():
        raise DataError(path, f"{what} file is empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(path, f"not valid UTF-8 at byte offset {e.start}", line=raw.count(b"\n", 0, e.start) + 1) from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None


def _load_samples(path: str) -> dict[str, list[tuple[str, list[dict[str, str]]]]]:
    from sftlab.data import normalize_messages
    from sftlab.errors import DataError, SftlabError

    obj = _read_json(path, "samples")
    if not isinstance(obj, dict) or not any(s in obj for s in SPLITS):
        raise DataError(path, 'expected an object with "single_turn" and/or "multi_turn" lists')
    out: dict[str, list[tuple[str, list[dict[str, str]]]]] = {}
    for split in SPLITS:
        items = obj.get(split, [])
        if not isinstance(items, list):
            raise DataError(path, f"'{split}' must be a list", field=split)
        rows = []
        for i, item in enumerate(items):
            field = f"{split}[{i}]"
            if not isinstance(item, dict):
                raise DataError(path, "sample must be an object with 'id' and 'messages'", field=field)
            turns = item.get("messages", item.get("conversations"))
            try:
                messages = normalize_messages(turns)
            except SftlabError as e:
                raise DataError(path, str(e), field=f"{field}.messages") from None
            if messages is None:
                raise DataError(path, "no complete user->assistant round", field=f"{field}.messages")
            rows.append((str(item.get("id", f"{split}:{i}")), messages))
        out[split] = rows
    return out


def _with_weights(features: dict[str, Any]) -> dict[str, Any]:
    """Features with ``weights``: theirs, or 1.0 on every target and 0.0 elsewhere (what absent means)."""
    if "weights" in features or not isinstance(features.get("labels"), list):
        return features
    return {**features, "weights": [0.0 if lab == IGNORE_INDEX else 1.0 for lab in features["labels"]]}


def _compare(expected: dict, actual: dict, golden: str, where: str) -> tuple | None:
    """``None`` when the features agree, else ``(field, position, golden value, got, golden length, got length)``."""
    from sftlab.errors import DataError

    if "weights" in expected or "weights" in actual:  # either side may leave all-1.0 weights out
        expected, actual = _with_weights(expected), _with_weights(actual)
    for fld in FIELDS + (("weights",) if "weights" in actual else ()):
        exp = expected.get(fld)
        if not isinstance(exp, list):
            raise DataError(golden, f"features.{fld} must be a list", field=f"{where}.features.{fld}")
        diff = _first_difference(exp, actual[fld])
        if diff is not None:
            return (fld, *diff, len(exp), len(actual[fld]))
    return None


def _first_difference(expected: list[int], actual: list[int]) -> tuple[int, Any, Any] | None:
    for k, (a, b) in enumerate(zip(expected, actual, strict=False)):
        if a != b:
            return k, a, b
    if len(expected) != len(actual):
        k = min(len(expected), len(actual))
        return k, (expected[k] if k < len(expected) else "<end>"), (actual[k] if k < len(actual) else "<end>")
    return None


def run(args: argparse.Namespace) -> int:
    from sftlab import __version__
    from sftlab.errors import DataError, SftlabError
    from sftlab.models.loading import load_tokenizer
    from sftlab.prep.masking import encode_conversation, pad_features, pad_token_id
    from sftlab.utils import atomic_write_json, stable_hash

    if not args.golden and not args.write_golden:
        raise SftlabError("give --golden GOLDEN.json to check, or --write-golden OUT to write one")
    if args.max_length < 1:
        raise SftlabError(f"--max-length must be positive, got {args.max_length}")
    samples = _load_samples(args.samples)
    golden = _read_json(args.golden, "golden") if args.golden else None
    if golden is not None and (not isinstance(golden, dict) or not any(s in golden for s in SPLITS)):
        raise DataError(args.golden, 'expected an object with "meta", "single_turn" and "multi_turn"')
    tok = load_tokenizer(args.tokenizer, chat_template=args.chat_template)
    pad = pad_token_id(tok)

    def features(messages):
        f = encode_conversation(messages, tok, strategy=args.strategy, max_length=args.max_length,
                                truncation=args.truncation, method=args.method, train_on_eos=args.train_on_eos,
                                train_on_role_header=args.train_on_role_header)
        return pad_features(f, args.max_length, pad)

    if args.write_golden:
        out: dict[str, Any] = {
            "meta": {
                "sftlab_version": __version__, "tokenizer": args.tokenizer, "chat_template": args.chat_template,
                "chat_template_sha256": stable_hash(tok.chat_template or "", length=64), "strategy": args.strategy,
                "max_length": args.max_length, "truncation": args.truncation, "pad_token_id": pad,
                "train_on_eos": args.train_on_eos, "train_on_role_header": args.train_on_role_header,
                "padding": "right to max_length (pad id, label -100, attention 0)",
            }
        }
        for split in SPLITS:
            out[split] = [{"id": sid, "features": features(m)} for sid, m in samples[split]]
        atomic_write_json(args.write_golden, out, indent=None)
        n = sum(len(out[s]) for s in SPLITS)
        print(f"wrote {n} golden samples ({', '.join(f'{s} {len(out[s])}' for s in SPLITS)}) to {args.write_golden}")
        if golden is None:
            return 0

    meta = golden.get("meta") or {}
    for key, mine in (("strategy", args.strategy), ("max_length", args.max_length), ("truncation", args.truncation),
                      ("train_on_eos", args.train_on_eos), ("train_on_role_header", args.train_on_role_header)):
        if key in meta and meta[key] != mine:
            print(f"warning: golden meta has {key}={meta[key]!r}, checking with {mine!r}")
    all_ok = True
    for split in SPLITS:
        expected_rows = golden.get(split, [])
        if not isinstance(expected_rows, list):
            raise DataError(args.golden, f"'{split}' must be a list", field=split)
        by_id = dict(samples.get(split, []))
        matched, problems = 0, []
        for i, row in enumerate(expected_rows):
            if not isinstance(row, dict) or not isinstance(row.get("features"), dict):
                raise DataError(args.golden, "entry must be an object with 'id' and 'features'", field=f"{split}[{i}]")
            sid = str(row.get("id"))
            if sid not in by_id:
                problems.append(f"  {split} id {sid}: not in the samples file")
                continue
            bad = _compare(row["features"], features(by_id[sid]), args.golden, f"{split}[{i}]")
            if bad is None:
                matched += 1
            else:
                fld, pos, e, a, ne, na = bad
                problems.append(f"  {split} id {sid}: field {fld} differs first at position {pos} "
                                f"(golden {e}, got {a}; lengths {ne} vs {na})")
        print(f"{split}: {matched}/{len(expected_rows)} match")
        for line in problems:
            print(line)
        all_ok &= matched == len(expected_rows)
    return 0 if all_ok else 1
