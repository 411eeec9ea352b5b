"""Loss masks (sftlab.prep.masking): strategies, truncation, the fast path against the reference,
the check-masking command against an independent oracle, and the inspect command."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
from helpers import A, S, U  # tests/ is on sys.path (rootdir-less test modules)

from sftlab.cli import main
from sftlab.data import load_conversations
from sftlab.errors import ConfigError
from sftlab.prep import masking
from sftlab.prep.masking import (
    IGNORE_INDEX,
    REVERSE_SYSTEM_PROMPT,
    encode_conversation,
    encode_conversation_with_info,
    encode_conversations_with_info,
    prefix_lengths_fast,
    prefix_lengths_reference,
)

FIXTURES = Path(__file__).parent / "fixtures"
GGUF_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


# ----------------------------------------------------------------------------- an independent oracle


def chatml_oracle(tok, messages, trained_roles, *, default_system: str | None = None):
    """Features by the spec, built segment by segment for ChatML-style templates.

    Each message renders as ``<|im_start|>role\\ncontent<|im_end|>\\n``; when ``default_system`` is
    given and the first message is not a system message, that system segment is rendered first
    and belongs to message 0's span (it is part of ``messages[:1]``'s rendering).
    """
    ids, labels = [], []
    for i, m in enumerate(messages):
        text = f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
        if i == 0 and default_system is not None and m["role"] != "system":
            text = f"<|im_start|>system\n{default_system}<|im_end|>\n" + text
        seg = tok(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if m["role"] in trained_roles else [IGNORE_INDEX] * len(seg)
    return {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)}


def reverse_oracle_messages(messages):
    roles = [m["role"] for m in messages]
    single = roles.count("user") == 1 and roles.count("assistant") == 1 and roles.count("system") <= 1 and len(roles) <= 3
    if single:
        sys_ = [m for m in messages if m["role"] == "system"]
        return sys_ + [m for m in messages if m["role"] == "assistant"] + [m for m in messages if m["role"] == "user"]
    if messages[0]["role"] != "system":
        return [S(REVERSE_SYSTEM_PROMPT), *messages]
    return list(messages)


def trained_text(tok, feats):
    return tok.decode([t for t, lab in zip(feats["input_ids"], feats["labels"], strict=True) if lab != IGNORE_INDEX])


@pytest.fixture(scope="module")
def gguf_template_tokenizer(tokenizer):
    """The real SmolLM2 tokenizer with the GGUF instruct model's template (adds a default system prompt)."""
    from sftlab.models.loading import load_tokenizer

    gguf_tok = load_tokenizer("smollm2-135m-instruct-gguf")
    assert GGUF_DEFAULT_SYSTEM in gguf_tok.chat_template
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = gguf_tok.chat_template
    return {"base_with_gguf_template": tok, "gguf": gguf_tok}


# ----------------------------------------------------------------------------- strategies


CONV_SINGLE = [U("What is 7 times 6?"), A("It is 42.")]
CONV_SINGLE_SYS = [S("Be brief."), U("What is 7 times 6?"), A("42.")]
CONV_MULTI = [U("Hi there"), A("Hello! How can I help?"), U("Name a planet."), A("Mars.")]
CONV_MULTI_SYS = [S("You are terse."), U("1+1?"), A("2"), U("2+2?"), A("4")]


@pytest.mark.parametrize("conv", [CONV_SINGLE, CONV_SINGLE_SYS, CONV_MULTI, CONV_MULTI_SYS], ids=["st", "st-sys", "mt", "mt-sys"])
@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_assistant_strategy_matches_the_oracle(tokenizer, conv, method):
    feats = encode_conversation(conv, tokenizer, strategy="assistant", method=method)
    assert feats == chatml_oracle(tokenizer, conv, {"assistant"})
    expected = "".join(f"<|im_start|>assistant\n{m['content']}<|im_end|>\n" for m in conv if m["role"] == "assistant")
    assert trained_text(tokenizer, feats) == expected


@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_reverse_single_turn_is_reordered_and_trains_on_the_user(tokenizer, method):
    for conv, order in ((CONV_SINGLE, ["assistant", "user"]), (CONV_SINGLE_SYS, ["system", "assistant", "user"])):
        feats = encode_conversation(conv, tokenizer, strategy="reverse", method=method)
        reordered = reverse_oracle_messages(conv)
        assert [m["role"] for m in reordered] == order
        assert feats == chatml_oracle(tokenizer, reordered, {"user"})
        assert trained_text(tokenizer, feats) == f"<|im_start|>user\n{conv[-2]['content']}<|im_end|>\n"
        assert REVERSE_SYSTEM_PROMPT not in tokenizer.decode(feats["input_ids"])


