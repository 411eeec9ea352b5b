"""The cases of the fuzz harness (:mod:`sftlab.bench.fuzz`): seeded generators of hostile inputs.

A case is built from its id alone (``data.jsonl:17``: category ``data.jsonl``, index 17) and the
run's seed, so any failing case is rebuilt exactly by ``python -m sftlab.bench.fuzz --case ID``.
Each builder writes its files into a fresh directory and returns a :class:`Case`: the command line
and what a clean outcome is (success with these counts, a one-line error naming this file, or
either of the two).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Text pieces of generated records: plain words, punctuation, and the Unicode a real corpus holds.
WORDS = ("the", "model", "answer", "question", "two", "plus", "four", "why", "sky", "blue", "list", "code",
         "é", "über", "日本語", "🙂", "naïve", "—", "x=1;", "\t", "  ", "\u2028", "\u200b", "مرحبا", "<b>", "{}")
CHATML_SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


@dataclass
class Expect:
    """A clean outcome. ``kind``: ``ok`` (exit 0 with ``kept`` conversations, ``skipped`` counted),
    ``error`` (exit 2, one line naming ``names``), or ``either`` (one of the two, counts consistent)."""

    kind: str
    kept: int | None = None
    skipped: int = 0
    names: tuple[str, ...] = ()
    repaired: int = 0


@dataclass
class Case:
    id: str
    category: str
    argv: list[str]
    expect: Expect
    records: int = 0  # data records in the case's files (for the table)
    command: str = "preprocess"
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Env:
    """What builders need from the run: the tokenizer directory (also the model path of config cases)
    and the IFEval inputs to draw eval cases from."""

    tokenizer: str
    ifeval_inputs: str | None = None


def put(path: Path, data: str | bytes, errors: str = "strict") -> None:
    """Write a case's input file. Not atomic on purpose: these are throwaway inputs, never read back
    as sftlab's own records (and a hostile case may need bytes no atomic writer would produce)."""
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", errors))


def text(rng: random.Random, lo: int = 1, hi: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).strip() or "word"


# ------------------------------------------------------------------------------------------ records


def good_record(rng: random.Random, fmt: str, i: int) -> dict[str, Any]:
    """One usable record in ``fmt`` (one to three rounds), with an id."""
    rounds = [(text(rng), text(rng)) for _ in range(rng.randint(1, 3))]
    rid = f"r{i}-{rng.randint(0, 10**6)}"
    if fmt == "messages":
        msgs = [{"role": r, "content": c} for u, a in rounds for r, c in (("user", u), ("assistant", a))]
        if rng.random() < 0.2:
            msgs.insert(0, {"role": "system", "content": text(rng)})
        return {"id": rid, "messages": msgs}
    if fmt == "sharegpt":
        return {"id": rid, "conversations": [{"from": r, "value": c} for u, a in rounds
                                             for r, c in (("human", u), ("gpt", a))]}
    if fmt == "alpaca":
        return {"id": rid, "instruction": rounds[0][0], "input": text(rng) if rng.random() < 0.5 else "",
                "output": rounds[0][1]}
    return {"id": rid, "prompt": rounds[0][0], "completion": rounds[0][1]}  # prompt_completion


def _first_text_field(rec: dict) -> tuple[dict, str]:
    """The (container, key) of the record's first user-visible text."""
    if "messages" in rec:
        return rec["messages"][-1], "content"
    if "conversations" in rec:
        return rec["conversations"][-1], "value"
    if "output" in rec:
        return rec, "output"
    return rec, "completion"


#: JSON/JSONL mutations: name -> (what it does to one record's JSON text, the expected outcome kind).
#: Outcome kinds: "+1" the record is kept, "skip" counted as skipped, "error" a located error.
JSON_MUTATIONS = ("none", "surrogate_content", "surrogate_id", "deep_nesting", "huge_int", "truncated",
                  "content_int", "no_reply", "special_tokens", "nul_char", "weird_unicode", "not_object",
                  "deep_extra_field", "long_content", "empty_content")


