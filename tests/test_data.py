"""Loading, validation and normalisation of conversation data (sftlab.data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import A, S, U  # tests/ is on sys.path (rootdir-less test modules)

from sftlab.data import (
    DROP_LATE_SYSTEM,
    DROP_LEADING,
    DROP_MAX_ROUNDS,
    DROP_ORPHAN_ASSISTANT,
    DROP_REPLACED_USER,
    SKIP_NO_ROUND,
    SKIP_UNKNOWN_ROLES,
    conversation_shape,
    format_skips,
    iter_json_array_items,
    load_conversations,
    normalize_messages,
    normalize_turns,
)
from sftlab.errors import DataError, SftlabError

FIXTURES = Path(__file__).parent / "fixtures"


# ----------------------------------------------------------------------------- normalisation


def test_normalize_keeps_a_clean_conversation_unchanged():
    conv = [S("sys"), U("q1"), A("a1"), U("q2"), A("a2")]
    assert normalize_messages(conv) == conv
    # idempotent
    assert normalize_messages(normalize_messages(conv)) == conv


def test_normalize_maps_sharegpt_roles_and_aliases():
    turns = [
        {"from": "system", "value": "s"},
        {"from": "human", "value": "q1"},
        {"from": "gpt", "value": "a1"},
        {"from": "user", "value": "q2"},
        {"from": "bot", "value": "a2"},
        {"role": "User", "content": "q3"},  # case-insensitive
        {"role": "function_call", "content": "call"},  # LLaMA-Factory's tool call is the assistant's
        {"role": "observation", "content": "result"},  # ... and its observation is tool output
        {"from": "gpt", "value": "a3"},
    ]
    assert normalize_messages(turns) == [
        S("s"), U("q1"), A("a1"), U("q2"), A("a2"), U("q3"), A("call"), {"role": "tool", "content": "result"}, A("a3")
    ]


def test_normalize_drops_leading_non_user_turns_but_keeps_leading_systems():
    msgs, dropped = normalize_turns([A("stale"), A("stale2"), S("s1"), S("s2"), U("q"), A("a")])
    assert msgs == [S("s1"), S("s2"), U("q"), A("a")]
    assert dropped == {DROP_LEADING: 2}


def test_normalize_later_user_replaces_pending_and_orphan_assistant_is_dropped():
    msgs, dropped = normalize_turns([U("q1"), U("q1 again"), A("a1"), A("extra"), U("q2"), A("a2"), U("dangling")])
    assert msgs == [U("q1 again"), A("a1"), U("q2"), A("a2")]
    assert dropped == {DROP_REPLACED_USER: 2, DROP_ORPHAN_ASSISTANT: 1}


def test_normalize_drops_system_turns_after_the_first_user():
    msgs, dropped = normalize_turns([U("q1"), S("late"), A("a1")])
    assert msgs == [U("q1"), A("a1")]
    assert dropped == {DROP_LATE_SYSTEM: 1}


def test_normalize_max_rounds_keeps_the_first_rounds():
    conv = [S("s"), U("q1"), A("a1"), U("q2"), A("a2"), U("q3"), A("a3")]
    msgs, dropped = normalize_turns(conv, max_rounds=2)
    assert msgs == conv[:5]
    assert dropped == {DROP_MAX_ROUNDS: 2}
    assert normalize_messages(conv, max_rounds=1) == conv[:3]
    with pytest.raises(SftlabError):
        normalize_messages(conv, max_rounds=0)


@pytest.mark.parametrize(
    "turns",
    [[], [U("q")], [A("a")], [S("s")], [S("s"), A("a")], [A("a"), U("q")], [{"from": "bing", "value": "x"}]],
)
def test_normalize_returns_none_without_a_complete_round(turns):
    assert normalize_messages(turns) is None


def test_normalize_drops_unknown_roles():
    assert normalize_messages([U("q"), {"from": "bard", "value": "?"}, A("a")]) == [U("q"), A("a")]


@pytest.mark.parametrize(
    "messages, shape",
    [
        ([U("q"), A("a")], "single_turn"),
        ([S("s"), U("q"), A("a")], "single_turn"),
        ([S("s"), S("t"), U("q"), A("a")], "multi_turn"),
        ([U("q"), A("a"), U("q2"), A("a2")], "multi_turn"),
        ([U("q")], "multi_turn"),
        ([U("q"), A("a"), {"role": "tool", "content": "x"}], "multi_turn"),
    ],
)
def test_conversation_shape(messages, shape):
    assert conversation_shape(messages) == shape


# ----------------------------------------------------------------------------- sources


def test_load_sharegpt_like_json_counts_every_skip_and_drop():
    res = load_conversations(str(FIXTURES / "sharegpt_like.json"))
    assert res.ids == ["sg-1", "sg-2", "sg-3", "sg-5"]
    assert res.stats["records_read"] == 6
    assert res.stats["kept"] == 4
    assert res.stats["skipped"] == {SKIP_NO_ROUND: 1, SKIP_UNKNOWN_ROLES: 1}
    assert res.stats["dropped_turns"] == {
        DROP_LEADING: 1,
        DROP_REPLACED_USER: 1,
        DROP_ORPHAN_ASSISTANT: 1,
        "unknown role 'bard'": 1,
    }
    sg2 = res.conversations[1]
    assert [m["role"] for m in sg2] == ["user", "assistant", "user", "assistant"]
    assert sg2[2]["content"].startswith("Sorry, I mean")
    assert res.conversations[2][0] == S("You are a helpful travel agent.")


def test_format_skips_orders_by_count():
    assert format_skips({}) == "skipped 0"
    assert format_skips({"unknown role": 1, "no assistant reply": 2}) == "skipped 3: no assistant reply 2, unknown role 1"


def test_load_jsonl_with_messages_field_fallback_and_default_ids():
    res = load_conversations(str(FIXTURES / "smoltalk_like.jsonl"))  # field 'conversations' absent -> 'messages'
    assert res.stats["records_read"] == 8
    assert res.stats["kept"] == 7
    assert res.stats["skipped"] == {SKIP_NO_ROUND: 1}
    assert res.ids[0] == "smoltalk_like.jsonl:0"
    assert res.ids[3] == "unicode-1"
    assert res.ids[-1] == "smoltalk_like.jsonl:7"  # record 6 (the incomplete one) was skipped
    assert res.conversations[5] == [U("Say nothing."), A("")]


def test_jsonl_lines_split_on_newline_only(tmp_path):
    f = tmp_path / "d.jsonl"
    content = "line\u2028separator\x1cand\x85friends\r"
    f.write_text(json.dumps({"messages": [U(content), A("ok")]}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert load_conversations(str(f)).conversations == [[U(content), A("ok")]]


def test_custom_conversation_field(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"dialog": [U("q"), A("a")], "conversations": "ignored"}) + "\n", encoding="utf-8")
    assert load_conversations(str(f), conversation_field="dialog").conversations == [[U("q"), A("a")]]


def test_json_object_of_lists_and_directories(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.json").write_text(
        json.dumps({"train": [{"messages": [U("q1"), A("a1")]}], "extra": [{"messages": [U("q2"), A("a2")]}],
                    "meta": {"n": 2}}),
        encoding="utf-8",
    )
    (tmp_path / "sub" / "b.jsonl").write_text(json.dumps({"messages": [U("q3"), A("a3")]}) + "\n\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not data", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.json").write_text("broken", encoding="utf-8")
    res = load_conversations(str(tmp_path))
    assert [c[0]["content"] for c in res.conversations] == ["q1", "q2", "q3"]
    assert res.ids == ["a.json:train/0", "a.json:extra/0", "sub/b.jsonl:0"]


def test_max_samples_first_n_and_seeded_sample(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        "".join(json.dumps({"id": f"r{i}", "messages": [U(f"q{i}"), A(f"a{i}")]}) + "\n" for i in range(50)),
        encoding="utf-8",
    )
    first = load_conversations(str(f), max_samples=5)
    assert first.ids == [f"r{i}" for i in range(5)]
    assert first.stats["records_read"] == 5  # reading stops early
    s1 = load_conversations(str(f), max_samples=5, sample_seed=1)
    s1b = load_conversations(str(f), max_samples=5, sample_seed=1)
    s2 = load_conversations(str(f), max_samples=5, sample_seed=2)
    assert s1.ids == s1b.ids and len(s1.ids) == 5
    assert s1.ids != s2.ids
    assert s1.ids == sorted(s1.ids, key=lambda x: int(x[1:]))  # source order is kept
    assert s1.stats["records_read"] == 50


def test_strict_turns_skips_and_unknown_roles_into_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_conversations(str(FIXTURES / "smoltalk_like.jsonl"), strict=True)
    assert e.value.line == 7 and "no complete" in str(e.value)
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"conversations": [U("q"), {"from": "chatgpt", "value": "a"}, A("b")]}]), encoding="utf-8")
    assert load_conversations(str(f)).stats["dropped_turns"] == {"unknown role 'chatgpt'": 1}
    with pytest.raises(DataError, match="unknown role 'chatgpt'"):
        load_conversations(str(f), strict=True)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(SftlabError, match="cannot load hub dataset 'nobody-xyz/no-such-dataset'"):
        load_conversations("nobody-xyz/no-such-dataset")


# ----------------------------------------------------------------------------- malformed input


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


GOOD = json.dumps({"messages": [U("q"), A("a")]})


@pytest.mark.parametrize(
    "name, content, line, field, fragment",
    [
        ("bad.json", '[{"messages": [}]', 1, None, "invalid JSON"),
        ("bad.jsonl", GOOD + "\n" + GOOD + "\n{not json\n", 3, None, "invalid JSON"),
        ("notlist.jsonl", GOOD + "\n" + json.dumps({"messages": "hello"}) + "\n", 2, "messages", "must be a list"),
        ("norole.jsonl", json.dumps({"messages": [{"content": "q"}, A("a")]}) + "\n", 1, "messages[0].role", "no role"),
        ("nonstr.jsonl", json.dumps({"messages": [U("q"), {"role": "assistant", "content": 5}]}) + "\n", 1,
         "messages[1].content", "content must be a string"),
        ("nullval.json", json.dumps([{"conversations": [{"from": "human", "value": None}]}]), None,
         "conversations[0].value", "content must be a string"),
        ("bytes.jsonl", (GOOD + "\n").encode() + b'{"messages": "\xff\xfe"}\n', 2, None, "not valid UTF-8"),
        ("empty.jsonl", "", None, None, "empty"),
        ("blank.json", "  \n\n", None, None, "empty"),
        ("scalar.json", "42", None, None, "array or an object"),
        ("nofield.jsonl", json.dumps({"text": "hi"}) + "\n", 1, "conversations", "no 'conversations' or 'messages'"),
    ],
)
def test_malformed_files_raise_located_errors(tmp_path, name, content, line, field, fragment):
    p = _write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load_conversations(str(p))
    err = e.value
    assert err.path == str(p)
    assert err.line == line
    assert err.field == field
    assert fragment in str(err)
    assert "\n" not in str(err)


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_conversations(str(tmp_path / "missing.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .json or .jsonl"):
        load_conversations(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------- incremental JSON array reader


def test_incremental_reader_handles_items_across_chunks_and_truncation(tmp_path):
    items = [{"id": i, "text": "x" * (i * 37 % 200), "nested": {"u": "é🙂" * (i % 5)}} for i in range(60)]
    full = json.dumps(items, ensure_ascii=False, indent=1)
    p = _write(tmp_path, "a.json", full)
    assert list(iter_json_array_items(p, chunk_chars=64)) == items
    cut = _write(tmp_path, "cut.json", full[: len(full) * 2 // 3])
    notes: list[str] = []
    got = list(iter_json_array_items(cut, chunk_chars=50, allow_truncated_tail=True, notes=notes))
    assert got == items[: len(got)] and 0 < len(got) < len(items)
    assert len(notes) == 1 and "cut off" in notes[0]
    with pytest.raises(DataError, match="invalid JSON|unexpected end"):
        list(iter_json_array_items(cut, chunk_chars=50))


def test_bundled_sharegpt_is_read_incrementally_with_its_truncation_noted():
    res = load_conversations("sharegpt")
    st = res.stats
    assert st["records_read"] == 17671  # every complete record of the cut-off file
    assert st["kept"] + sum(st["skipped"].values()) == st["records_read"]
    assert any("cut off" in n for n in st["notes"])
    assert all(m["role"] in ("system", "user", "assistant") for c in res.conversations[:500] for m in c)
    # Strict does not treat the known truncation as an error (it is a property of the file),
    # but it does reject the records normalisation would skip.
    with pytest.raises(DataError):
        load_conversations("sharegpt", strict=True)
    head = load_conversations("sharegpt", max_samples=20)
    assert head.ids == res.ids[:20] and head.stats["records_read"] < 100