@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_reverse_multi_turn_prepends_the_state_predictor_prompt_only_without_system(tokenizer, method):
    feats = encode_conversation(CONV_MULTI, tokenizer, strategy="reverse", method=method)
    assert feats == chatml_oracle(tokenizer, [S(REVERSE_SYSTEM_PROMPT), *CONV_MULTI], {"user"})
    assert tokenizer.decode(feats["input_ids"]).startswith(f"<|im_start|>system\n{REVERSE_SYSTEM_PROMPT}<|im_end|>")
    assert trained_text(tokenizer, feats) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>user\nName a planet.<|im_end|>\n"
    feats = encode_conversation(CONV_MULTI_SYS, tokenizer, strategy="reverse", method=method)
    assert feats == chatml_oracle(tokenizer, CONV_MULTI_SYS, {"user"})


def test_shape_decides_not_the_label(tokenizer):
    # Two system messages make a conversation multi-turn: no reordering, no extra prompt.
    conv = [S("one"), S("two"), U("q"), A("a")]
    feats = encode_conversation(conv, tokenizer, strategy="reverse")
    assert feats == chatml_oracle(tokenizer, conv, {"user"})
    _, info = encode_conversation_with_info(conv, tokenizer, strategy="reverse")
    assert info.shape == "multi_turn"


def test_gguf_template_default_system_prompt_belongs_to_the_first_message(gguf_template_tokenizer):
    for tok in gguf_template_tokenizer.values():
        for conv in (CONV_SINGLE, CONV_MULTI, CONV_MULTI_SYS):
            for method in ("fast", "prefix"):
                feats = encode_conversation(conv, tok, strategy="assistant", method=method)
                assert feats == chatml_oracle(tok, conv, {"assistant"}, default_system=GGUF_DEFAULT_SYSTEM)
                rev = encode_conversation(conv, tok, strategy="reverse", method=method)
                assert rev == chatml_oracle(tok, reverse_oracle_messages(conv), {"user"}, default_system=GGUF_DEFAULT_SYSTEM)


# ----------------------------------------------------------------------------- truncation


def _spans(tok, conv, strategy):
    """(start, end) token spans of each rendered message, by the reference definition."""
    rendered, _ = masking.apply_strategy(conv, strategy)
    _, lengths = prefix_lengths_reference(tok, rendered)
    return list(zip([0, *lengths[:-1]], lengths, strict=True)), rendered


@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_right_truncation_keeps_the_first_tokens_of_a_span_cut_in_the_middle(tokenizer, method):
    conv = [U("Tell me about the moon."), A("The moon orbits the earth " * 10)]
    full = encode_conversation(conv, tokenizer, max_length=10_000, method=method)
    (us, ue), (as_, ae) = _spans(tokenizer, conv, "assistant")[0]
    cut = as_ + (ae - as_) // 2
    feats = encode_conversation(conv, tokenizer, max_length=cut, truncation="right", method=method)
    assert feats == {k: v[:cut] for k, v in full.items()}
    assert all(lab == IGNORE_INDEX for lab in feats["labels"][:as_])
    assert feats["labels"][as_:] == feats["input_ids"][as_:]  # the cut span keeps its surviving tokens
    assert len(feats["input_ids"]) == cut


@pytest.mark.parametrize("strategy", ["assistant", "reverse"])
@pytest.mark.parametrize("method", ["fast", "prefix"])
def test_left_truncation_keeps_the_last_tokens_of_a_span_cut_in_the_middle(tokenizer, strategy, method):
    conv = [U("Please summarise: " + "lorem ipsum dolor " * 12), A("Lorem ipsum, briefly."),
            U("And once more, " + "sit amet " * 8), A("Sit amet.")]
    full = encode_conversation(conv, tokenizer, strategy=strategy, max_length=10_000, method=method)
    spans, rendered = _spans(tokenizer, conv, strategy)
    n = len(full["input_ids"])
    # Cut inside the third rendered message, a user turn in the assistant strategy (masked) and
    # (with the prepended system) the second user turn... whichever: check every surviving token.
    s, e = spans[2]
    start = s + (e - s) // 2
    feats = encode_conversation(conv, tokenizer, strategy=strategy, max_length=n - start, truncation="left", method=method)
    assert feats == {k: v[start:] for k, v in full.items()}
    trained_role = "assistant" if strategy == "assistant" else "user"
    for (ms, me), m in zip(spans, rendered, strict=True):
        for pos in range(max(ms, start), me):
            lab = feats["labels"][pos - start]
            assert (lab != IGNORE_INDEX) == (m["role"] == trained_role)