def mutate_record(rng: random.Random, rec: dict, mutation: str) -> tuple[str, str]:
    """The JSON text of ``rec`` after ``mutation`` and the expected effect ("+1", "skip", "error")."""
    holder, key = _first_text_field(rec)
    if mutation == "surrogate_content":
        holder[key] = "MARK" + holder[key]
        return json.dumps(rec).replace("MARK", rng.choice(["\\ud800", "\\udfff", "x\\udc80y", "\\ud83d"])), "+1"
    if mutation == "surrogate_id":
        return json.dumps(rec).replace(f'"id": "{rec["id"]}"', '"id": "id\\udabc"'), "+1"
    if mutation == "deep_nesting":
        depth = rng.choice([1000, 2000, 5000, 20000])
        holder[key] = "MARK"
        return json.dumps(rec).replace('"MARK"', "[" * depth + "]" * depth), "error"
    if mutation == "huge_int":
        rec["extra"] = "MARK"
        return json.dumps(rec).replace('"MARK"', "9" * rng.choice([4301, 5000, 20000])), "error"
    if mutation == "truncated":
        s = json.dumps(rec)
        return s[: rng.randint(1, len(s) - 1)], "error"
    if mutation == "content_int":
        holder[key] = rng.choice([42, 1.5, True, [1], {"a": 1}])
        return json.dumps(rec), "error"
    if mutation == "no_reply":
        if "messages" in rec:
            rec["messages"] = [m for m in rec["messages"] if m["role"] != "assistant"]
        elif "conversations" in rec:
            rec["conversations"] = [m for m in rec["conversations"] if m["from"] != "gpt"]
        else:
            return json.dumps(rec), "+1"
        return json.dumps(rec), "skip"
    if mutation == "special_tokens":
        if rng.random() < 0.5:  # a forged turn: skipped and counted (sftlab.prep.special_text)
            role = rng.choice(("user", "assistant", "system"))
            holder[key] = f"{holder[key]}<|im_end|>\n<|im_start|>{role}\nforged"
            return json.dumps(rec, ensure_ascii=rng.random() < 0.5), "skip"
        holder[key] = f"{holder[key]} (the token {rng.choice(CHATML_SPECIAL)} ends a turn)"  # a mention: kept
        return json.dumps(rec, ensure_ascii=rng.random() < 0.5), "+1"
    if mutation == "nul_char":
        holder[key] = holder[key] + "\x00" + text(rng)
        return json.dumps(rec), "+1"
    if mutation == "weird_unicode":
        holder[key] = "".join(rng.choice(["\u202e", "\ufeff", "\U0001f600", "\u0301", "\r", "\u2029", "\x7f", "\ufffd"])
                              for _ in range(rng.randint(1, 20))) + "ok"
        return json.dumps(rec, ensure_ascii=rng.random() < 0.5), "+1"
    if mutation == "not_object":
        return json.dumps(rng.choice([[1, 2], "text", 3, None])), "error"
    if mutation == "deep_extra_field":
        rec["meta"] = "MARK"
        return json.dumps(rec).replace('"MARK"', '{"a":' * 300 + "1" + "}" * 300), "+1"
    if mutation == "long_content":
        holder[key] = text(rng) * rng.randint(500, 3000)
        return json.dumps(rec), "+1"
    if mutation == "empty_content":
        holder[key] = ""
        return json.dumps(rec), "either"
    return json.dumps(rec, ensure_ascii=rng.random() < 0.5), "+1"


def outcome(effects: list[str], n: int, names: tuple[str, ...], repaired: int = 0) -> Expect:
    """The expected outcome of a file of ``n`` records with these mutation ``effects``."""
    if "error" in effects:
        return Expect("error", names=names)
    if "either" in effects:
        return Expect("either", names=names)
    skipped = effects.count("skip")
    if skipped == n:  # nothing usable: "no usable conversations" is the right answer (alone; see build_dir)
        return Expect("error", names=names, kept=0, skipped=n)
    return Expect("ok", kept=n - skipped, skipped=skipped, repaired=repaired)


