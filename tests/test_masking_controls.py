"""Masking controls (issue #14): ``masking: last_assistant``, ``train_on_eos``, ``train_on_role_header``
and per-message ``train``/``weight`` flags, checked against a prefix-reference oracle written here
from the spec (hard-coded ChatML, one tokenisation of the text up to every cut), on the real SmolLM2
tokenizer, for real ShareGPT conversations and random ones, both masking methods; then the flags
through normalisation, preprocessing (cache key, weights column), the CLI (inspect, check-masking
goldens) and the config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import A, S, U  # tests/ is on sys.path (rootdir-less test modules)

from sftlab.cli import main
from sftlab.data import load_conversations
from sftlab.errors import DataError, SftlabError
from sftlab.prep.masking import (
    IGNORE_INDEX,
    REVERSE_SYSTEM_PROMPT,
    STRATEGIES,
    encode_conversation,
    encode_conversations_with_info,
)

FIXTURES = Path(__file__).parent / "fixtures"
HEAD, EOT = "<|im_start|>{role}\n", "<|im_end|>\n"
FLAG_COMBOS = [(True, True), (False, True), (True, False), (False, False)]  # (train_on_eos, train_on_role_header)


# ----------------------------------------------------------------------------- the oracle


def _arrange(messages, strategy):
    if strategy != "reverse":
        return list(messages)
    roles = [m["role"] for m in messages]
    if roles.count("user") == 1 and roles.count("assistant") == 1 and roles.count("system") <= 1 and len(roles) <= 3:
        return ([m for m in messages if m["role"] == "system"] + [m for m in messages if m["role"] == "assistant"]
                + [m for m in messages if m["role"] == "user"])
    return list(messages) if roles[0] == "system" else [S(REVERSE_SYSTEM_PROMPT), *messages]


def _trained(rendered, strategy):
    roles = {"user"} if strategy == "reverse" else {"assistant"}
    last = max((i for i, m in enumerate(rendered) if m["role"] == "assistant"), default=None)
    out = []
    for i, m in enumerate(rendered):
        on = m["role"] in roles and m["role"] != "tool" and (strategy != "last_assistant" or i == last)
        if m.get("train") is not None:
            on = m["train"]
        out.append(on and m.get("weight", 1.0) > 0)
    return out


def oracle(tok, messages, strategy="assistant", *, eos=True, header=True, max_length=None):
    """Features by the definition: the ChatML text; a cut's token position is the token count of the
    text before it; a trained message keeps [message start or content start, message end or content end)."""
    rendered = _arrange(messages, strategy)
    text, cuts = "", []
    for m in rendered:
        start = len(text)
        head = HEAD.format(role=m["role"])
        text += head + m["content"] + EOT
        cuts.append((start, start + len(head), len(text) - len(EOT), len(text)))
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def count(c):
        return len(tok(text[:c], add_special_tokens=False)["input_ids"])

    labels, weights = [IGNORE_INDEX] * len(ids), [0.0] * len(ids)
    trained = _trained(rendered, strategy)
    for m, on, (s, h, t, e) in zip(rendered, trained, cuts, strict=True):
        if on:
            lo, hi = count(s if header else h), count(e if eos else t)
            labels[lo:hi] = ids[lo:hi]
            weights[lo:hi] = [float(m.get("weight", 1.0))] * (hi - lo)
    feats = {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)}
    if any(on and m.get("weight", 1.0) != 1.0 for m, on in zip(rendered, trained, strict=True)):
        feats["weights"] = weights
    if max_length is not None:
        feats = {k: v[:max_length] for k, v in feats.items()}
    return feats


def trained_text(tok, feats):
    return tok.decode([t for t, lab in zip(feats["input_ids"], feats["labels"], strict=True) if lab != IGNORE_INDEX])


# ----------------------------------------------------------------------------- exact semantics


CONV = [S("Be terse."), U("Hi"), A("Hello!"), U("Name a planet."), A("Mars.")]


@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_each_control_trains_exactly_the_documented_tokens(tokenizer, method):
    def text(**kw):
        return trained_text(tokenizer, encode_conversation(CONV, tokenizer, method=method, **kw))

    assert text() == "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\nMars.<|im_end|>\n"
    assert text(strategy="last_assistant") == "<|im_start|>assistant\nMars.<|im_end|>\n"
    assert text(train_on_eos=False) == "<|im_start|>assistant\nHello!<|im_start|>assistant\nMars."
    assert text(train_on_role_header=False) == "Hello!<|im_end|>\nMars.<|im_end|>\n"
    assert text(strategy="last_assistant", train_on_eos=False, train_on_role_header=False) == "Mars."
    assert text(strategy="reverse", train_on_role_header=False) == "Hi<|im_end|>\nName a planet.<|im_end|>\n"


@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_per_message_train_and_weight_flags(tokenizer, method):
    conv = [S("sys"), U("q1", ), A("a1"), {**U("q2"), "train": True, "weight": 0.5}, {**A("a2"), "train": False},
            U("q3"), {**A("a3"), "weight": 2}]
    f = encode_conversation(conv, tokenizer, method=method, train_on_role_header=False)
    assert trained_text(tokenizer, f) == "a1<|im_end|>\nq2<|im_end|>\na3<|im_end|>\n"
    assert f == oracle(tokenizer, conv, header=False)
    by_weight = {}
    for tid, lab, w in zip(f["input_ids"], f["labels"], f["weights"], strict=True):
        assert (lab == IGNORE_INDEX) == (w == 0.0)
        by_weight.setdefault(w, []).append(tid)
    assert tokenizer.decode(by_weight[0.5]) == "q2<|im_end|>\n" and tokenizer.decode(by_weight[2.0]) == "a3<|im_end|>\n"
    # weight 0 masks like train: false; weights all 1.0 leave no weights column at all
    zero = [U("q"), {**A("a"), "weight": 0}, U("q2"), A("b")]
    assert trained_text(tokenizer, encode_conversation(zero, tokenizer, method=method)) == "<|im_start|>assistant\nb<|im_end|>\n"
    ones = [U("q"), {**A("a"), "weight": 1.0, "train": True}]
    assert "weights" not in encode_conversation(ones, tokenizer, method=method)
    # train: true trains a tool turn and a user turn under last_assistant; the strategy's choice survives otherwise
    tool = [U("q"), A("call"), {"role": "tool", "content": "42", "train": True}, A("It is 42.")]
    got = trained_text(tokenizer, encode_conversation(tool, tokenizer, method=method, strategy="last_assistant"))
    assert got == "<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\nIt is 42.<|im_end|>\n"


def test_bad_flags_are_errors(tokenizer):
    for bad, word in (({"train": "yes"}, "'train'"), ({"weight": -1}, "'weight'"), ({"weight": float("nan")}, "'weight'"),
                      ({"weight": True}, "'weight'")):
        with pytest.raises(SftlabError, match=f"message 1: {word}"):
            encode_conversation([U("q"), {**A("a"), **bad}], tokenizer)


def test_truncation_cuts_weights_like_labels(tokenizer):
    conv = [U("q " * 20), {**A("word " * 30), "weight": 3}]
    for side in ("right", "left"):
        f = encode_conversation(conv, tokenizer, max_length=25, truncation=side, train_on_eos=False)
        full = oracle(tokenizer, conv, eos=False)
        cut = slice(0, 25) if side == "right" else slice(len(full["input_ids"]) - 25, None)
        assert f == {k: v[cut] for k, v in full.items()}


# ----------------------------------------------------------------------------- property tests


def random_conversation(rng: random.Random) -> list[dict]:
    pieces = ["", " ", "\n", "\n\n", "  \n", "Hello", " world", "x", "é", "日本語", "🙂", "<|im_end|>", "\t", "42.",
              "\n- item", "```py\nprint(1)\n```", " <|im_start|>"]

    def content():
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))

    def flags():
        out = {}
        if rng.random() < 0.25:
            out["train"] = rng.random() < 0.5
        if rng.random() < 0.25:
            out["weight"] = rng.choice([0, 0.5, 1, 2.0])
        return out

    msgs = [{"role": "system", "content": content(), **flags()}] if rng.random() < 0.4 else []
    for _ in range(rng.randint(1, 3)):
        msgs += [{"role": "user", "content": content(), **flags()}, {"role": "assistant", "content": content(), **flags()}]
        if rng.random() < 0.2:
            msgs += [{"role": "tool", "content": content(), **flags()}, {"role": "assistant", "content": content()}]
    return msgs


@pytest.fixture(scope="module")
def random_conversations():
    rng = random.Random(14)
    return [random_conversation(rng) for _ in range(40)]


@pytest.fixture(scope="module")
def sharegpt_conversations():
    return load_conversations("sharegpt", max_samples=24, max_rounds=3).conversations


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("eos,header", FLAG_COMBOS)
def test_random_conversations_match_the_prefix_oracle(tokenizer, random_conversations, strategy, eos, header):
    kw = {"strategy": strategy, "train_on_eos": eos, "train_on_role_header": header, "max_length": 100_000}
    fast = encode_conversations_with_info(random_conversations, tokenizer, method="fast", **kw)
    prefix = encode_conversations_with_info(random_conversations, tokenizer, method="prefix", **kw)
    for conv, (f, _), (p, _) in zip(random_conversations, fast, prefix, strict=True):
        expected = oracle(tokenizer, conv, strategy, eos=eos, header=header)
        assert p == expected, conv
        assert f == expected, conv


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("eos,header", FLAG_COMBOS)
def test_real_sharegpt_conversations_match_the_prefix_oracle(tokenizer, sharegpt_conversations, strategy, eos, header):
    kw = {"strategy": strategy, "train_on_eos": eos, "train_on_role_header": header, "max_length": 100_000}
    fast = encode_conversations_with_info(sharegpt_conversations, tokenizer, method="fast", **kw)
    prefix = encode_conversations_with_info(sharegpt_conversations[:8], tokenizer, method="prefix", **kw)
    for conv, (f, info) in zip(sharegpt_conversations, fast, strict=True):
        assert f == oracle(tokenizer, conv, strategy, eos=eos, header=header)
        assert info.fallback_boundaries == 0  # ChatML on SmolLM2: every cut is read off the full tokenisation
    assert [p for p, _ in prefix] == [f for f, _ in fast[:8]]


@pytest.mark.parametrize("template", [
    # not prefix-stable: a message renders differently when it is the last one
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if loop.last %}<|endoftext|>{% else %}<|im_end|>\n{% endif %}{% endfor %}",
    # drops the content: nothing to locate
    "{% for m in messages %}<|im_start|>{{ m['role'] }}<|im_end|>\n{% endfor %}",
], ids=["not-prefix-stable", "no-content"])
def test_templates_that_hide_the_content_boundaries_keep_spans_whole(tokenizer, caplog, monkeypatch, template):
    import copy
    import logging

    from sftlab.prep import masking

    monkeypatch.setattr(masking, "_warned_templates", set())
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    conv = [U("q"), A("a1"), U("q2"), A("a2")]
    with caplog.at_level(logging.WARNING, logger="sftlab.prep.masking"):
        whole = encode_conversation(conv, tok, method="prefix")
        for method in ("fast", "prefix"):
            assert encode_conversation(conv, tok, method=method, train_on_eos=False, train_on_role_header=False) == whole
    assert sum("train_on_role_header/train_on_eos" in r.getMessage() for r in caplog.records) == 1  # once per template


# ----------------------------------------------------------------------------- data loading


def test_flags_survive_loading_and_bad_values_name_file_record_and_field(tmp_path):
    good = tmp_path / "good.jsonl"
    rows = [{"messages": [{"role": "system", "content": "s", "train": True}, {"role": "user", "content": "q", "weight": 0.5},
                          {"role": "assistant", "content": "a", "train": False, "weight": None}]},
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "weight": 2}]}]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    convs = load_conversations(str(good)).conversations
    assert convs[0] == [{"role": "system", "content": "s", "train": True}, {"role": "user", "content": "q", "weight": 0.5},
                        {"role": "assistant", "content": "a", "train": False}]
    assert convs[1][1] == {"role": "assistant", "content": "a", "weight": 2}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[1]) + "\n" + json.dumps({"messages": [U("q"), {**A("a"), "weight": "heavy"}]}) + "\n")
    with pytest.raises(DataError) as e:
        load_conversations(str(bad))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "bad.jsonl" in msg and "record 1" in msg and "messages[1].weight" in msg


def test_tool_folding_keeps_the_user_turns_flags():
    from sftlab.data import fold_tool_turns

    folded, n = fold_tool_turns([U("q"), A("call"), {"role": "tool", "content": "out"}, {**U("next"), "train": True},
                                 {**A("b"), "weight": 2}])
    assert n == 1 and folded[2] == {"role": "user", "content": "out\n\nnext", "train": True}
    assert folded[3] == {"role": "assistant", "content": "b", "weight": 2}


# ----------------------------------------------------------------------------- preprocessing and config


def test_preprocess_cache_key_and_weights_column(tokenizer, tokenizer_dir, tmp_path):
    from sftlab.prep.pipeline import PreprocessConfig, cache_key_inputs, preprocess

    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps({"messages": [U(f"q{i}"), A(f"a{i}")]}) for i in range(3)) + "\n")
    weighted = tmp_path / "weighted.jsonl"
    weighted.write_text(json.dumps({"messages": [U("q"), {**A("a"), "weight": 2}]}) + "\n"
                        + json.dumps({"messages": [U("q2"), A("b")]}) + "\n")
    base = PreprocessConfig(data=str(plain), tokenizer=str(tokenizer_dir), chat_template="chatml", num_proc=1)
    inputs = cache_key_inputs(base, tokenizer)
    assert "train_on_eos" not in inputs and "train_on_role_header" not in inputs  # old caches keep their keys
    no_eos = PreprocessConfig(**{**base.__dict__, "train_on_eos": False})
    assert cache_key_inputs(no_eos, tokenizer)["train_on_eos"] is False

    r = preprocess(base, tmp_path / "out-plain", tokenizer=tokenizer, progress=False)
    assert "weights" not in r.dataset.column_names
    r2 = preprocess(no_eos, tmp_path / "out-plain", tokenizer=tokenizer, progress=False)
    assert r2.cache_dir != r.cache_dir and r2.stats["train_on_eos"] is False
    assert r2.stats["trained_tokens"] == r.stats["trained_tokens"] - 2 * 3  # <|im_end|> and "\n" per conversation
    w = preprocess(PreprocessConfig(**{**base.__dict__, "data": str(weighted)}), tmp_path / "out-w",
                   tokenizer=tokenizer, progress=False)
    assert w.stats["weighted_conversations"] == 1
    rows = list(w.dataset)
    assert [sorted(set(r["weights"])) for r in rows] == [[0.0, 2.0], [0.0, 1.0]]
    assert all((lab == IGNORE_INDEX) == (x == 0.0) for r in rows for lab, x in zip(r["labels"], r["weights"], strict=True))


def test_preprocess_cli_takes_the_controls(tokenizer_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [U("q"), A("a"), U("q2"), {**A("b"), "weight": 0.5}]}) + "\n")
    rc = main(["preprocess", "--data", str(data), "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
               "--masking", "last_assistant", "--no-train-on-eos", "--no-train-on-role-header", "--num-proc", "1",
               "--output-dir", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "masking=last_assistant, train_on_eos=false, train_on_role_header=false, 1 with message weights" in out
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["trained_tokens"] == 1 and stats["train_on_eos"] is False  # just "b"


def test_train_config_keys(tokenizer_dir, tmp_path):
    from sftlab.errors import ConfigError
    from sftlab.prep.pipeline import PreprocessConfig
    from sftlab.train.config import TrainConfig, load_config

    assert TrainConfig.__dataclass_fields__["train_on_eos"].default is True
    assert TrainConfig.__dataclass_fields__["train_on_role_header"].default is True
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [U("q"), A("a")]}) + "\n")
    base = {"model": str(tokenizer_dir), "data": str(data), "output_dir": str(tmp_path / "run")}
    cfg, _ = load_config(None, {**base, "masking": "last_assistant", "train_on_eos": False, "train_on_role_header": False})
    p = PreprocessConfig.from_train_config(cfg)
    assert (p.masking, p.train_on_eos, p.train_on_role_header) == ("last_assistant", False, False)
    assert PreprocessConfig.from_train_config(load_config(None, base)[0]).train_on_eos is True
    with pytest.raises(ConfigError, match="train_on_eos"):
        load_config(None, {**base, "train_on_eos": "maybe"})
    with pytest.raises(ConfigError, match="last_assistant"):
        load_config(None, {**base, "masking": "last"})


def test_cli_masking_choices_are_the_strategies():
    from sftlab.cli import build_parser

    def choices(command: str, option: str):
        sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
        return tuple(next(a for a in sub._actions if option in a.option_strings).choices)

    for command, option in (("preprocess", "--masking"), ("inspect", "--masking"), ("check-masking", "--strategy")):
        assert choices(command, option) == STRATEGIES == ("assistant", "reverse", "last_assistant")


# ----------------------------------------------------------------------------- check-masking goldens

GOLDENS = [  # (golden file, strategy, extra flags); written with --method prefix, checked with the fast path
    ("masking_golden_last_assistant.json", "last_assistant", []),
    ("masking_golden_no_eos_no_header.json", "assistant", ["--no-train-on-eos", "--no-train-on-role-header"]),
    ("masking_golden_reverse_no_eos.json", "reverse", ["--no-train-on-eos"]),
]
CONTROL_SAMPLES = FIXTURES / "masking_controls_samples.json"


def _samples(path):
    from sftlab.data import normalize_messages

    raw = json.loads(path.read_text(encoding="utf-8"))
    return {split: [(s["id"], normalize_messages(s["messages"])) for s in raw[split]] for split in ("single_turn", "multi_turn")}


@pytest.mark.parametrize("name,strategy,flags", GOLDENS, ids=[g[1] + "".join(g[2]) for g in GOLDENS])
def test_committed_goldens_are_the_oracle_and_check_masking_matches_them(tokenizer, tokenizer_dir, capsys,
                                                                         name, strategy, flags):
    golden = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    meta = golden["meta"]
    assert meta["strategy"] == strategy
    eos, header = "--no-train-on-eos" not in flags, "--no-train-on-role-header" not in flags
    assert (meta["train_on_eos"], meta["train_on_role_header"]) == (eos, header)
    n = meta["max_length"]
    for split, rows in _samples(CONTROL_SAMPLES).items():
        for (sid, msgs), row in zip(rows, golden[split], strict=True):
            assert row["id"] == sid
            want = oracle(tokenizer, msgs, strategy, eos=eos, header=header, max_length=n)
            got = {k: v[: len(want["input_ids"])] for k, v in row["features"].items()}
            assert got == want, sid
    common = ["check-masking", "--samples", str(CONTROL_SAMPLES), "--golden", str(FIXTURES / name),
              "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml", "--strategy", strategy, "--max-length", str(n)]
    for method in ("fast", "prefix"):
        assert main([*common, *flags, "--method", method]) == 0
        out = capsys.readouterr().out
        assert f"single_turn: {len(golden['single_turn'])}/{len(golden['single_turn'])} match" in out
        assert f"multi_turn: {len(golden['multi_turn'])}/{len(golden['multi_turn'])} match" in out
    # Without the controls the same golden does not match: each one changes some sample.
    assert main([*common[:-4], "--strategy", "assistant", "--max-length", str(n)]) == 1
    assert "match" in capsys.readouterr().out


def test_existing_sample_file_still_matches_the_plain_oracle_under_the_new_code(tokenizer, tokenizer_dir, tmp_path, capsys):
    golden = tmp_path / "g.json"
    assert main(["check-masking", "--samples", str(FIXTURES / "masking_samples.json"), "--write-golden", str(golden),
                 "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml", "--strategy", "assistant",
                 "--max-length", "48", "--method", "prefix"]) == 0
    g = json.loads(golden.read_text())
    for split, rows in _samples(FIXTURES / "masking_samples.json").items():
        for (sid, msgs), row in zip(rows, g[split], strict=True):
            assert row["id"] == sid and "weights" not in row["features"]
            want = oracle(tokenizer, msgs, max_length=48)
            assert {k: v[: len(want["input_ids"])] for k, v in row["features"].items()} == want


# ----------------------------------------------------------------------------- inspect


def test_inspect_shows_the_controls_offline(tokenizer_dir, capsys):
    rc = main(["inspect", "--data", "sharegpt", "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
               "--index", "0", "--masking", "last_assistant", "--no-train-on-role-header"])
    out = capsys.readouterr().out
    assert rc == 0
    body = out.split("\n", 1)[1]
    assert body.count("[[") == 1 and "masking=last_assistant, train_on_role_header=false" in out
    assert "<|im_start|>assistant\n[[" in body and "<|im_end|>\n]]\ntokens:" in body
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(tuple("0123456789")) and "tokens" in ln]
    assert sum(ln.endswith("trained") for ln in lines) == 1 and lines[-1].endswith("trained")


def test_inspect_shows_weights_and_no_eos(tokenizer_dir, tmp_path, capsys):
    data = tmp_path / "w.jsonl"
    data.write_text(json.dumps({"messages": [U("q"), {**A("first"), "weight": 0.5}, {**U("again"), "train": True},
                                             A("second")]}) + "\n")
    rc = main(["inspect", "--data", str(data), "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
               "--no-train-on-eos", "--tokens"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[[<|im_start|>assistant\nfirst]]<|im_end|>" in out and "[[<|im_start|>user\nagain]]<|im_end|>" in out
    assert "trained  weight 0.5" in out and "pos      id  label  weight  text" in out


# ----------------------------------------------------------------------------- collate and packing


def test_collators_pad_weights_and_fill_them_for_unweighted_examples():
    import torch

    from sftlab.train.collate import PackedCollator, SFTDataCollator, pack_examples

    a = {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8], "attention_mask": [1] * 4, "weights": [0.0, 2.0, 2.0, 0.5]}
    b = {"input_ids": [9, 10], "labels": [-100, 10], "attention_mask": [1, 1]}
    batch = SFTDataCollator(pad_token_id=0, pad_to_multiple_of=8)([a, b])
    assert batch["weights"].dtype == torch.float32 and batch["weights"].shape == (2, 8)
    assert batch["weights"].tolist() == [[0.0, 2.0, 2.0, 0.5, 0, 0, 0, 0], [0.0, 1.0, 0, 0, 0, 0, 0, 0]]
    assert "weights" not in SFTDataCollator(pad_token_id=0)([b, b])  # ordinary data: batches unchanged
    cut = SFTDataCollator(pad_token_id=0, padding="max_length", max_length=3)([a])
    assert cut["weights"].tolist() == [[0.0, 2.0, 2.0]] and cut["labels"].tolist() == [[-100, 6, 7]]
    with pytest.raises(ValueError, match="weights"):
        SFTDataCollator(pad_token_id=0)([{**a, "weights": [1.0]}])

    rows = pack_examples([a, b], max_length=8)
    assert rows == [{"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, 6, 7, 8, -100, 10],
                     "position_ids": [0, 1, 2, 3, 0, 1], "weights": [0.0, 2.0, 2.0, 0.5, 0.0, 1.0]}]
    packed = PackedCollator(pad_token_id=0)([rows[0], {**rows[0], "input_ids": [1], "labels": [-100], "position_ids": [0],
                                                        "weights": [0.0]}])
    assert packed["weights"].tolist() == [[0.0, 2.0, 2.0, 0.5, 0.0, 1.0], [0.0] * 6]
    assert "weights" not in pack_examples([b], max_length=8)[0]


@pytest.mark.integration
@pytest.mark.parametrize("loss", ["reference", "chunked"])
def test_sftlab_train_hands_message_weights_to_the_loss(tiny_model_dir, tmp_path, loss):
    """The same step on the same data, once plain and once with every message weighing 2: the
    logged loss doubles exactly (the weights reach the loss through the Trainer's batches)."""
    import yaml
    from conftest import run_cli

    def run(weight: float | None) -> float:
        data = tmp_path / f"w{weight}.jsonl"
        rows = []
        for i in range(4):
            msgs = [{"role": "user", "content": f"question number {i}"},
                    {"role": "assistant", "content": f"answer number {i} with a few more words"}]
            if weight is not None:
                msgs = [{**m, "weight": weight} for m in msgs]
            rows.append(json.dumps({"messages": msgs}))
        data.write_text("\n".join(rows) + "\n", encoding="utf-8")
        out = tmp_path / f"out-{loss}-{weight}"
        cfg = {"model": str(tiny_model_dir), "data": str(data), "chat_template": "chatml", "model_max_length": 64,
               "max_steps": 1, "per_device_train_batch_size": 2, "total_batch_size": 4, "eval_fraction": 0.0,
               "learning_rate": 0.0, "num_proc": 1, "dtype": "fp32", "loss": loss, "save_steps": 100,
               "output_dir": str(out)}
        path = tmp_path / f"cfg-{loss}-{weight}.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        proc = run_cli("train", str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return next(m["loss"] for m in metrics if "loss" in m)

    plain, doubled = run(None), run(2.0)
    assert doubled == pytest.approx(2 * plain, rel=1e-4)
