"""Fuzz cases for training configs (every key by its type, YAML shapes, command-line overrides) and
for ``sftlab eval``'s inputs and responses files. See :mod:`sftlab.bench.fuzz_cases` for the model.

The oracle for a config value is the value's *kind*, not sftlab's own domain table (which would
make the check circular): NaN, infinity, a number beyond 1e29 or 2^63, a NUL byte, a lone
surrogate and a 150,000-character string must be refused by every key that takes them; a negative
number by every numeric key except ``max_steps`` (``-1`` means "the epochs decide"); everything else
(zero, empty strings, odd paths) may go either way but must go cleanly.
"""

from __future__ import annotations

import json
import os
import random
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftlab.bench.fuzz_cases import Case, Env, Expect, bad_output_dir, good_record, put

#: Keys whose values are paths (tried with files, directories, FIFOs, devices, over-long names).
PATH_KEYS = ("model", "tokenizer", "data", "eval_data", "chat_template", "output_dir", "deepspeed",
             "ifeval_eval_data", "resume_from_checkpoint", "logging_dir")
NEGATIVE_OK = ("max_steps",)
#: Keys left out: each would leave the dry run for the network or a launcher (a documented choice).
SKIPPED_KEYS = ("push_to_hub", "hub_model_id", "hub_token", "local_rank", "hub_strategy", "hub_private_repo",
                "hub_always_push", "hub_revision", "torch_compile", "torch_compile_backend", "torch_compile_mode")

NUMBER_VALUES: list[tuple[str, Any, str]] = [  # (label, value, outcome)
    ("nan", float("nan"), "error"), ("inf", float("inf"), "error"), ("-inf", float("-inf"), "error"),
    ("huge", 1e30, "error"), ("huge_int", 2**63, "error"), ("negative", -1, "negative"),
    ("small_negative", -1e-3, "negative"), ("zero", 0, "either"), ("one", 1, "either"), ("half", 0.5, "either"),
    ("string", "abc", "either"), ("null", None, "either"), ("bool", True, "either"), ("list", [1], "either"),
]
STRING_VALUES: list[tuple[str, Any, str]] = [
    ("empty", "", "either"), ("nul", "a\x00b", "error"), ("surrogate", "x\udc80y", "error"),
    ("huge", "w" * 150_000, "error"), ("spaces", "   ", "either"), ("number", 3, "either"), ("null", None, "either"),
    ("unicode", "日本語🙂", "either"), ("newlines", "a\nb\r\nc", "either"),
]
BOOL_VALUES: list[tuple[str, Any, str]] = [
    ("yes_string", "yes", "either"), ("two", 2, "either"), ("null", None, "either"), ("list", [], "either"),
    ("true", True, "either"), ("false", False, "either"),
]
YAML_SHAPES: dict[str, str] = {
    "deep": "a: " + "[" * 2000 + "]" * 2000 + "\n",
    "deep_block": "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v: 1\n",
    "self_alias": "a: &a [*a]\n",
    "self_alias_map": "a: &x {b: *x}\n",
    "bomb": "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9) if p else ', '.join(['1'] * 9)}]\n"
                    for c, p in zip("abcdefghi", ["", *"abcdefgh"], strict=True)),
    "duplicate": "learning_rate: 1.0e-4\nseed: 1\nlearning_rate: 2.0e-4\n",
    "not_mapping": "- a\n- b\n",
    "scalar": "just text\n",
    "tab_indent": "a:\n\tb: 1\n",
    "binary": "\udcff\udcfe",
    "python_tag": "a: !!python/object/apply:os.system ['echo hi']\n",
    "unknown_key": "learning_rat: 1.0e-4\n",
    "nested_unknown": "lora: {rr: 8}\n",
}


def _config_keys() -> dict[str, Any]:
    """Every train config key -> its annotation (sftlab's keys and the TrainingArguments fields)."""
    from sftlab.train.config import TrainConfig, _dataclass_fields, _training_fields

    keys = {**_training_fields(), **_dataclass_fields(TrainConfig)}
    return {k: t for k, t in sorted(keys.items()) if k not in SKIPPED_KEYS}


def _kind(tp: Any) -> str:
    args = typing.get_args(tp) or (tp,)
    if int in args or float in args:
        return "number"
    if bool in args:
        return "bool"
    return "string"


def _base(d: Path, env: Env) -> dict[str, Any]:
    data = d / "data.jsonl"
    put(data, json.dumps(good_record(random.Random(0), "messages", 0)) + "\n")
    return {"model": env.tokenizer, "data": str(data), "output_dir": str(d / "out"), "chat_template": "chatml",
            "max_steps": 2, "num_proc": 1}