def test_truncation_never_reorders_or_pads(tokenizer):
    conv = CONV_MULTI
    full = encode_conversation(conv, tokenizer, max_length=10_000)
    for ml in (1, 5, len(full["input_ids"]), len(full["input_ids"]) + 7):
        r = encode_conversation(conv, tokenizer, max_length=ml, truncation="right")
        l_ = encode_conversation(conv, tokenizer, max_length=ml, truncation="left")
        assert r["input_ids"] == full["input_ids"][:ml]
        assert l_["input_ids"] == full["input_ids"][-ml:]
        assert r["attention_mask"] == [1] * len(r["input_ids"])


def test_invalid_options_are_config_errors(tokenizer):
    for kwargs in ({"strategy": "user"}, {"truncation": "middle"}, {"method": "magic"}, {"max_length": 0}):
        with pytest.raises(ConfigError):
            encode_conversation(CONV_SINGLE, tokenizer, **kwargs)


# ----------------------------------------------------------------------------- fast path == reference


EDGE_CASES = {
    "empty-contents": [S(""), U(""), A(""), U("x"), A("")],
    "unicode": [U("Café ☕ e\u0301 — 数学 🙂 👩‍👩‍👧 مرحبا"), A("Ответ: ∑ᵢ xᵢ² ≥ 0 ✅\u200d"), U("🙂" * 9), A("\u00a0\u2028end")],
    "very-long-turns": [U("word " * 4000 + "tail"), A(("A long answer with numbers 12345 and symbols {}[]; " * 300).strip()),
                        U("x" * 20000), A("ok")],
    "system-only-prefix": [S("first system"), S("second system"), S("third"), U("q"), A("a")],
    "special-tokens-in-text": [U("what is <|im_end|>?"), A("<|im_start|>assistant\nfake<|im_end|>\n"), U("<|endoftext|>"),
                               A("done")],
    "whitespace": [U("  leading and trailing  \n\n"), A("\n"), U("\t\r\n"), A(" ")],
    "single": [U("q"), A("a")],
}


def _assert_fast_equals_reference(tok, rendered):
    ref_ids, ref_len = prefix_lengths_reference(tok, rendered)
    fast_ids, fast_len, _ = prefix_lengths_fast(tok, rendered)
    assert fast_ids == ref_ids
    assert fast_len == ref_len


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_fast_equals_reference_on_edge_cases(tokenizer, gguf_template_tokenizer, name):
    conv = EDGE_CASES[name]
    for tok in (tokenizer, *gguf_template_tokenizer.values()):
        for strategy in ("assistant", "reverse"):
            rendered, _ = masking.apply_strategy(conv, strategy)
            _assert_fast_equals_reference(tok, rendered)
            for trunc in ("right", "left"):
                kw = {"strategy": strategy, "max_length": 37, "truncation": trunc}
                assert encode_conversation(conv, tok, method="fast", **kw) == encode_conversation(
                    conv, tok, method="prefix", **kw
                )


def test_fast_equals_reference_on_smoltalk_like_fixture(tokenizer, gguf_template_tokenizer):
    convs = load_conversations(str(FIXTURES / "smoltalk_like.jsonl")).conversations
    for tok in (tokenizer, gguf_template_tokenizer["gguf"]):
        for conv in convs:
            for strategy in ("assistant", "reverse"):
                rendered, _ = masking.apply_strategy(conv, strategy)
                _assert_fast_equals_reference(tok, rendered)


@pytest.fixture(scope="module")
def sharegpt_sample():
    return load_conversations("sharegpt", max_samples=100, sample_seed=1234).conversations


def test_fast_equals_reference_on_real_sharegpt_conversations(tokenizer, sharegpt_sample):
    """Property test on 100 real ShareGPT conversations (78% multi-turn), both strategies."""
    n_multi = 0
    for i, conv in enumerate(sharegpt_sample):
        strategy = ("assistant", "reverse")[i % 2]
        rendered, _ = masking.apply_strategy(conv, strategy)
        ref_ids, ref_len = prefix_lengths_reference(tokenizer, rendered)
        fast_ids, fast_len, fallbacks = prefix_lengths_fast(tokenizer, rendered)
        assert (fast_ids, fast_len) == (ref_ids, ref_len), f"conversation {i}"
        assert fallbacks == 0  # chatml boundaries always fall on <|im_start|>
        n_multi += len(conv) > 3
        trunc = ("right", "left")[i % 3 % 2]
        kw = {"strategy": strategy, "max_length": 512, "truncation": trunc}
        assert encode_conversation(conv, tokenizer, method="fast", **kw) == encode_conversation(
            conv, tokenizer, method="prefix", **kw
        )
    assert n_multi > 40