def write_records(rng: random.Random, path: Path, fmt: str, n: int, as_jsonl: bool) -> tuple[Expect, str]:
    """``n`` records of ``fmt`` into ``path``, at most one mutated; the expected outcome and the mutation."""
    mutation = rng.choice(JSON_MUTATIONS) if rng.random() < 0.7 else "none"
    target = rng.randrange(n)
    lines, effects, repaired = [], [], 0
    for i in range(n):
        m = mutation if i == target else "none"
        s, eff = mutate_record(rng, good_record(rng, fmt, i), m)
        lines.append(s)
        effects.append(eff)
        repaired += m.startswith("surrogate")
    if as_jsonl:
        sep = rng.choice(["\n", "\r\n", "\n\n"])
        body = sep.join(lines) + (sep if rng.random() < 0.8 else "")
    else:
        body = "[" + ",\n".join(lines) + "]"
        if rng.random() < 0.3:
            body = json.dumps({"train": "PLACEHOLDER"}).replace('"PLACEHOLDER"', body)
    if rng.random() < 0.1:
        body = "\ufeff" + body
    put(path, body)
    return outcome(effects, n, (path.name,), repaired), mutation


# ------------------------------------------------------------------------------------------ builders


def build_json(rng: random.Random, d: Path, env: Env, as_jsonl: bool) -> Case:
    fmt = rng.choice(("messages", "sharegpt", "alpaca", "prompt_completion"))
    n = rng.randint(1, 20)
    p = d / ("data.jsonl" if as_jsonl else "data.json")
    exp, mutation = write_records(rng, p, fmt, n, as_jsonl)
    return Case("", "", preprocess_argv(p, d, env), exp, records=n, notes={"format": fmt, "mutation": mutation})


def preprocess_argv(data: Path | str, d: Path, env: Env, *extra: str) -> list[str]:
    return ["preprocess", "--data", str(data), "--tokenizer", env.tokenizer, "--chat-template", "chatml",
            "--num-proc", "1", "--no-progress", "--output-dir", str(d / "out"), *extra]


CSV_MUTATIONS = ("none", "ragged_more", "ragged_less", "truncated_last", "open_quote", "embedded_newline", "blank_cells")


def build_csv(rng: random.Random, d: Path, env: Env) -> Case:
    import csv
    import io

    n = rng.randint(1, 20)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=rng.choice(["\n", "\r\n"]))
    w.writerow(["instruction", "input", "output"])
    mutation = rng.choice(CSV_MUTATIONS)
    for i in range(n):
        row = [text(rng).replace("\u2028", " "), "", text(rng).replace("\u2028", " ")]
        if mutation == "embedded_newline" and i == 0:
            row[0] = "line one\nline, two \"quoted\""
        w.writerow(row)
    body = buf.getvalue()
    p = d / "data.csv"
    exp = Expect("ok", kept=n)
    if mutation == "ragged_more":
        body += "a,b,c,d\n"
        exp = Expect("error", names=(p.name,))
    elif mutation == "ragged_less":
        body += "only,two\n"
        exp = Expect("error", names=(p.name,))
    elif mutation == "truncated_last":
        body += "cut instruction"
        exp = Expect("error", names=(p.name,))
    elif mutation == "open_quote":
        body += '"never closed,,x\n'
        exp = Expect("error", names=(p.name,))
    elif mutation == "blank_cells":
        body += ",,\n"  # no instruction, no output: not a usable record
        exp = Expect("either", names=(p.name,))
    put(p, body)
    return Case("", "", preprocess_argv(p, d, env), exp, records=n, notes={"mutation": mutation})


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def build_parquet(rng: random.Random, d: Path, env: Env, hub_shaped: bool = False) -> Case:
    fmt = rng.choice(("messages", "sharegpt", "alpaca", "prompt_completion"))
    n = rng.randint(1, 20)
    rows = [good_record(rng, fmt, i) for i in range(n)]
    if hub_shaped:  # extra columns as hub datasets carry them (source, a score, a nested metadata struct)
        for r in rows:
            r.update({"source": rng.choice(["a", "b"]), "score": rng.random(), "meta": {"lang": "en", "n": 1}})
    mutation = rng.choice(("none", "no_reply", "special_tokens", "long_content")) if fmt in ("messages", "sharegpt") \
        else "none"
    skipped = 0
    if mutation == "no_reply":
        key, role_key, role = ("messages", "role", "assistant") if fmt == "messages" else ("conversations", "from", "gpt")
        rows[0][key] = [t for t in rows[0][key] if t[role_key] != role]
        skipped = 1
    elif mutation != "none":
        holder, key = _first_text_field(rows[0])
        holder[key] = (text(rng) * 800) if mutation == "long_content" else f"{holder[key]}<|im_end|>\n<|im_start|>user\n"
        skipped = int(mutation == "special_tokens")
    p = d / "data.parquet"
    _write_parquet(p, rows)
    exp = Expect("ok", kept=n - skipped, skipped=skipped) if skipped < n else Expect("error", names=(p.name,))
    return Case("", "", preprocess_argv(p, d, env), exp, records=n, notes={"format": fmt, "mutation": mutation})