def _path_value(rng: random.Random, d: Path, key: str) -> tuple[str, str, str]:
    """(label, path, outcome) of an odd path for ``key``."""
    if key == "output_dir":
        kind = rng.choice(("file", "under_file", "dev_null", "under_proc", "under_sys", "name_too_long"))
        return kind, bad_output_dir(kind, d), "error"
    kind = rng.choice(("file", "dir", "fifo", "dev_null", "too_long", "name_too_long", "missing"))
    if kind == "file":
        put((d / "some.txt"), "x")
        return kind, str(d / "some.txt"), "either"
    if kind == "dir":
        return kind, str(d), "either"
    if kind == "fifo":
        os.mkfifo(d / "fifo")
        return kind, str(d / "fifo"), "either"
    if kind == "dev_null":
        return kind, "/dev/null", "either"
    if kind == "too_long":
        return kind, "/".join([str(d)] + ["y" * 200] * 25), "either"
    if kind == "name_too_long":
        return kind, str(d / ("n" * 300)), "either"
    return kind, str(d / "missing" / "thing"), "either"


def build_config_key(rng: random.Random, d: Path, env: Env, *, override: bool) -> Case:
    """One key of a train config set to one hostile value, in the YAML file or as ``--key value``."""
    keys = _config_keys()
    key = rng.choice(list(keys))
    kind = "path" if key in PATH_KEYS and rng.random() < 0.6 else _kind(keys[key])
    if kind == "path":
        label, value, want = _path_value(rng, d, key)
    else:
        label, value, want = rng.choice({"number": NUMBER_VALUES, "string": STRING_VALUES, "bool": BOOL_VALUES}[kind])
    if want == "negative":
        want = "either" if key in NEGATIVE_OK else "error"
    cfg = _base(d, env)
    path = d / "config.yaml"
    argv = ["train", str(path)]
    if override:
        argv += [f"--{key}", _override_text(value)]
    else:
        cfg[key] = value
    put(path, _dump(cfg), errors="surrogatepass")
    names = (key,) if want == "error" else ()
    return Case("", "", argv, Expect(want, names=names), command="train", notes={"key": key, "value": label})


