"""``sftlab chat``: streamed multi-turn chat through the chat template, driven from a pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from sftlab.cli.chat import ChatHistory, chat_loop, render_chat_prompt

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_NEW = 6


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from sftlab.models.loading import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    model.eval()
    return model, tok


def _greedy(model, tok, prompt: str, max_new: int = MAX_NEW) -> str:
    """The reference: ``model.generate`` greedy on the rendered prompt, decoded without special tokens."""
    import torch

    from sftlab.eval.generate import stop_token_ids

    enc = tok(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, eos_token_id=stop_token_ids(tok, model),
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def _chat_cli(*args: str, stdin: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftlab", "chat", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO_ROOT, env=dict(os.environ), timeout=timeout)


def _args(**kw) -> Namespace:
    base = {"model": "tiny", "system": None, "max_new_tokens": MAX_NEW, "temperature": 0.0, "show_prompt": True}
    base.update(kw)
    return Namespace(**base)


def test_history_keeps_turns_and_reset_keeps_the_system_message():
    h = ChatHistory("be brief")
    h.add("q1", "a1")
    assert h.messages("q2") == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"},
                                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    h.reset()
    assert h.messages("q3") == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q3"}]
    assert ChatHistory().messages("q") == [{"role": "user", "content": "q"}]


def test_piped_chat_keeps_history_resets_and_matches_greedy_generate(tiny, tiny_model_dir):
    """Two turns, /reset, a third turn, /quit (a line after /quit is never read): exit 0, one reply
    per turn, the second prompt holds the first turn, the third does not, every reply equals
    greedy ``model.generate`` on the same prompt."""
    model, tok = tiny
    proc = _chat_cli(str(tiny_model_dir), "--max-new-tokens", str(MAX_NEW), "--show-prompt",
                     stdin="hello there\n\nsecond question\n/reset\nthird\n/quit\nnever read\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    prompts = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"turn"')]
    assert [p["turn"] for p in prompts] == [1, 2, 3]  # one reply per non-empty input line, none after /quit
    user = lambda t: {"role": "user", "content": t}  # noqa: E731
    r1 = _greedy(model, tok, render_chat_prompt(tok, [user("hello there")]))
    p2 = render_chat_prompt(tok, [user("hello there"), {"role": "assistant", "content": r1}, user("second question")])
    r2 = _greedy(model, tok, p2)
    p3 = render_chat_prompt(tok, [user("third")])
    r3 = _greedy(model, tok, p3)
    assert prompts[0]["prompt"] == render_chat_prompt(tok, [user("hello there")])
    assert prompts[1]["prompt"] == p2 and "hello there" in p2  # history kept
    assert prompts[2]["prompt"] == p3 and "hello there" not in p3 and "second" not in p3  # cleared by /reset
    assert proc.stdout == f"{r1}\n{r2}\n{r3}\n"


def test_system_message_and_unknown_commands_in_process(tiny):
    model, tok = tiny
    out, err = io.StringIO(), io.StringIO()
    rc = chat_loop(model, tok, _args(system="You are terse."), io.StringIO("/help\nhi\n"), out, err)
    assert rc == 0
    assert "unknown command '/help'" in err.getvalue()
    prompt = json.loads(err.getvalue().splitlines()[-1])["prompt"]
    assert prompt == render_chat_prompt(tok, [{"role": "system", "content": "You are terse."},
                                              {"role": "user", "content": "hi"}])
    assert out.getvalue() == _greedy(model, tok, prompt) + "\n"


def test_sampling_with_a_temperature_runs_and_respects_the_token_cap(tiny):
    import torch

    model, tok = tiny
    torch.manual_seed(0)
    out = io.StringIO()
    assert chat_loop(model, tok, _args(temperature=1.5, max_new_tokens=4, show_prompt=False),
                     io.StringIO("hi\n"), out, io.StringIO()) == 0
    reply = out.getvalue()[:-1]
    assert len(tok(reply, add_special_tokens=False)["input_ids"]) <= 6  # 4 tokens (re-tokenising may merge/split)


@pytest.mark.parametrize("flag, value, fragment", [("--temperature", "-1", "--temperature"),
                                                   ("--max-new-tokens", "0", "--max-new-tokens")])
def test_bad_options_are_one_line_errors(tiny_model_dir, flag, value, fragment):
    proc = _chat_cli(str(tiny_model_dir), flag, value, stdin="hi\n")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_is_a_one_line_error(tmp_path):
    proc = _chat_cli(str(tmp_path / "nope"), stdin="hi\n")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_chat_is_a_command_with_help():
    proc = subprocess.run([sys.executable, "-m", "sftlab", "chat", "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0
    for flag in ("--system", "--max-new-tokens", "--temperature", "--chat-template", "/reset", "smollm2-135m"):
        assert flag in proc.stdout
