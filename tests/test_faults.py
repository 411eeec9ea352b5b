"""Faults (issue 26): a full disk and SIGTERM during preprocessing, training and evaluation.

Each runs ``sftlab.cli.main`` in this process. A full disk is a small tmpfs mounted as (or under) the
output directory (the tests run as root; they skip, saying why, where mounting is not permitted).
SIGTERM is sent to this process by a watcher thread once the run has reached the point of interest;
sftlab's handler turns it into the same cleanup as Ctrl-C, then exit 143. Each case then checks that
nothing partial was left that a later run would trust, and that a rerun (with space again) finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from sftlab.cli import main

SMOKE = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")


def rec(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"},
                                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}. " * 3}]}) + "\n"


@pytest.fixture
def data_file(tmp_path) -> Path:
    p = tmp_path / "convs.jsonl"
    p.write_text("".join(rec(i) for i in range(40)), encoding="utf-8")
    return p


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """``mount(size)``: a fresh tmpfs of that size under tmp_path; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here to simulate a full disk: {proc.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all of ``disk``'s free space but ``leave`` bytes."""
    import shutil

    f = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(f, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return f


def cli(argv: list, capsys) -> tuple[int, str, str]:
    import logging
    import sys

    # Library loggers set up in an earlier test still hold that test's (closed) captured stderr.
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values()
                                      if isinstance(x, logging.Logger))]
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler:
                h.stream = sys.stderr  # (setStream would flush the closed one)
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, _without_logging_errors(err)


def _without_logging_errors(err: str) -> str:
    """stderr less the "--- Logging error ---" blocks a library logger prints when the captured stream it
    kept from an earlier in-process test is closed (an artefact of running the CLI inside pytest)."""
    out, skipping = [], False
    for ln in err.splitlines():
        if ln.startswith("--- Logging error ---"):
            skipping = True
        elif skipping and ln.startswith("Arguments:"):
            skipping = False
        elif not skipping:
            out.append(ln)
    return "\n".join(out)


def error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if f"sftlab {command}: error: " in ln]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def sigterm_when(condition: Callable[[], bool], timeout: float = 240) -> threading.Thread:
    """A watcher that sends SIGTERM to this process once ``condition()`` holds."""
    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def preprocess_argv(data: Path, tokenizer_dir: Path, out: Path) -> list:
    return ["preprocess", "--data", data, "--tokenizer", tokenizer_dir, "--chat-template", "chatml", "--num-proc", "1",
            "--no-progress", "--output-dir", out]


# ------------------------------------------------------------------------------------------------
# Disk full
# ------------------------------------------------------------------------------------------------


def test_disk_full_during_preprocessing_is_one_line_leaves_nothing_and_a_rerun_builds(
        tmpfs, tmp_path, tokenizer_dir, capsys):
    data = tmp_path / "big.jsonl"
    data.write_text("".join(rec(i) for i in range(400)), encoding="utf-8")
    disk = tmpfs("4m")
    filler = fill(disk, leave=96 * 1024)
    out = disk / "out"
    rc, _, err = cli(preprocess_argv(data, tokenizer_dir, out), capsys)
    assert rc == 2
    line = error_line(err, "preprocess")
    assert "no space left on device writing the preprocess cache" in line and str(out / "cache") in line
    assert "free" in line and "needs more than" in line
    assert not (out / "stats.json").exists()
    assert [p.name for p in (out / "cache").iterdir()] == []  # no cache, no .build-* directory
    filler.unlink()
    rc, stdout, err = cli(preprocess_argv(data, tokenizer_dir, out), capsys)
    assert rc == 0, err
    assert "cache: built" in stdout
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["kept"] == 400


@pytest.mark.integration
def test_disk_full_during_a_checkpoint_write_then_resume_with_space(tmpfs, tiny_model_dir, data_file, capsys):
    disk = tmpfs("64m")  # one checkpoint of the tiny model (~42 MB) fits, the second does not
    out = disk / "train"
    argv = ["train", SMOKE, "--model", tiny_model_dir, "--data", data_file, "--output_dir", out, "--save_steps", "2",
            "--max_steps", "6", "--eval_fraction", "0", "--save_total_limit", "3"]
    rc, _, err = cli(argv, capsys)
    assert rc == 2
    line = error_line(err, "train")
    assert f"no space left on device writing checkpoint {out / 'checkpoint-4'}: needs about" in line, line
    assert "MB free" in line
    assert (out / "checkpoint-2" / "sftlab_state.json").is_file()
    assert not (out / "checkpoint-4" / "sftlab_state.json").exists()  # never trusted: no completion marker
    assert not (out / "train_summary.json").exists()
    subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
    rc, stdout, err = cli(argv, capsys)
    assert rc == 0, err[-3000:]
    assert "Resuming from" in stdout + err
    assert (out / "train_summary.json").is_file()
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 6
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]  # every step logged once: nothing lost, nothing twice


@pytest.fixture(scope="module")
def chatty_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    from helpers import save_tiny_llama

    from sftlab.models.loading import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir), chat_template="chatml")
    return save_tiny_llama(tok, tmp_path_factory.mktemp("chatty"), initializer_range=0.1)