def _override_text(value: Any) -> str:
    """``value`` as a user types it after ``--key`` (parsed back as YAML by sftlab)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:
        return ".nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "-.inf" if value < 0 else ".inf"
    return json.dumps(value)


def _dump(cfg: dict[str, Any]) -> str:
    """YAML for a config whose strings may hold NUL bytes or surrogates (written as escapes)."""
    lines = []
    for k, v in cfg.items():
        if isinstance(v, float) and v != v:
            lines.append(f"{k}: .nan")
        elif isinstance(v, float) and v in (float("inf"), float("-inf")):
            lines.append(f"{k}: {'-' if v < 0 else ''}.inf")
        elif isinstance(v, str):
            lines.append(f"{k}: {json.dumps(v)}")  # a JSON string is a YAML double-quoted scalar
        else:
            lines.append(f"{k}: {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def build_config_shape(rng: random.Random, d: Path, env: Env) -> Case:
    """A config file of a hostile shape (deep, aliased, duplicated, not a mapping, a python tag)."""
    shape = rng.choice(list(YAML_SHAPES))
    path = d / "config.yaml"
    body = _dump(_base(d, env)) + YAML_SHAPES[shape] if shape not in ("not_mapping", "scalar") else YAML_SHAPES[shape]
    put(path, body, errors="surrogateescape")
    return Case("", "", ["train", str(path)], Expect("error", names=(path.name,) if shape not in
                                                     ("unknown_key", "nested_unknown") else ()),
                command="train", notes={"shape": shape})


# ------------------------------------------------------------------------------------------ eval

INPUT_MUTATIONS = ("none", "unknown_kwarg", "bad_relation", "missing_field", "surrogate_prompt", "deep", "huge_int",
                   "broken_line", "empty", "fifo", "duplicate_prompt", "kwargs_length", "unknown_id", "wrong_type_kwarg")
RESPONSE_MUTATIONS = ("none", "surrogate_response", "deep", "huge_int", "missing_response", "non_string",
                      "unknown_prompt", "empty", "fifo", "extra_field", "nul_response", "special_tokens")


def _ifeval_sample(rng: random.Random, env: Env, k: int) -> list[dict]:
    assert env.ifeval_inputs, "eval cases need IFEval inputs"
    lines = Path(env.ifeval_inputs).read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in rng.sample(lines, k)]


def _with_relation(recs: list[dict]) -> tuple[int, int] | None:
    for i, r in enumerate(recs):
        for j, kw in enumerate(r["kwargs"]):
            if kw and "relation" in kw:
                return i, j
    return None


def build_eval(rng: random.Random, d: Path, env: Env, *, side: str) -> Case:
    """``sftlab eval --responses R --ifeval-data I``: one mutation in the inputs or the responses."""
    recs = _ifeval_sample(rng, env, rng.randint(2, 5))
    responses = [{"prompt": r["prompt"], "response": " ".join(rng.choice(("yes", "A", "b,", "*x*")) for _ in range(9))}
                 for r in recs]
    inputs_p, resp_p = d / "inputs.jsonl", d / "answers.jsonl"  # (any name: a file the user gives)
    mutation = rng.choice(INPUT_MUTATIONS if side == "inputs" else RESPONSE_MUTATIONS)
    target = inputs_p if side == "inputs" else resp_p
    lines = [json.dumps(r) for r in recs] if side == "inputs" else [json.dumps(r) for r in responses]
    want = _mutate_eval(rng, mutation, side, recs, responses, lines)
    other = [json.dumps(r) for r in responses] if side == "inputs" else [json.dumps(r) for r in recs]
    put((resp_p if side == "inputs" else inputs_p), "\n".join(other) + "\n")
    if mutation == "fifo":
        os.mkfifo(target)
    elif mutation == "empty":
        put(target, "")
    else:
        put(target, "\n".join(lines) + "\n")
    out = str(d / "out")
    names = (inputs_p.name, resp_p.name) if mutation == "surrogate_prompt" else (target.name,)
    if mutation == "none" and rng.random() < 0.3:  # an output directory that cannot be one
        out = bad_output_dir(rng.choice(("file", "under_file", "dev_null", "under_proc")), d)
        want, names = "error", ("output directory",)
    argv = ["eval", "--responses", str(resp_p), "--ifeval-data", str(inputs_p), "--output-dir", out]
    exp = Expect("ok", kept=len(recs)) if want == "ok" else Expect(want, names=names)
    return Case("", "", argv, exp, records=len(recs), command="eval", notes={"mutation": mutation})


def _mutate_eval(rng: random.Random, mutation: str, side: str, recs: list[dict], responses: list[dict],
                 lines: list[str]) -> str:
    """Apply ``mutation`` to ``lines`` (the JSONL lines of the side under test); the expected outcome."""
    i = rng.randrange(len(lines))
    rec = recs[i] if side == "inputs" else responses[i]
    if mutation == "none":
        return "ok"
    if mutation in ("empty", "fifo", "broken_line"):
        if mutation == "broken_line":
            lines[i] = lines[i][: len(lines[i]) // 2]
        return "error"
    if mutation == "deep":
        lines[i] = lines[i][:-1] + ', "x": ' + "[" * 3000 + "]" * 3000 + "}"
        return "error"
    if mutation == "huge_int":
        lines[i] = lines[i][:-1] + ', "x": ' + "7" * 5000 + "}"
        return "error"
    return _mutate_eval_record(mutation, side, rec, recs, lines, i)


def _mutate_eval_record(mutation: str, side: str, rec: dict, recs: list[dict], lines: list[str], i: int) -> str:
    if side == "inputs":
        if mutation == "unknown_kwarg":
            rec["kwargs"][0] = {**(rec["kwargs"][0] or {}), "bogus_argument": 3}
        elif mutation == "bad_relation":
            where = _with_relation(recs)
            if where is None:
                return "ok"
            i, j = where
            recs[i]["kwargs"][j]["relation"] = "more than"
            rec = recs[i]
        elif mutation == "wrong_type_kwarg":
            rec["kwargs"][0] = {**(rec["kwargs"][0] or {}), "num_words": "many"}
            if "num_words" not in json.dumps(rec):
                return "ok"
            lines[i] = json.dumps(rec)
            return "either"
        elif mutation == "missing_field":
            rec.pop("kwargs")
        elif mutation == "surrogate_prompt":
            lines[i] = json.dumps(rec).replace('"prompt": "', '"prompt": "\\ud800', 1)
            return "either"  # the responses no longer match the prompt
        elif mutation == "duplicate_prompt":
            lines.append(lines[i])
            return "error"
        elif mutation == "kwargs_length":
            rec["kwargs"].append({})
        elif mutation == "unknown_id":
            rec["instruction_id_list"][0] = "nosuch:instruction"
        lines[i] = json.dumps(rec)
        return "error"
    effect = "ok"
    if mutation == "surrogate_response":
        lines[i] = json.dumps(rec).replace('"response": "', '"response": "\\udcff', 1)
        return "ok"
    if mutation == "missing_response":
        rec.pop("response")
        effect = "error"
    elif mutation == "non_string":
        rec["response"] = 42
        effect = "error"
    elif mutation == "unknown_prompt":
        rec["prompt"] = "a prompt nobody asked"
        effect = "error"
    elif mutation == "extra_field":
        rec["meta"] = {"a": [1, 2]}
    elif mutation == "nul_response":
        rec["response"] += "\x00"
    elif mutation == "special_tokens":
        rec["response"] += "<|im_end|>\n<|im_start|>user"
    lines[i] = json.dumps(rec)
    return effect


CONFIG_BUILDERS: dict[str, Callable[[random.Random, Path, Env], Case]] = {
    "config.yaml_key": lambda r, d, e: build_config_key(r, d, e, override=False),
    "config.override": lambda r, d, e: build_config_key(r, d, e, override=True),
    "config.yaml_shape": build_config_shape,
}
EVAL_BUILDERS: dict[str, Callable[[random.Random, Path, Env], Case]] = {
    "eval.inputs": lambda r, d, e: build_eval(r, d, e, side="inputs"),
    "eval.responses": lambda r, d, e: build_eval(r, d, e, side="responses"),
}