def test_fast_equals_reference_with_the_gguf_tokenizer_on_sharegpt(gguf_template_tokenizer, sharegpt_sample):
    tok = gguf_template_tokenizer["gguf"]
    for conv in sharegpt_sample[:30]:
        for strategy in ("assistant", "reverse"):
            rendered, _ = masking.apply_strategy(conv, strategy)
            _assert_fast_equals_reference(tok, rendered)


@pytest.mark.parametrize("template", ["chatml", "not-prefix-stable"])
def test_batched_encoding_equals_one_conversation_at_a_time(tokenizer, sharegpt_sample, template):
    """One batched tokenisation (what preprocessing runs) gives each conversation exactly the
    features and info it gets alone, including conversations whose boundaries fall back."""
    tok = tokenizer
    if template != "chatml":
        tok = copy.deepcopy(tokenizer)
        tok.chat_template = LAST_DIFFERS_TEMPLATE
    convs = [*EDGE_CASES.values(), *sharegpt_sample[:40]]
    for strategy, trunc in (("assistant", "right"), ("reverse", "left")):
        kw = {"strategy": strategy, "max_length": 300, "truncation": trunc}
        batched = encode_conversations_with_info(convs, tok, **kw)
        alone = [encode_conversation_with_info(c, tok, **kw) for c in convs]
        assert batched == alone
        assert [f for f, _ in batched] == [encode_conversation(c, tok, method="prefix", **kw) for c in convs]
    fallbacks = sum(info.fallback_boundaries for _, info in batched)
    assert (fallbacks > 0) == (template != "chatml")


def test_a_bad_conversation_fails_the_batch_before_any_encoding(tokenizer):
    good = EDGE_CASES[sorted(EDGE_CASES)[0]]
    with pytest.raises(Exception, match="message 1"):
        encode_conversations_with_info([good, [U("hi"), {"role": "assistant", "content": 3}]], tokenizer)


PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
# Not prefix-stable: the last message ends with <|endoftext|>, earlier ones with <|im_end|>.
LAST_DIFFERS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if loop.last %}<|endoftext|>{% else %}<|im_end|>\n{% endif %}{% endfor %}"
)


@pytest.mark.parametrize("template", [PLAIN_TEMPLATE, LAST_DIFFERS_TEMPLATE], ids=["plain-text", "not-prefix-stable"])
def test_unsafe_templates_fall_back_to_the_reference_and_say_so(tokenizer, sharegpt_sample, caplog, monkeypatch, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    monkeypatch.setattr(masking, "_warned_templates", set())
    total_fallbacks = 0
    with caplog.at_level(logging.WARNING, logger="sftlab.prep.masking"):
        for conv in [*EDGE_CASES.values(), *sharegpt_sample[:8]]:
            for strategy in ("assistant", "reverse"):
                rendered, _ = masking.apply_strategy(conv, strategy)
                ref = prefix_lengths_reference(tok, rendered)
                fast_ids, fast_len, fallbacks = prefix_lengths_fast(tok, rendered)
                assert (fast_ids, fast_len) == ref
                total_fallbacks += fallbacks
                kw = {"strategy": strategy, "max_length": 64}
                assert encode_conversation(conv, tok, **kw) == encode_conversation(conv, tok, method="prefix", **kw)
    assert total_fallbacks > 0
    warnings = [r for r in caplog.records if "fast path" in r.getMessage()]
    assert len(warnings) == 1  # said once per template


# ----------------------------------------------------------------------------- check-masking


def _oracle_golden(tok, samples_path: Path, strategy: str, max_length: int, pad: int) -> dict:
    samples = json.loads(samples_path.read_text(encoding="utf-8"))
    out: dict = {"meta": {"strategy": strategy, "max_length": max_length, "truncation": "right"}}
    for split in ("single_turn", "multi_turn"):
        rows = []
        for s in samples[split]:
            msgs = [{"role": {"human": "user", "gpt": "assistant"}.get(m.get("from"), m.get("role")),
                     "content": m.get("content", m.get("value"))} for m in s["messages"]]
            if strategy == "reverse":
                msgs = reverse_oracle_messages(msgs)
            f = chatml_oracle(tok, msgs, {"assistant"} if strategy == "assistant" else {"user"})
            f = {k: v[:max_length] for k, v in f.items()}
            extra = max_length - len(f["input_ids"])
            f = {"input_ids": f["input_ids"] + [pad] * extra, "labels": f["labels"] + [IGNORE_INDEX] * extra,
                 "attention_mask": f["attention_mask"] + [0] * extra}
            rows.append({"id": s["id"], "features": f})
        out[split] = rows
    return out


@pytest.mark.parametrize("strategy", ["assistant", "reverse"])
def test_check_masking_passes_against_an_independent_oracle(tokenizer, tokenizer_dir, tmp_path, capsys, strategy):
    samples = FIXTURES / "masking_samples.json"
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(_oracle_golden(tokenizer, samples, strategy, 48, tokenizer.pad_token_id)))
    rc = main(["check-masking", "--samples", str(samples), "--golden", str(golden), "--tokenizer", str(tokenizer_dir),
               "--chat-template", "chatml", "--strategy", strategy, "--max-length", "48"])
    out = capsys.readouterr().out
    assert "single_turn: 3/3 match" in out and "multi_turn: 3/3 match" in out
    assert rc == 0