def eval_argv(model: Path, ifeval_dir: Path, out: Path, n: int = 10) -> list:
    return ["eval", "--model", model, "--ifeval-data", ifeval_dir / "input_data.jsonl", "--limit", str(n),
            "--max-new-tokens", "96", "--batch-size", "1", "--dtype", "float32", "--no-progress", "--output-dir", out]


def _complete_lines(p: Path) -> int:
    data = p.read_bytes() if p.exists() else b""
    assert not data or data.endswith(b"\n"), "a torn last line was left behind"
    return data.count(b"\n")


@pytest.mark.integration
def test_disk_full_writing_responses_keeps_whole_lines_and_a_rerun_resumes(
        tmpfs, chatty_model_dir, ifeval_dir, capsys):
    disk = tmpfs("1m")
    out = disk / "eval"
    responses = out / "responses.jsonl"
    state: dict = {}

    def fill_after_first_response() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            if responses.exists() and responses.stat().st_size > 0:
                state["filler"] = fill(disk, leave=0)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=fill_after_first_response, daemon=True)
    watcher.start()
    rc, _, err = cli(eval_argv(chatty_model_dir, ifeval_dir, out), capsys)
    watcher.join(5)
    assert rc == 2, err[-2000:]
    line = error_line(err, "eval")
    assert f"no space left on device writing {responses}: needs" in line and "bytes" in line
    n_done = _complete_lines(responses)
    assert 1 <= n_done < 10
    assert not (out / "summary.json").exists()
    state["filler"].unlink()
    rc, stdout, err = cli(eval_argv(chatty_model_dir, ifeval_dir, out), capsys)
    assert rc == 0, err[-2000:]
    assert f"({n_done} reused from an earlier run)" in stdout
    assert _complete_lines(responses) == 10


# ------------------------------------------------------------------------------------------------
# SIGTERM behaves as SIGINT: a clean stop, exit 143, what is done kept, a rerun continues
# ------------------------------------------------------------------------------------------------


def test_sigterm_during_preprocessing_removes_the_build_and_a_rerun_builds(tmp_path, tokenizer_dir, capsys):
    data = tmp_path / "big.jsonl"
    data.write_text("".join(rec(i) for i in range(1500)), encoding="utf-8")
    out = tmp_path / "out"
    cache = out / "cache"
    sigterm_when(lambda: cache.is_dir() and any(p.name.startswith(".build-") for p in cache.iterdir()))
    rc, _, err = cli(preprocess_argv(data, tokenizer_dir, out), capsys)
    assert rc == 143, err[-2000:]
    assert "sftlab preprocess: terminated (SIGTERM)" in err and "Traceback" not in err
    assert list(cache.iterdir()) == []  # the partial build is gone, nothing installed
    assert not (out / "stats.json").exists()
    rc, stdout, err = cli(preprocess_argv(data, tokenizer_dir, out), capsys)
    assert rc == 0 and "cache: built" in stdout, err


@pytest.mark.integration
def test_sigterm_during_training_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path, tiny_model_dir, data_file,
                                                                         capsys):
    out = tmp_path / "train"
    argv = ["train", SMOKE, "--model", tiny_model_dir, "--data", data_file, "--output_dir", out, "--save_steps", "2",
            "--max_steps", "8", "--eval_fraction", "0"]
    marker = out / "checkpoint-2" / "sftlab_state.json"
    sigterm_when(marker.is_file)
    rc, _, err = cli(argv, capsys)
    assert rc == 143, err[-3000:]
    assert "sftlab train: terminated (SIGTERM); rerun the same command to continue" in err
    assert marker.is_file() and not (out / "train_summary.json").exists()
    rc, stdout, err = cli(argv, capsys)
    assert rc == 0, err[-3000:]
    assert "Resuming from" in stdout + err
    assert json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))["global_step"] == 8


@pytest.mark.integration
def test_sigterm_during_evaluation_keeps_responses_and_a_rerun_continues(tmp_path, chatty_model_dir, ifeval_dir,
                                                                         capsys):
    out = tmp_path / "eval"
    responses = out / "responses.jsonl"
    sigterm_when(lambda: responses.exists() and responses.read_bytes().count(b"\n") >= 2)
    rc, _, err = cli(eval_argv(chatty_model_dir, ifeval_dir, out, n=8), capsys)
    assert rc == 143, err[-2000:]
    assert "sftlab eval: terminated (SIGTERM)" in err
    n_done = _complete_lines(responses)
    assert 2 <= n_done < 8 and not (out / "summary.json").exists()
    rc, stdout, err = cli(eval_argv(chatty_model_dir, ifeval_dir, out, n=8), capsys)
    assert rc == 0, err[-2000:]
    assert f"generated {8 - n_done} responses ({n_done} reused from an earlier run)" in stdout


def test_sigterm_in_a_subprocess_exits_143_with_one_line(tmp_path, tokenizer_dir):
    """As a user sees it (a real process, the default Python handler replaced by sftlab's)."""
    import sys

    data = tmp_path / "big.jsonl"
    data.write_text("".join(rec(i) for i in range(5000)), encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "sftlab", *map(str, preprocess_argv(data, tokenizer_dir, out))],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    cache = out / "cache"
    while time.time() < deadline and proc.poll() is None:
        if cache.is_dir() and any(p.name.startswith(".build-") for p in cache.iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "sftlab preprocess: terminated (SIGTERM); rerun the same command to continue"
    assert list(cache.iterdir()) == []
