"""Data specs (sftlab.data.specs / mixture / formats): four formats in one seeded mix, tool roles,
system prompts, columns, Parquet/CSV, hub subset and split plumbing, one-line errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import A, S, U  # tests/ is on sys.path

from sftlab.data import (
    DataSpec,
    fit_to_template,
    fold_tool_turns,
    load_conversations,
    load_mixture,
    mix_quotas,
    normalize_turns,
    parse_data_specs,
    source_fingerprint,
    specs_fingerprint,
    template_has_tool_role,
    with_system_prompt,
)
from sftlab.errors import ConfigError, DataError, SftlabError
from sftlab.prep.masking import IGNORE_INDEX, encode_conversation, prefix_lengths_reference

REPO_ROOT = Path(__file__).resolve().parents[1]


def T(text: str) -> dict[str, str]:
    return {"role": "tool", "content": text}


# ----------------------------------------------------------------------------- the four-format fixture


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> dict[str, Path]:
    """A smoltalk-style JSONL (system turns), an Alpaca JSON, a ShareGPT JSON with function_call and
    observation turns (LLaMA-Factory dialect), and a prompt/completion Parquet file."""
    import datasets

    d = tmp_path_factory.mktemp("four")
    smol = d / "smoltalk.jsonl"
    smol.write_text("".join(json.dumps({"messages": [S(f"sys {i}"), U(f"smol q{i}"), A(f"smol a{i}")]}) + "\n"
                            for i in range(12)), encoding="utf-8")
    alpaca = d / "alpaca.json"
    recs = [{"instruction": f"alp instr {i}", "input": f"ctx {i}" if i % 2 else "", "output": f"alp out {i}"}
            for i in range(40)]
    recs[3]["system"] = "alpaca system"
    alpaca.write_text(json.dumps(recs), encoding="utf-8")
    share = d / "sharegpt.json"
    convs = []
    for i in range(10):
        turns = [{"from": "human", "value": f"sg q{i}"}, {"from": "function_call", "value": f'{{"name": "f{i}"}}'},
                 {"from": "observation", "value": f"OBSERVED-{i}"}, {"from": "gpt", "value": f"sg a{i}"}]
        convs.append({"id": f"sg-{i}", "conversations": turns})
    convs.append({"id": "sg-bad", "conversations": [{"from": "human", "value": "no reply"}]})  # skipped
    share.write_text(json.dumps(convs), encoding="utf-8")
    parquet = d / "pc.parquet"
    datasets.Dataset.from_list([{"prompt": f"pq p{i}", "completion": f"pq c{i}"} for i in range(20)]).to_parquet(
        str(parquet))
    return {"smol": smol, "alpaca": alpaca, "share": share, "parquet": parquet}


def _specs(four, **weights):
    fmt = {"smol": "messages", "alpaca": "alpaca", "share": "sharegpt", "parquet": "prompt_completion"}
    out = []
    for key in ("smol", "alpaca", "share", "parquet"):
        spec = {"path": str(four[key]), "format": fmt[key]}
        if key in weights:
            spec["weight"] = weights[key]
        out.append(spec)
    return out


def _origin(cid: str) -> str:
    return "share" if cid.startswith("sg-") else cid.split(".")[0].replace("smoltalk", "smol").replace("pc", "parquet")


def test_four_formats_load_as_one_mix_with_per_source_counts(four):
    res = load_mixture(_specs(four), seed=0)
    by = {Path(s["path"]).name: s for s in res.stats["sources"]}
    assert [(by[n]["records_read"], by[n]["kept"], by[n]["drawn"]) for n in
            ("smoltalk.jsonl", "alpaca.json", "sharegpt.json", "pc.parquet")] == [
        (12, 12, 12), (40, 40, 40), (11, 10, 10), (20, 20, 20)]
    assert by["sharegpt.json"]["skipped"] == {"no complete user->assistant round": 1}
    assert res.stats["kept"] == len(res.conversations) == 82 and res.stats["records_read"] == 83
    assert Counter(_origin(i) for i in res.ids) == {"smol": 12, "alpaca": 40, "share": 10, "parquet": 20}
    convs = dict(zip(res.ids, res.conversations, strict=True))
    assert convs["smoltalk.jsonl:0"] == [S("sys 0"), U("smol q0"), A("smol a0")]
    assert convs["alpaca.json:1"] == [U("alp instr 1\n\nctx 1"), A("alp out 1")]  # input after a blank line
    assert convs["alpaca.json:2"] == [U("alp instr 2"), A("alp out 2")]  # empty input: instruction only
    assert convs["alpaca.json:3"][0] == S("alpaca system")
    assert convs["sg-4"] == [U("sg q4"), A('{"name": "f4"}'), T("OBSERVED-4"), A("sg a4")]
    assert convs["pc.parquet:7"] == [U("pq p7"), A("pq c7")]
    assert any("source " in n and "drawn 10" in n for n in res.stats["notes"])


def test_the_draw_is_seeded(four):
    specs = _specs(four, smol=1, alpaca=1, share=1, parquet=1)
    a = load_mixture(specs, seed=1)
    assert load_mixture(specs, seed=1).ids == a.ids  # same seed, same mix (and order)
    b = load_mixture(specs, seed=2)
    assert sorted(b.ids) != sorted(a.ids)  # another seed, another sample
    assert Counter(map(_origin, a.ids)) == Counter(map(_origin, b.ids))  # same shares


def test_weights_decide_the_shares_without_repeating_a_conversation(four):
    res = load_mixture(_specs(four, alpaca=2, share=1, smol=0, parquet=0), seed=0)
    # Largest mix without repeats: share needs 1/3 of it and has 10 -> 30; alpaca gets 2/3 = 20 of its 40.
    assert Counter(map(_origin, res.ids)) == {"alpaca": 20, "share": 10}
    assert len(set(res.ids)) == len(res.ids)
    by = {Path(s["path"]).stem: s for s in res.stats["sources"]}
    assert by["smoltalk"]["drawn"] == 0 and by["smoltalk"]["records_read"] == 12  # weight 0: loaded, not drawn
    assert by["alpaca"]["weight"] == 2.0 and res.stats["mix"]["weights"] == "explicit"
    # An overall max_samples caps the mix; shares stay.
    capped = load_mixture(_specs(four, alpaca=2, share=1, smol=0, parquet=0), seed=0, max_samples=9)
    assert Counter(map(_origin, capped.ids)) == {"alpaca": 6, "share": 3}


def test_without_weights_max_samples_draws_in_proportion_and_per_source_max_samples_takes_the_first(four):
    res = load_mixture(_specs(four), seed=0, max_samples=41)  # 82 in all: half of each
    assert Counter(map(_origin, res.ids)) == {"smol": 6, "alpaca": 20, "share": 5, "parquet": 10}
    specs = _specs(four)
    specs[1]["max_samples"] = 3
    res = load_mixture(specs, seed=0)
    assert sorted(i for i in res.ids if i.startswith("alpaca")) == ["alpaca.json:0", "alpaca.json:1", "alpaca.json:2"]


def test_mix_quotas_sum_to_the_size_and_respect_pools():
    rng = random.Random(0)
    for _ in range(200):
        pools = [rng.randint(0, 50) for _ in range(rng.randint(1, 5))]
        weights = [rng.choice([0, 0.5, 1, 2, 3.3]) if n else 0 for n in pools]
        cap = rng.choice([None, rng.randint(1, 100)])
        q = mix_quotas(pools, weights, cap)
        assert all(0 <= x <= n for x, n in zip(q, pools, strict=True))
        if sum(weights):
            size = min(int(n * sum(weights) / w + 1e-9) for n, w in zip(pools, weights, strict=True) if w)
            assert sum(q) == min(size, sum(pools), cap if cap else 10**9)
            assert all(x == 0 for x, w in zip(q, weights, strict=True) if w == 0)


def test_single_string_spec_is_todays_behaviour(four):
    assert parse_data_specs(str(four["smol"])) == [DataSpec(path=str(four["smol"]))]
    one = load_mixture(str(four["smol"]), seed=5)
    plain = load_conversations(str(four["smol"]))
    assert one.ids == plain.ids and one.conversations == plain.conversations
    assert specs_fingerprint(str(four["smol"])) == source_fingerprint(str(four["smol"]))
    # A list goes through the mix; auto detects alpaca and prompt/completion records too.
    auto = load_conversations([str(four["alpaca"]), str(four["parquet"])])
    assert len(auto.conversations) == 60 and len(auto.stats["sources"]) == 2


def test_fingerprint_changes_with_the_spec(four):
    base = specs_fingerprint(_specs(four))
    assert specs_fingerprint(_specs(four)) == base
    assert specs_fingerprint(_specs(four, alpaca=2)) != base
    assert len({DataSpec(path="a"), DataSpec(path="a"), DataSpec(path="a", weight=1.0)}) == 2


# ----------------------------------------------------------------------------- formats and columns


def test_columns_remap_fields_and_a_missing_column_names_file_record_and_column(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text(json.dumps({"question": "q0", "answer": "a0"}) + "\n" + json.dumps({"question": "q1"}) + "\n",
                 encoding="utf-8")
    spec = {"path": str(f), "format": "alpaca", "columns": {"instruction": "question", "output": "answer"}}
    with pytest.raises(DataError) as e:
        load_mixture([spec], seed=0)
    msg = str(e.value)
    assert str(f) in msg and ":2" in msg and "record 1" in msg and "'answer'" in msg and "\n" not in msg
    f.write_text(json.dumps({"question": "q0", "answer": "a0", "sys": "be kind"}) + "\n", encoding="utf-8")
    spec["columns"]["system"] = "sys"
    assert load_mixture([spec], seed=0).conversations == [[S("be kind"), U("q0"), A("a0")]]


def test_prompt_completion_accepts_conversational_lists_and_alpaca_history(tmp_path):
    f = tmp_path / "pc.jsonl"
    f.write_text(json.dumps({"prompt": [S("sys"), U("q")], "completion": [A("a")]}) + "\n"
                 + json.dumps({"prompt": "p", "completion": "c"}) + "\n", encoding="utf-8")
    assert load_conversations(str(f)).conversations == [[S("sys"), U("q"), A("a")], [U("p"), A("c")]]
    g = tmp_path / "hist.json"
    g.write_text(json.dumps([{"instruction": "i", "output": "o", "history": [["h1", "r1"]]}]), encoding="utf-8")
    assert load_conversations(str(g)).conversations == [[U("h1"), A("r1"), U("i"), A("o")]]


def test_csv_goes_through_datasets(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("instruction,input,output\nname a colour,,red\nadd,2 and 3,5\n", encoding="utf-8")
    res = load_mixture([{"path": str(f), "format": "alpaca"}], seed=0)
    assert res.conversations == [[U("name a colour"), A("red")], [U("add\n\n2 and 3"), A("5")]]


# ----------------------------------------------------------------------------- roles: tool turns


def test_tool_turns_pair_inside_a_round_and_stray_ones_are_dropped():
    msgs, dropped = normalize_turns([U("q"), A("call"), T("r1"), T("r2"), A("final"), U("q2"), A("a2")])
    assert msgs == [U("q"), A("call"), T("r1"), T("r2"), A("final"), U("q2"), A("a2")] and not dropped
    msgs, dropped = normalize_turns([U("q"), T("early"), A("a"), T("late")])
    assert msgs == [U("q"), A("a")]
    assert sum(dropped.values()) == 2
    msgs, dropped = normalize_turns([U("q"), A("call"), T("r"), A("a"), U("q2"), A("a2")], max_rounds=1)
    assert msgs == [U("q"), A("call"), T("r"), A("a")] and dropped == {"beyond max_rounds": 2}


def _random_tool_conversation(rng: random.Random) -> list[dict[str, str]]:
    words = ["alpha", "beta", " gamma", "42", "{\"x\": 1}", "ünï", "\n", "tool out", "<tag>"]
    say = lambda: "".join(rng.choice(words) for _ in range(rng.randint(1, 6)))  # noqa: E731
    msgs = [S(say())] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 3)):
        msgs += [U(say()), A(say())]
        for _ in range(rng.randint(0, 2)):
            msgs += [T(say()) for _ in range(rng.randint(1, 2))] + [A(say())]
    return msgs


@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_tool_tokens_are_never_trained_and_assistant_spans_are_exactly_the_trained_set(tokenizer, method):
    rng = random.Random(14)
    with_tools = 0
    for _ in range(25):
        conv = _random_tool_conversation(rng)
        full_ids, lengths = prefix_lengths_reference(tokenizer, conv)
        spans, start = [], 0
        for m, end in zip(conv, lengths, strict=True):
            spans.append((m["role"], start, end))
            start = end
        feats = encode_conversation(conv, tokenizer, strategy="assistant", method=method, max_length=100_000)
        trained = {k for k, lab in enumerate(feats["labels"]) if lab != IGNORE_INDEX}
        assert trained == {k for role, s, e in spans if role == "assistant" for k in range(s, e)}
        tool_pos = {k for role, s, e in spans if role == "tool" for k in range(s, e)}
        assert not (trained & tool_pos)
        with_tools += bool(tool_pos)
        rev = encode_conversation(conv, tokenizer, strategy="reverse", method=method, max_length=100_000)
        text = tokenizer.decode([t for t, lab in zip(rev["input_ids"], rev["labels"], strict=True) if lab != IGNORE_INDEX])
        assert "<|im_start|>tool" not in text and "<|im_start|>user" in text
    assert with_tools >= 10


def test_sharegpt_observations_are_never_trained(four, tokenizer):
    res = load_mixture([{"path": str(four["share"]), "format": "sharegpt"}], seed=0)
    for conv in res.conversations:
        feats = encode_conversation(conv, tokenizer)
        trained = tokenizer.decode([t for t, lab in zip(feats["input_ids"], feats["labels"], strict=True)
                                    if lab != IGNORE_INDEX])
        assert "OBSERVED" not in trained and "sg a" in trained and '"name"' in trained


NO_TOOL_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
DROPPING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] in ['system', 'user', 'assistant'] %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
)


@pytest.mark.parametrize("template", [NO_TOOL_TEMPLATE, DROPPING_TEMPLATE], ids=["raises", "drops"])
def test_templates_without_a_tool_role_get_tool_turns_folded_and_counted(tokenizer, template):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    assert template_has_tool_role(tokenizer) and not template_has_tool_role(tok)
    convs = [[U("q"), A("call"), T("r1"), T("r2"), A("final")], [U("plain"), A("x")]]
    out, n = fit_to_template(convs, tok)
    assert n == 2
    assert out[0] == [U("q"), A("call"), U("r1\n\nr2"), A("final")] and out[1] == convs[1]
    assert fit_to_template(convs, tokenizer) == (convs, 0)  # chatml has a tool role: unchanged
    feats = encode_conversation(out[0], tok)
    trained = tok.decode([t for t, lab in zip(feats["input_ids"], feats["labels"], strict=True) if lab != IGNORE_INDEX])
    assert "r1" not in trained and "final" in trained
    assert fold_tool_turns([U("q"), A("c"), T("r"), U("next"), A("a")])[0] == [U("q"), A("c"), U("r\n\nnext"), A("a")]


def test_system_prompt_is_added_only_where_missing_and_counted(four):
    assert with_system_prompt([U("q"), A("a")], "X") == [S("X"), U("q"), A("a")]
    assert with_system_prompt([S("own"), U("q"), A("a")], "X") == [S("own"), U("q"), A("a")]
    res = load_mixture(_specs(four), seed=0, system_prompt="You are helpful.")
    convs = dict(zip(res.ids, res.conversations, strict=True))
    assert convs["smoltalk.jsonl:0"][0] == S("sys 0")
    assert convs["alpaca.json:3"][0] == S("alpaca system")
    assert convs["alpaca.json:0"][0] == S("You are helpful.") and convs["sg-0"][0] == S("You are helpful.")
    assert res.stats["system_prompt_added"] == 39 + 10 + 20
    assert {Path(s["path"]).name: s["system_prompt_added"] for s in res.stats["sources"]}["smoltalk.jsonl"] == 0


# ----------------------------------------------------------------------------- hub subset and split


def test_hub_specs_pass_path_subset_and_split_to_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"messages": [U("q"), A("a")]}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    res = load_mixture([{"path": "HuggingFaceTB/smoltalk", "name": "all"},
                        {"path": "HuggingFaceH4/ultrachat_200k", "split": "train_sft"}], seed=0)
    assert calls == [("HuggingFaceTB/smoltalk", "all", "train"), ("HuggingFaceH4/ultrachat_200k", None, "train_sft")]
    assert res.stats["sources"][1]["source"] == "HuggingFaceH4/ultrachat_200k [train_sft]"
    assert specs_fingerprint([{"path": "a/b", "name": "x"}]) != specs_fingerprint([{"path": "a/b", "name": "y"}])


def test_a_split_that_does_not_exist_lists_the_available_ones(monkeypatch, tmp_path):
    import datasets

    def fake_load(path, name=None, split=None, **kw):
        raise ValueError(f'Unknown split "{split}". Should be one of [\'train_sft\', \'test_sft\'].')

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda path, name=None, **kw: ["train_sft", "test_sft"])
    with pytest.raises(SftlabError) as e:
        load_mixture([{"path": "HuggingFaceH4/ultrachat_200k", "split": "train"}], seed=0)
    assert "no split 'train'" in str(e.value) and "train_sft, test_sft" in str(e.value)
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"messages": [U("q"), A("a")]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="split 'test' does not exist.*one split: train"):
        load_mixture([{"path": str(f), "split": "test"}], seed=0)


# ----------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize("value, fragments", [
    ([{"path": "x.jsonl", "format": "alpacca"}], ["data[0].format", "unknown format 'alpacca'", "did you mean 'alpaca'"]),
    ([{"path": "x.jsonl", "wieght": 2}], ["data[0]", "unknown key 'wieght'", "did you mean 'weight'"]),
    ([{"path": "x.jsonl", "weight": -1}], ["data[0].weight", ">= 0"]),
    ([{"format": "alpaca"}], ["data[0]", "no 'path'"]),
    ([{"path": "x.jsonl", "max_samples": 0}], ["data[0].max_samples"]),
    ([{"path": "x.jsonl", "columns": {"instrucion": "q"}}], ["unknown field 'instrucion'", "did you mean"]),
    ([], ["empty list"]),
    (42, ["source string or a list"]),
])
def test_bad_specs_are_one_line_config_errors(value, fragments):
    with pytest.raises(ConfigError) as e:
        parse_data_specs(value)
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg


def test_errors_name_the_key_they_come_from():
    with pytest.raises(ConfigError, match=r"^eval_data\[1\]\.weight must be"):
        parse_data_specs(["a.jsonl", {"path": "b.jsonl", "weight": "heavy"}], where="eval_data")


def test_all_zero_weights_and_an_empty_weighted_source_are_errors(four, tmp_path):
    with pytest.raises(ConfigError, match="weight 0"):
        load_mixture(_specs(four, smol=0, alpaca=0, share=0, parquet=0), seed=0)
    f = tmp_path / "none.jsonl"
    f.write_text(json.dumps({"messages": [U("no reply")]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable conversations"):
        load_mixture([{"path": str(f), "weight": 1}, {"path": str(four["smol"]), "weight": 1}], seed=0)


# ----------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftlab", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=600)


def test_preprocess_and_inspect_take_several_data_specs(four, tokenizer_dir, tmp_path):
    spec = json.dumps({"path": str(four["alpaca"]), "format": "alpaca", "max_samples": 5})
    proc = _cli("preprocess", "--data", spec, "--data", str(four["share"]), "--tokenizer", str(tokenizer_dir),
                "--output-dir", str(tmp_path / "pre"), "--no-progress", "--num-proc", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "read 16, kept 15" in proc.stderr  # the alpaca source stops reading after its max_samples
    assert "alpaca.json: read 5, kept 5, drawn 5" in proc.stdout and "sharegpt.json: read 11, kept 10" in proc.stdout
    proc = _cli("inspect", "--data", f"[{{path: {four['share']}, format: sharegpt}}]", "--tokenizer",
                str(tokenizer_dir), "--index", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OBSERVED-" in proc.stdout and "tool" in proc.stdout
    assert "[[" in proc.stdout and "OBSERVED" not in "".join(
        part.split("]]")[0] for part in proc.stdout.split("[[")[1:])


@pytest.mark.parametrize("spec, fragment", [
    ("{path: x.jsonl, format: csvv}", "unknown format 'csvv'"),
    ("{path: x.jsonl, weight: -2}", "weight must be"),
    ("{path: x.jsonl, split: [}", "not a valid YAML spec"),
])
def test_bad_specs_on_the_command_line_exit_2_with_one_line(spec, fragment, tokenizer_dir, tmp_path):
    proc = _cli("preprocess", "--data", spec, "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_a_directory_reads_json_jsonl_and_parquet_but_not_a_stray_csv(four, tmp_path):
    import shutil

    d = tmp_path / "dir"
    d.mkdir()
    shutil.copy(four["parquet"], d / "a.parquet")
    shutil.copy(four["smol"], d / "b.jsonl")
    (d / "notes.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    res = load_conversations(str(d))
    assert len(res.conversations) == 32 and res.ids[0] == "a.parquet:0"


@pytest.mark.parametrize("extra, fragments", [
    ("split: test", ["split 'test' does not exist", "one split: train"]),
    ("format: alpaca, columns: {instruction: question}", ["record 0", "missing column 'question'"]),
])
def test_data_errors_of_a_spec_on_the_command_line_exit_2_with_one_line(four, tokenizer_dir, tmp_path, extra, fragments):
    proc = _cli("preprocess", "--data", f"{{path: {four['alpaca']}, {extra}}}", "--tokenizer", str(tokenizer_dir),
                "--output-dir", str(tmp_path))
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(four["alpaca"]) in err and all(f in err for f in fragments), err


# ----------------------------------------------------------------------------- the training config


@pytest.mark.integration
def test_a_mixed_run_trains_with_eval_data_and_a_system_prompt(four, tiny_model_dir, tmp_path):
    """The issue's four sources train together in one run; the statistics name each source's count."""
    import yaml

    out = tmp_path / "train"
    cfg = {"model": str(tiny_model_dir), "data": _specs(four, alpaca=2), "eval_data": str(four["smol"]),
           "system_prompt": "Be brief.", "chat_template": "chatml", "model_max_length": 128, "max_steps": 2,
           "per_device_train_batch_size": 2, "total_batch_size": 4, "num_proc": 1, "dtype": "fp32",
           "save_steps": 100, "eval_strategy": "steps", "eval_steps": 2, "output_dir": str(out)}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    proc = _cli("train", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    drawn = {Path(s["path"]).name: s["drawn"] for s in stats["sources"]}
    # alpaca weighs 2, the others 1; the ShareGPT file (10 usable) bounds the mix: 10 + 20 + 10 + 10
    assert set(drawn) == {"smoltalk.jsonl", "alpaca.json", "sharegpt.json", "pc.parquet"} and all(drawn.values())
    assert drawn == {"smoltalk.jsonl": 10, "alpaca.json": 20, "sharegpt.json": 10, "pc.parquet": 10}
    assert stats["kept"] == sum(drawn.values())
    # every loaded conversation without a system message got the prompt (all but smoltalk and alpaca record 3)
    assert stats["system_prompt_added"] == 39 + 10 + 20
    # the held-out set is the smoltalk file, preprocessed on its own; nothing split off the training data
    eval_stats = json.loads((out / "eval_data" / "stats.json").read_text(encoding="utf-8"))
    assert eval_stats["kept"] == 12
    summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["num_eval_examples"] == 12 and summary["num_train_examples"] == stats["kept"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in m for m in metrics)


def test_bad_data_specs_in_a_training_config_are_one_line_errors(four, tiny_model_dir, tmp_path):
    import yaml

    for data, fragment in (([{"path": str(four["alpaca"]), "format": "alpacca"}], "alpacca"),
                           ([{"path": str(four["alpaca"]), "weight": -1}], "weight")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "data": data}), encoding="utf-8")
        proc = _cli("train", str(path))
        assert proc.returncode == 2 and fragment in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