def test_check_masking_write_golden_and_report_the_first_difference(tokenizer_dir, tmp_path, capsys):
    samples = FIXTURES / "masking_samples.json"
    golden = tmp_path / "golden.json"
    common = ["--samples", str(samples), "--tokenizer", str(tokenizer_dir), "--chat-template", "chatml",
              "--strategy", "assistant", "--max-length", "40"]
    assert main(["check-masking", *common, "--method", "prefix", "--write-golden", str(golden)]) == 0
    g = json.loads(golden.read_text())
    assert g["meta"]["strategy"] == "assistant" and len(g["single_turn"]) == 3
    assert all(len(r["features"]["input_ids"]) == 40 for r in g["single_turn"] + g["multi_turn"])
    capsys.readouterr()
    assert main(["check-masking", *common, "--golden", str(golden)]) == 0  # fast path vs reference golden
    assert "multi_turn: 3/3 match" in capsys.readouterr().out

    row = next(r for r in g["multi_turn"] if r["id"] == "mt-system")
    row["features"]["labels"][7] = 12345
    golden.write_text(json.dumps(g))
    assert main(["check-masking", *common, "--golden", str(golden)]) == 1
    out = capsys.readouterr().out
    assert "single_turn: 3/3 match" in out and "multi_turn: 2/3 match" in out
    assert "mt-system" in out and "field labels" in out and "position 7" in out


def test_check_masking_malformed_samples_is_a_one_line_user_error(tokenizer_dir, tmp_path, capsys):
    bad = tmp_path / "samples.json"
    bad.write_text(json.dumps({"single_turn": [{"id": "x", "messages": [{"role": "user", "content": 3}]}]}))
    rc = main(["check-masking", "--samples", str(bad), "--golden", str(bad), "--tokenizer", str(tokenizer_dir),
               "--strategy", "assistant"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and str(bad) in err and "single_turn[0].messages" in err


# ----------------------------------------------------------------------------- inspect


def test_inspect_marks_trained_tokens_with_brackets_when_piped(tokenizer_dir, capsys):
    rc = main(["inspect", "--data", str(FIXTURES / "smoltalk_like.jsonl"), "--tokenizer", str(tokenizer_dir),
               "--chat-template", "chatml", "--index", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[[<|im_start|>assistant\nSoft rain on the roof" in out
    assert "<|im_start|>user\nNow one about snow, in French.<|im_end|>\n[[<|im_start|>assistant\nNeige" in out
    body = out.split("\n", 1)[1]  # after the header line, which explains the marks
    assert body.count("[[") == 2 and body.count("]]") == 2 and "\x1b[" not in out
    assert "multi-turn" in out and "trained:" in out and "tokens:" in out


def test_inspect_colours_when_asked_and_lists_tokens(tokenizer_dir, capsys):
    rc = main(["inspect", "--data", str(FIXTURES / "sharegpt_like.json"), "--tokenizer", str(tokenizer_dir),
               "--chat-template", "chatml", "--masking", "reverse", "--color", "always", "--tokens", "--max-length", "30"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "\x1b[32m" in out or "\x1b[92m" in out
    assert "[[" not in out
    assert "truncated from" in out
    table = out.split("pos      id  label  text\n", 1)[1].splitlines()
    assert len(table) == 30 and all(ln.split()[0].isdigit() for ln in table)