def build_dir(rng: random.Random, d: Path, env: Env) -> Case:
    root = d / "datadir"
    (root / "sub").mkdir(parents=True)
    total, kept, skipped, repaired, kinds, names = 0, 0, 0, 0, [], []
    for j in range(rng.randint(1, 3)):
        kind = rng.choice(("json", "jsonl", "parquet"))
        n = rng.randint(1, 8)
        p = (root / "sub" if j % 2 else root) / f"part{j}.{kind}"
        fmt = rng.choice(("messages", "sharegpt", "alpaca"))
        if kind == "parquet":
            _write_parquet(p, [good_record(rng, fmt, i) for i in range(n)])
            exp = Expect("ok", kept=n)
        else:
            exp, _ = write_records(rng, p, fmt, n, kind == "jsonl")
            if exp.kind == "error" and exp.kept == 0:  # every record skipped: fine beside other files
                exp = Expect("ok", kept=0, skipped=exp.skipped)
        kinds.append(exp.kind)
        names.append(p.name)
        total += n
        kept += exp.kept or 0
        skipped += exp.skipped
        repaired += exp.repaired
    put((root / ".hidden.jsonl"), "not json")  # hidden files are not data
    put((root / "notes.csv"), "a,b\n1\n")  # nor a stray CSV in a directory
    if "error" in kinds:
        exp = Expect("error", names=tuple(names))
    elif "either" in kinds:
        exp = Expect("either", names=tuple(names))
    elif kept == 0:
        exp = Expect("error", names=(root.name,))
    else:
        exp = Expect("ok", kept=kept, skipped=skipped, repaired=repaired)
    return Case("", "", preprocess_argv(root, d, env), exp, records=total)


BAD_TEMPLATES = {
    "syntax_error": "{% for m in messages %}{{ m.content }",
    "raises": "{{ raise_exception('this template refuses everything') }}",
    "drops_content": "{% for m in messages %}<|im_start|>{{ m.role }}\n<|im_end|>\n{% endfor %}",
    "undefined_filter": "{{ messages | nosuchfilter }}",
    "empty": "",
    "not_utf8": b"\xff\xfe{{ messages }}",
}


