"""``sftlab inspect``: show one conversation token by token with the trained tokens highlighted."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

HELP = "Show one conversation token by token, trained tokens highlighted (colour on a terminal, [[...]] when piped)."

GREEN = ("\x1b[32m", "\x1b[92m")  # trained tokens, alternating so token boundaries stay visible
GREY = ("\x1b[90m", "\x1b[37m")  # masked tokens
RESET = "\x1b[0m"
OPEN, CLOSE = "[[", "]]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sftlab.cli.preprocess import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--index", type=int, default=0, metavar="N",
                   help="which conversation, counting usable (normalised) conversations from 0 (default 0)")
    p.add_argument("--tokens", action="store_true", help="also list every token: position, id, text, label")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour output: auto (on a terminal, unless NO_COLOR is set), always or never")


def token_pieces(tokenizer: Tokenizer, text: str, ids: list[int]) -> list[str]:
    """The text each token stands for, so that ``"".join(pieces) == text``.

    Uses character offsets (gaps, such as a leading space trimmed from an offset, go to the
    following token); tokens that share a character (a split multi-byte character) after the
    first get an empty piece. Without offsets, each token is decoded on its own.
    """
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            pieces, prev = [], 0
            for _, end in enc["offset_mapping"]:
                end = max(end, prev)
                pieces.append(text[prev:end])
                prev = end
            if pieces:
                pieces[-1] += text[prev:]
            return pieces
    return [tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def render_marked(pieces: list[str], trained: list[bool], *, color: bool) -> str:
    """Join token pieces, marking trained tokens with colour or ``[[...]]`` around each trained run."""
    out: list[str] = []
    if color:
        for k, (piece, t) in enumerate(zip(pieces, trained, strict=True)):
            shade = (GREEN if t else GREY)[k % 2]
            # Colour each line separately so a terminal does not smear colour across newlines.
            out.append("\n".join(f"{shade}{line}{RESET}" if line else "" for line in piece.split("\n")))
        return "".join(out)
    inside = False
    for piece, t in zip(pieces, trained, strict=True):
        if t and not inside:
            out.append(OPEN)
        elif not t and inside:
            out.append(CLOSE)
        inside = t
        out.append(piece)
    if inside:
        out.append(CLOSE)
    return "".join(out)


def run(args: argparse.Namespace) -> int:
    from sftlab.cli.preprocess import data_value
    from sftlab.data import conversation_shape, fit_to_template, load_conversations, load_mixture
    from sftlab.errors import SftlabError
    from sftlab.models.loading import load_tokenizer
    from sftlab.prep.masking import (
        IGNORE_INDEX,
        encode_conversation_with_info,
        message_plan,
        prefix_lengths_fast,
    )
    from sftlab.prep.pipeline import encode_truncation

    if args.index < 0:
        raise SftlabError(f"--index must be 0 or more, got {args.index}")
    data = data_value(args.data)
    if isinstance(data, str):
        loaded = load_conversations(data, conversation_field=args.conversation_field, max_samples=args.index + 1,
                                    max_rounds=args.max_rounds, strict=args.strict)
    else:  # a mix: the index counts conversations of the whole mix (seed 0, as preprocess draws it)
        loaded = load_mixture(data, seed=0, conversation_field=args.conversation_field, max_rounds=args.max_rounds,
                              strict=args.strict)
    name = loaded.stats["source"]
    if args.index >= len(loaded.conversations):
        raise SftlabError(f"--index {args.index} is out of range: '{name}' has {len(loaded.conversations)} "
                          f"usable conversations")
    tok = load_tokenizer(args.tokenizer, chat_template=args.chat_template)
    [messages], folded = fit_to_template([loaded.conversations[args.index]], tok)
    controls = {"train_on_eos": args.train_on_eos, "train_on_role_header": args.train_on_role_header}
    truncation = encode_truncation(args.truncation)
    feats, info = encode_conversation_with_info(
        messages, tok, strategy=args.masking, max_length=args.max_length, truncation=truncation, **controls
    )
    rendered, trained_msgs, weights = message_plan(messages, args.masking)
    full_ids, lengths, _ = prefix_lengths_fast(tok, rendered)
    text = tok.apply_chat_template(rendered, tokenize=False)
    pieces = token_pieces(tok, text, full_ids)
    # Apply the same truncation window to the pieces.
    n = len(feats["input_ids"])
    pieces = pieces[:n] if truncation == "right" else pieces[len(pieces) - n:]
    trained = [lab != IGNORE_INDEX for lab in feats["labels"]]

    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    )
    shape = conversation_shape(messages).replace("_", "-")
    print(f"conversation {args.index} of {name}: id {loaded.ids[args.index]}, {shape}, "
          f"{len(messages)} messages, masking={args.masking}"
          f"{''.join(f', {k}=false' for k, v in controls.items() if not v)}, "
          f"{'trained tokens in green' if color else 'trained tokens inside ' + OPEN + ' ' + CLOSE}")
    if folded:
        print(f"note: the chat template has no tool role; {folded} tool turn(s) folded into user turns")
    print(render_marked(pieces, trained, color=color))
    if not text.endswith("\n"):
        print()
    n_trained = sum(trained)
    trunc = (f", truncated from {info.full_length} ({truncation} side)" if info.truncated else "")
    print(f"tokens: {n}{trunc}; trained: {n_trained} ({100 * n_trained / max(n, 1):.1f}%); masked: {n - n_trained}")
    print_messages(rendered, lengths, len(full_ids), trained_msgs, weights)
    if args.tokens:
        token_weights = feats.get("weights")
        print("pos      id  label  text" if token_weights is None else "pos      id  label  weight  text")
        for k, (tid, lab, piece) in enumerate(zip(feats["input_ids"], feats["labels"], pieces, strict=True)):
            w = "" if token_weights is None else f"{token_weights[k]:>6g}  "
            print(f"{k:>5} {tid:>6} {lab:>6}  {w}{piece!r}")
    return 0


def print_messages(rendered: list[dict], lengths: list[int], n_full: int, trained: list[bool],
                   weights: list[float]) -> None:
    """One line per message: its token span (before truncation), trained or masked, and its weight when not 1."""
    print("messages (token spans before truncation):")
    start = 0
    for i, (m, end) in enumerate(zip(rendered, lengths, strict=True)):
        s, e = min(start, n_full), min(end, n_full)
        mark = "trained" if trained[i] else "masked"
        weight = f"  weight {weights[i]:g}" if trained[i] and weights[i] != 1.0 else ""
        print(f"  {i:>3} {m['role']:<9} [{s}, {e}) {max(0, e - s):>6} tokens  {mark}{weight}")
        start = end
