"""The cached preprocessing pipeline and the `sftlab preprocess` command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sftlab.cli import main
from sftlab.data import load_conversations
from sftlab.prep import pipeline as pp
from sftlab.prep.masking import IGNORE_INDEX, encode_conversation
from sftlab.prep.pipeline import PreprocessConfig, preprocess

FIXTURES = Path(__file__).parent / "fixtures"


def _cfg(tokenizer_dir, data, **kw) -> PreprocessConfig:
    kw.setdefault("num_proc", 1)
    return PreprocessConfig(data=str(data), tokenizer=str(tokenizer_dir), chat_template="chatml", **kw)


@pytest.fixture
def data_file(tmp_path) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_bytes((FIXTURES / "smoltalk_like.jsonl").read_bytes())
    return p


def test_features_stats_and_stats_file(tokenizer, tokenizer_dir, data_file, tmp_path):
    cfg = _cfg(tokenizer_dir, data_file, max_length=40)
    res = preprocess(cfg, tmp_path / "out", tokenizer=tokenizer, progress=False)
    ds = res.dataset
    loaded = load_conversations(str(data_file))
    assert ds.column_names == ["id", "input_ids", "labels", "attention_mask"]
    refs = [encode_conversation(c, tokenizer, max_length=40, method="prefix") for c in loaded.conversations]
    # A conversation whose trained tokens all fall beyond max_length is skipped (and counted).
    useful = [(i, r) for i, r in zip(loaded.ids, refs, strict=True) if any(x != IGNORE_INDEX for x in r["labels"])]
    assert 0 < len(useful) < len(refs)
    assert ds["id"] == [i for i, _ in useful]
    for row, (_, ref) in zip(ds, useful, strict=True):  # the cached features are the reference's
        assert {k: row[k] for k in ref} == ref
    st = res.stats
    assert st["records_read"] == 8 and st["kept"] == len(useful)
    assert st["skipped"] == {"no complete user->assistant round": 1, pp.SKIP_NO_TRAINED: len(refs) - len(useful)}
    assert st["total_tokens"] == sum(len(x) for x in ds["input_ids"])
    assert st["trained_tokens"] == sum(sum(1 for t in lab if t != IGNORE_INDEX) for lab in ds["labels"])
    assert st["trained_share"] == pytest.approx(st["trained_tokens"] / st["total_tokens"], abs=1e-6)
    kept = {i for i, _ in useful}
    full_lengths = [len(encode_conversation(c, tokenizer, max_length=10**6)["input_ids"])
                    for i, c in zip(loaded.ids, loaded.conversations, strict=True) if i in kept]
    assert st["truncated"] == sum(n > 40 for n in full_lengths) > 0
    assert st["length"]["max"] == max(full_lengths)
    assert st["length"]["p50"] <= st["length"]["p90"] <= st["length"]["p99"] <= st["length"]["max"]
    assert st["single_turn"] + st["multi_turn"] == len(useful)
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert on_disk["kept"] == len(useful) and on_disk["cache_hit"] is False


def test_cache_hit_miss_and_invalidation(tokenizer, tokenizer_dir, data_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = _cfg(tokenizer_dir, data_file, max_length=64)
    first = preprocess(cfg, out, tokenizer=tokenizer, progress=False)
    assert not first.cache_hit
    rows = first.dataset.to_dict()

    real_build = pp._build
    builds = []

    def counting_build(*a, **k):
        builds.append(1)
        return real_build(*a, **k)

    monkeypatch.setattr(pp, "_build", counting_build)

    # Same inputs: loaded, not recomputed (also with a freshly loaded tokenizer object and more workers).
    again = preprocess(_cfg(tokenizer_dir, data_file, max_length=64, num_proc=2), out, progress=False)
    assert again.cache_hit and again.cache_dir == first.cache_dir and not builds
    assert again.dataset.to_dict() == rows

    # Anything that affects the features rebuilds into a new key.
    for changed in (_cfg(tokenizer_dir, data_file, max_length=32), _cfg(tokenizer_dir, data_file, max_length=64, masking="reverse"),
                    _cfg(tokenizer_dir, data_file, max_length=64, truncation="left"),
                    _cfg(tokenizer_dir, data_file, max_length=64, max_rounds=1)):
        r = preprocess(changed, out, tokenizer=tokenizer, progress=False)
        assert not r.cache_hit and r.cache_dir != first.cache_dir
    n = len(builds)
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n\n{% endfor %}")
    r = preprocess(PreprocessConfig(data=str(data_file), tokenizer=str(tokenizer_dir), chat_template=str(tpl),
                                    max_length=64, num_proc=1), out, progress=False)
    assert not r.cache_hit and len(builds) == n + 1
    with data_file.open("a", encoding="utf-8") as f:  # the data changes
        f.write(json.dumps({"messages": [{"role": "user", "content": "new"}, {"role": "assistant", "content": "row"}]}) + "\n")
    r = preprocess(cfg, out, tokenizer=tokenizer, progress=False)
    assert not r.cache_hit and r.stats["kept"] == 8
    assert preprocess(cfg, out, tokenizer=tokenizer, progress=False).cache_hit


def _arrow_file(cache_dir: Path) -> Path:
    return next((cache_dir / "data").glob("*.arrow"))


@pytest.mark.parametrize("damage", ["corrupt-arrow", "truncate-arrow", "no-manifest", "other-version", "bad-manifest"])
def test_damaged_or_foreign_cache_is_detected_and_rebuilt(tokenizer, tokenizer_dir, data_file, tmp_path, capsys, damage):
    out = tmp_path / "out"
    cfg = _cfg(tokenizer_dir, data_file, max_length=64)
    first = preprocess(cfg, out, tokenizer=tokenizer, progress=False)
    expected = first.dataset.to_dict()
    cache = first.cache_dir
    manifest = cache / "manifest.json"
    if damage == "corrupt-arrow":
        f = _arrow_file(cache)
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0xFF
        f.write_bytes(bytes(b))
    elif damage == "truncate-arrow":
        f = _arrow_file(cache)
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "no-manifest":
        manifest.unlink()
    elif damage == "other-version":
        m = json.loads(manifest.read_text())
        m["sftlab_version"] = "0.0.1"
        manifest.write_text(json.dumps(m))
    else:
        manifest.write_text('{"key": ')
    del first
    capsys.readouterr()
    r = preprocess(cfg, out, tokenizer=tokenizer, progress=False)
    assert not r.cache_hit and r.cache_dir == cache
    assert "invalid" in capsys.readouterr().err
    assert r.dataset.to_dict() == expected
    assert preprocess(cfg, out, tokenizer=tokenizer, progress=False).cache_hit


# ----------------------------------------------------------------------------- the command


def _command_parser(command: str):
    from sftlab.cli import build_parser

    return next(a for a in build_parser(command)._actions if a.dest == "command").choices[command]


def test_cli_defaults_are_the_config_defaults():
    """`sftlab preprocess` (and `inspect`, which masks the same way) without options preprocesses
    exactly as a PreprocessConfig left at its defaults, and the help states those defaults."""
    import dataclasses

    base = PreprocessConfig(data="d.jsonl", tokenizer="t")
    cli_fields = ["chat_template", "conversation_field", "masking", "train_on_eos", "train_on_role_header",
                  "max_length", "truncation", "max_rounds", "strict"]
    for command, extra in (("preprocess", ["--output-dir", "o"]), ("inspect", [])):
        parser = _command_parser(command)
        args = parser.parse_args(["--data", "d.jsonl", "--tokenizer", "t", *extra])
        for name in cli_fields + (["max_samples", "sample_seed", "num_proc"] if command == "preprocess" else []):
            assert getattr(args, name) == getattr(base, name), (command, name)
    help_text = " ".join(_command_parser("preprocess").format_help().split())
    assert f"(default {base.max_length})" in help_text and f"(default {base.num_proc})" in help_text
    assert f"(default: {base.conversation_field};" in help_text
    assert {f.name for f in dataclasses.fields(PreprocessConfig)} >= set(cli_fields)


def test_cli_prints_stats_and_skip_summary(tokenizer_dir, data_file, tmp_path, capsys):
    rc = main(["preprocess", "--data", str(data_file), "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
               "--max-length", "64", "--output-dir", str(tmp_path / "o"), "--num-proc", "1", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "skipped 1: no complete user->assistant round 1" in cap.err
    assert "records read: 8  kept: 7" in cap.out and "trained" in cap.out and "p50" in cap.out
    assert "cache: built" in cap.out
    main(["preprocess", "--data", str(data_file), "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
          "--max-length", "64", "--output-dir", str(tmp_path / "o"), "--no-progress"])
    assert "cache: hit" in capsys.readouterr().out


def test_cli_strict_turns_a_skip_into_an_error(tokenizer_dir, data_file, tmp_path, capsys):
    rc = main(["preprocess", "--data", str(data_file), "--tokenizer", str(tokenizer_dir), "--strict",
               "--output-dir", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and f"{data_file}:7" in err and "no complete" in err


GOOD = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})

MALFORMED = [
    # name, content, expected fragments in the one-line error
    ("bad.json", '[{"messages": [}]', [":1", "invalid JSON"]),
    ("bad.jsonl", GOOD + "\n{oops\n", [":2", "invalid JSON"]),
    ("notlist.jsonl", json.dumps({"messages": {"role": "user"}}) + "\n", [":1", "field 'messages'", "must be a list"]),
    ("norole.json", json.dumps([{"messages": [{"text": "q"}]}]), ["field 'messages[0].role'", "no role", "record 0"]),
    ("nonstr.jsonl", GOOD + "\n" + json.dumps({"messages": [{"role": "user", "content": ["a"]}]}) + "\n",
     [":2", "field 'messages[0].content'", "must be a string"]),
    ("bytes.jsonl", (GOOD + "\n" + GOOD + "\n").encode() + b"\x80\x81\n", [":3", "not valid UTF-8"]),
    ("empty.jsonl", "", ["file is empty"]),
]


@pytest.mark.parametrize("name, content, fragments", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_cli_malformed_input_is_one_located_line_with_exit_2(tokenizer_dir, tmp_path, capsys, name, content, fragments):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    rc = main(["preprocess", "--data", str(p), "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path / "o"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sftlab preprocess: error: ") and str(p) in err
    for frag in fragments:
        assert frag in err


def test_cli_missing_file_and_empty_directory(tokenizer_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for source, fragment in ((tmp_path / "missing.jsonl", "no such file"), (tmp_path / "empty", "no .json or .jsonl")):
        rc = main(["preprocess", "--data", str(source), "--tokenizer", str(tokenizer_dir), "--output-dir",
                   str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and str(source) in err and fragment in err


def test_cli_errors_in_a_real_subprocess(tokenizer_dir, tmp_path, cli):
    """As a user runs it: exit status 2, one line on stderr, no traceback."""
    (tmp_path / "nodata").mkdir()
    (tmp_path / "nodata" / "readme.txt").write_text("x")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + "\n" + GOOD + "\n" + '{"messages": [' + "\n", encoding="utf-8")
    for source, fragment in ((tmp_path / "nodata", "no .json or .jsonl"), (bad, f"{bad}:3: invalid JSON")):
        p = cli("preprocess", "--data", str(source), "--tokenizer", str(tokenizer_dir), "--output-dir",
                    str(tmp_path / "o"), timeout=300)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr
        assert str(source) in lines[0] and fragment in lines[0]


@pytest.mark.integration
@pytest.mark.slow
def test_real_sharegpt_2000_conversations_with_smollm2_and_chatml(tokenizer, tokenizer_dir, tmp_path, cli):
    """The issue's real-data check: 2,000 ShareGPT conversations, 2 worker processes, stats printed."""
    out = tmp_path / "sg"
    p = cli("preprocess", "--data", "sharegpt", "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
                "--max-samples", "2000", "--num-proc", "2", "--output-dir", str(out), timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "records read:" in p.stdout and "trained" in p.stdout and "p99" in p.stdout
    st = json.loads((out / "stats.json").read_text())
    assert st["kept"] + st["skipped"].get(pp.SKIP_NO_TRAINED, 0) == 2000
    assert st["records_read"] == 2000 + st["skipped"]["no complete user->assistant round"]
    assert st["multi_turn"] > st["single_turn"] > 0
    assert 0.3 < st["trained_share"] < 1 and st["truncated"] > 0 and st["length"]["max"] > 2048
    assert st["fast_path_fallback_boundaries"] == 0

    # The same configuration through the API hits the cache the command built.
    cfg = PreprocessConfig(data="sharegpt", tokenizer=str(tokenizer_dir), chat_template="chatml", max_samples=2000)
    res = preprocess(cfg, out, tokenizer=tokenizer, progress=False)
    assert res.cache_hit and len(res.dataset) == st["kept"]
    # Rows built by the workers equal the reference method (a random 25).
    loaded = load_conversations("sharegpt", max_samples=2000)
    by_id = dict(zip(loaded.ids, loaded.conversations, strict=True))
    for i in random.Random(0).sample(range(len(res.dataset)), 25):
        row = res.dataset[i]
        ref = encode_conversation(by_id[row["id"]], tokenizer, max_length=2048, method="prefix")
        assert {k: row[k] for k in ref} == ref