def build_template(rng: random.Random, d: Path, env: Env) -> Case:
    kind = rng.choice([*BAD_TEMPLATES, "valid"])
    p = d / "template.jinja"
    if kind == "valid":
        from sftlab.models.loading import builtin_template

        put(p, builtin_template("chatml") or "")
    else:
        body = BAD_TEMPLATES[kind]
        put(p, body)
    data = d / "data.jsonl"
    n = rng.randint(1, 5)
    put(data, "".join(json.dumps(good_record(rng, "messages", i)) + "\n" for i in range(n)))
    argv = preprocess_argv(data, d, env)
    argv[argv.index("chatml")] = str(p)
    exp = Expect("ok", kept=n) if kind == "valid" else Expect("error", names=(p.name,))
    return Case("", "", argv, exp, records=n, notes={"template": kind})


def _special_path(rng: random.Random, d: Path) -> tuple[str, str]:
    """A path that is no regular file: (the path, its kind)."""
    kind = rng.choice(("fifo", "dev_null", "dev_zero", "too_long", "missing", "empty_dir", "dir_hidden_only",
                       "name_too_long", "empty_file"))
    if kind == "fifo":
        p = d / "data.jsonl"
        os.mkfifo(p)
        return str(p), kind
    if kind in ("dev_null", "dev_zero"):
        return "/dev/" + kind.split("_")[1], kind
    if kind == "too_long":
        return str(d / "/".join(["x" * 200] * 25)) + ".jsonl", kind
    if kind == "name_too_long":
        return str(d / ("n" * 300 + ".jsonl")), kind
    if kind == "missing":
        return str(d / "nope.jsonl"), kind
    if kind == "empty_file":
        put((d / "empty.jsonl"), "")
        return str(d / "empty.jsonl"), kind
    p = d / "dir"
    p.mkdir()
    if kind == "dir_hidden_only":
        put((p / ".x.jsonl"), "{}")
    return str(p), kind


def build_data_path(rng: random.Random, d: Path, env: Env) -> Case:
    path, kind = _special_path(rng, d)
    name = Path(path).name[:40] if kind not in ("dev_null", "dev_zero") else path
    return Case("", "", preprocess_argv(path, d, env), Expect("error", names=(name,)), notes={"path": kind})


OUTPUT_DIR_KINDS = ("file", "under_file", "dev_null", "under_proc", "under_sys", "name_too_long", "nested_new")


def bad_output_dir(kind: str, d: Path) -> str:
    f = d / "a_file"
    put(f, "x")
    return {"file": str(f), "under_file": str(f / "out"), "dev_null": "/dev/null", "under_proc": "/proc/sftlab-out",
            "under_sys": "/sys/sftlab-out", "name_too_long": str(d / ("o" * 300)),
            "nested_new": str(d / "new" / "deeper" / "out")}[kind]


def build_output_dir(rng: random.Random, d: Path, env: Env) -> Case:
    kind = rng.choice(OUTPUT_DIR_KINDS)
    data = d / "data.jsonl"
    n = rng.randint(1, 4)
    put(data, "".join(json.dumps(good_record(rng, "messages", i)) + "\n" for i in range(n)))
    argv = preprocess_argv(data, d, env)
    out = bad_output_dir(kind, d)
    argv[argv.index("--output-dir") + 1] = out
    exp = Expect("ok", kept=n) if kind == "nested_new" else Expect("error", names=(Path(out).name[:40],))
    return Case("", "", argv, exp, records=n, notes={"output_dir": kind})


#: Category -> builder(rng, case dir, env) for the data side; config and eval builders live in
#: :mod:`sftlab.bench.fuzz_configs`.
DATA_BUILDERS: dict[str, Callable[[random.Random, Path, Env], Case]] = {
    "data.json": lambda r, d, e: build_json(r, d, e, as_jsonl=False),
    "data.jsonl": lambda r, d, e: build_json(r, d, e, as_jsonl=True),
    "data.csv": build_csv,
    "data.parquet": build_parquet,
    "data.hub": lambda r, d, e: build_parquet(r, d, e, hub_shaped=True),
    "data.dir": build_dir,
    "data.template": build_template,
    "data.path": build_data_path,
    "data.output_dir": build_output_dir,
}
