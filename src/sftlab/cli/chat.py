"""``sftlab chat MODEL``: talk to a model in the terminal, through its chat template, streamed.

Each line read is one user turn; the reply is streamed token by token and the conversation is
kept, so the next turn sees all earlier ones. ``/reset`` clears the history (the ``--system``
message stays), ``/quit`` or end of input exits. When stdin is not a terminal (a pipe, a file)
there is no prompt decoration: each input line gives its reply on stdout, followed by a newline,
so the command is scriptable. Generation is greedy unless ``--temperature`` is above 0, and stops
at the template's end-of-turn token or the model's eos.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from transformers import PreTrainedModel as Model
    from transformers import PreTrainedTokenizerBase as Tokenizer

HELP = "Chat with a model in the terminal (streamed, multi-turn; /reset, /quit; reads a pipe too)."
COMMANDS_HELP = "commands: /reset (clear the conversation), /quit (exit)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="hub id, checkpoint or `sftlab train` output dir, .gguf file, or smollm2-135m-instruct-gguf")
    p.add_argument("--system", metavar="TEXT", default=None, help="system message at the start of the conversation")
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N", help="reply length cap (default 512)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 = greedy (default); above 0 samples with this temperature")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0 (default 0)")
    p.add_argument("--chat-template", metavar="NAME|FILE", default=None,
                   help="chat template: 'chatml', a .jinja file, or the tokenizer's own (default)")
    p.add_argument("--show-prompt", action="store_true",
                   help="debug: before each reply, write the rendered prompt to stderr as a JSON line")
    p.epilog = ("example (offline): echo 'What is the capital of France?' | "
                "sftlab chat smollm2-135m-instruct-gguf --max-new-tokens 40")


class ChatHistory:
    """The conversation so far: an optional system message, then user/assistant turns."""

    def __init__(self, system: str | None = None):
        self.system = system
        self.turns: list[dict[str, str]] = []

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        """The messages to render: system, the earlier turns, and the new user turn if given."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        out += self.turns
        if user is not None:
            out.append({"role": "user", "content": user})
        return out

    def add(self, user: str, reply: str) -> None:
        self.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]

    def reset(self) -> None:
        self.turns = []


def render_chat_prompt(tokenizer: Tokenizer, messages: list[dict[str, str]]) -> str:
    """The template's text for ``messages`` plus the generation prompt (where the reply starts)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class _Printer:
    """A transformers streamer that writes the new text of each generated token as it arrives.

    The first ``put`` is the prompt (skipped). Text is decoded from all generated ids each time
    and only the new suffix is written, so multi-byte characters split across tokens come out
    whole; stop tokens decode to nothing (``skip_special_tokens``).
    """

    def __init__(self, tokenizer: Tokenizer, out: TextIO):
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        self.text = ""
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids += [int(x) for x in value.reshape(-1).tolist()]
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete character: wait for its next byte
            return
        self.out.write(text[len(self.text):])
        self.out.flush()
        self.text = text

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > len(self.text):
            self.out.write(text[len(self.text):])
        self.text = text
        self.out.flush()


def generate_reply(model: Model, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int, temperature: float,
                   stop_ids: list[int], out: TextIO) -> str:
    """Generate one reply to the rendered ``prompt``, streaming it to ``out``; returns its text."""
    import torch
    from transformers import GenerationConfig

    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {
        "do_sample": False}
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad, **sampling)
    printer = _Printer(tokenizer, out)
    with torch.no_grad():
        model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                       generation_config=cfg, streamer=printer)
    return printer.text


def _lines(stdin: TextIO, interactive: bool, out: TextIO):
    """Input lines: ``input()`` with a prompt (and line editing) on a terminal, plain reads from a pipe."""
    if interactive:
        try:
            import readline  # noqa: F401 - gives input() line editing and history where available
        except ImportError:  # pragma: no cover - Windows
            pass
    while True:
        if interactive:
            try:
                yield input("you> ")
            except EOFError:
                out.write("\n")
                return
            continue
        line = stdin.readline()
        if not line:
            return
        yield line.rstrip("\r\n")


def chat_loop(model: Model, tokenizer: Tokenizer, args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """Read turns from ``stdin`` until ``/quit`` or end of input; stream each reply to ``out``."""
    from sftlab.eval.generate import stop_token_ids

    interactive = stdin.isatty()
    stop_ids = stop_token_ids(tokenizer, model)
    history = ChatHistory(args.system)
    turn = 0
    if interactive:
        err.write(f"sftlab chat: {args.model}; {COMMANDS_HELP}\n")
    for line in _lines(stdin, interactive, out):
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history.reset()
            if interactive:
                err.write("(conversation cleared)\n")
            continue
        if text.startswith("/") and " " not in text:
            err.write(f"unknown command '{text}'; {COMMANDS_HELP}\n")
            continue
        prompt = render_chat_prompt(tokenizer, history.messages(line))
        turn += 1
        if args.show_prompt:
            err.write(json.dumps({"turn": turn, "prompt": prompt}, ensure_ascii=False) + "\n")
            err.flush()
        if interactive:
            out.write("assistant> ")
        reply = generate_reply(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, stop_ids=stop_ids, out=out)
        out.write("\n")
        out.flush()
        history.add(line, reply)
    return 0


def run(args: argparse.Namespace) -> int:
    from sftlab.errors import SftlabError

    if args.max_new_tokens < 1:
        raise SftlabError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise SftlabError(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    os.environ.setdefault("TQDM_DISABLE", "1")  # no loading bars between the replies
    import torch
    import transformers

    from sftlab.models.loading import load_model, load_tokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    tokenizer = load_tokenizer(args.model, chat_template=args.chat_template)
    model = load_model(args.model)
    model.eval()
    torch.manual_seed(args.seed)
    return chat_loop(model, tokenizer, args, sys.stdin, sys.stdout, sys.stderr)
