"""Self-distilled replies (``augment.replies: model``): the model answers each single-turn prompt itself
before augmentation; what cannot be answered within the limits is dropped and counted; answers are
cached per model and settings; a training config with it trains end to end.

The answering model is a tiny Llama wired by hand so that its greedy answer is known: its layers add
nothing (zero output projections), so the logits depend only on the current token, and the head maps
the generation prompt's last token to ``Hello`` and ``Hello`` to ``<|im_end|>``.
"""

from __future__ import annotations

import json

import pytest
import yaml

from sftlab.augment import AugmentConfig
from sftlab.augment.replies import (
    SKIP_MULTI_TURN,
    SKIP_PROMPT_TOO_LONG,
    SKIP_UNFINISHED,
    cache_file,
    reply_settings,
    self_distill,
    single_turn_prompt,
)
from sftlab.data import LoadResult
from sftlab.errors import ConfigError

WORD = "Hello"


def _answering_llama(tokenizer, out_dir, *, word=WORD, loop=False):
    import torch
    from helpers import tiny_llama

    from sftlab.eval.generate import encode_prompt

    model = tiny_llama(tokenizer, tie_word_embeddings=False)
    last = encode_prompt(tokenizer, "any question")[-1]  # the generation prompt's last token ("\n")
    word = tokenizer.convert_tokens_to_ids(word)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb[last] = 0.0
        emb[last, 0] = 1.0
        emb[word] = 0.0
        emb[word, 1] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[word, 0] = 1.0
        head[word if loop else end, 1] = 1.0  # loop: the word again and again, never the end
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def answering_dir(tokenizer, tmp_path_factory):
    return _answering_llama(tokenizer, tmp_path_factory.mktemp("answering"))


def _loaded(convs):
    return LoadResult(conversations=[list(c) for c in convs], ids=[f"c{i}" for i in range(len(convs))],
                      stats={"skipped": {}, "notes": []})


def U(t):
    return {"role": "user", "content": t}


def A(t):
    return {"role": "assistant", "content": t}


def S(t):
    return {"role": "system", "content": t}


def test_single_turn_prompt_reads_user_and_system():
    assert single_turn_prompt([U("q"), A("a")]) == ("q", None)
    assert single_turn_prompt([S("s"), U("q"), A("a")]) == ("q", "s")
    assert single_turn_prompt([U("q"), A("a"), U("q2"), A("a2")]) is None
    assert single_turn_prompt([U("q")]) is None


def test_the_model_answers_and_what_cannot_be_answered_is_counted(answering_dir, tokenizer):
    convs = [[U("What is two plus two?"), A("Four, of course.")],
             [S("Be brief."), U("Name a colour."), A("Sure, here's one: blue.")],
             [U("q1"), A("a1"), U("q2"), A("a2")],
             [U("word " * 300), A("long prompt")]]
    loaded = _loaded(convs)
    stats = self_distill(loaded, str(answering_dir), tokenizer, max_length=128, max_new_tokens=16, progress=False)
    assert loaded.conversations == [[U("What is two plus two?"), A(WORD)],
                                    [S("Be brief."), U("Name a colour."), A(WORD)]]
    assert loaded.ids == ["c0", "c1"]  # ids stay with their conversations
    assert stats.replaced == 2 and stats.generated == 2 and stats.reused == 0
    assert stats.skipped == {SKIP_MULTI_TURN: 1, SKIP_PROMPT_TOO_LONG: 1}
    assert loaded.stats["replies"]["replaced"] == 2
    assert "2 answered by the model" in stats.format()


def test_answers_are_cached_and_reused_without_loading_the_model(answering_dir, tokenizer, monkeypatch):
    import sftlab.augment.replies as replies

    convs = [[U("First question?"), A("x")], [U("Second question?"), A("y")]]
    self_distill(_loaded(convs), str(answering_dir), tokenizer, max_length=128, max_new_tokens=16, progress=False)

    def no_model(*a, **k):
        raise AssertionError("every answer is cached: the model must not be loaded")

    monkeypatch.setattr(replies, "_load", no_model)
    again = _loaded(convs)
    stats = self_distill(again, str(answering_dir), tokenizer, max_length=128, max_new_tokens=16, progress=False)
    assert stats.generated == 0 and stats.reused == 2
    assert [c[-1]["content"] for c in again.conversations] == [WORD, WORD]
    lines = cache_file(reply_settings(str(answering_dir), tokenizer, 16)).read_text(encoding="utf-8").splitlines()
    assert {json.loads(x)["prompt"] for x in lines} >= {"First question?", "Second question?"}


def test_an_answer_that_does_not_end_is_dropped(tokenizer, tmp_path):
    """A model that repeats " Hello" forever: a cut answer is never trained on."""
    looping = _answering_llama(tokenizer, tmp_path / "looping", word="\u0120Hello", loop=True)
    loaded = _loaded([[U("Tell me a story."), A("Once upon a time.")], [U("Another one?"), A("No.")]])
    stats = self_distill(loaded, str(looping), tokenizer, max_length=128, max_new_tokens=4, progress=False)
    assert stats.skipped == {SKIP_UNFINISHED: 2} and stats.replaced == 0 and loaded.conversations == []


def test_new_weights_mean_new_answers(answering_dir, tokenizer, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(answering_dir, copy)
    before = reply_settings(str(copy), tokenizer, 16)
    assert reply_settings(str(copy), tokenizer, 16) == before
    assert reply_settings(str(copy), tokenizer, 32) != before
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"")  # rewritten: a new modification time
    import os

    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert reply_settings(str(copy), tokenizer, 16) != before


def test_bad_reply_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="replies must be one of dataset, model"):
        AugmentConfig(replies="teacher")
    with pytest.raises(ConfigError, match="reply_max_new_tokens must be a positive integer"):
        AugmentConfig(reply_max_new_tokens=0)
    assert AugmentConfig().replies == "dataset"


def test_self_distilled_config_trains_end_to_end(answering_dir, tmp_path, cli):
    data = tmp_path / "convs.jsonl"
    convs = [[U(f"Question number {i}: what should I write about topic {i}?"), A(f"Dataset answer {i}.")]
             for i in range(12)] + [[U("q"), A("a"), U("q2"), A("a2")]]
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    out = tmp_path / "train"
    cfg = {"model": str(answering_dir), "data": str(data), "chat_template": "chatml", "model_max_length": 96,
           "max_steps": 2, "per_device_train_batch_size": 2, "total_batch_size": 2, "eval_fraction": 0.0,
           "num_proc": 1, "dtype": "fp32", "save_steps": 100, "output_dir": str(out), "truncation": "drop",
           "augment": {"max_instructions": 1, "replies": "model", "reply_max_new_tokens": 16}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = cli("train", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "self-distilled replies" in proc.stdout
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["replies"]["replaced"] == 12 and stats["replies"]["skipped"] == {SKIP_MULTI_TURN: 1}
    assert stats["augment"]["conversations_in"] == 12
    # The report's data section says where the replies came from.
    from sftlab.experiment.typesplit import type_split
    from sftlab.report.data import constraints_sentence

    sentence = constraints_sentence(type_split(out), stats)
    assert (f"The replies are the model's own: `{answering_dir}` answered 12 of 13 prompts greedily (up to 16 new "
            f"tokens) before augmentation; dropped: {SKIP_MULTI_TURN} 1.") in sentence


def test_augment_cli_answers_with_the_model(answering_dir, tmp_path, cli):
    data = tmp_path / "convs.jsonl"
    convs = [[U(f"Please write something about subject {i}."), A(f"Dataset answer {i}.")] for i in range(6)]
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    out = tmp_path / "aug.jsonl"
    proc = cli("augment", "--data", str(data), "--output", str(out), "--replies-from", str(answering_dir),
               "--reply-max-new-tokens", "8", "--max-length", "128", "--max-instructions", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 answered by the model" in proc.stderr
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 6 and all("Dataset answer" not in r["messages"][-1]["content"] for r in records)
    stats = json.loads((tmp_path / "aug.stats.json").read_text(encoding="utf-8"))
    assert stats["data"]["replies"]["replaced"] == 6 and stats["config"]["replies"] == "model"
    bad = cli("augment", "--data", str(data), "--output", str(out), "--replies-from", str(answering_dir),
              "--reply-max-new-tokens", "0")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    alone = cli("augment", "--data", str(data), "--output", str(out), "--max-length", "512")
    assert alone.returncode == 2 and "--max-length has no effect without --replies-from" in alone.stderr


def test_the_preprocessing_cache_key_names_the_answering_model(answering_dir, tiny_model_dir, tokenizer, tmp_path):
    from sftlab.prep.pipeline import PreprocessConfig, cache_key_inputs

    def key(model, replies="model"):
        cfg = PreprocessConfig(data=str(tmp_path), tokenizer=str(model), chat_template="chatml", num_proc=1,
                               augment={"replies": replies}, model=str(model))
        return cache_key_inputs(cfg, tokenizer, {"data": "same"})

    assert key(answering_dir)["replies"]["model"]["path_or_id"] == str(answering_dir)
    assert key(answering_dir) != key(tiny_model_dir)  # another model's answers: another cache
    assert "replies" not in key(answering_dir, replies="dataset")
    with pytest.raises(ConfigError, match="needs the model that answers"):
        PreprocessConfig(data=str(tmp_path), tokenizer=str(answering_dir), augment={"replies": "model"}).validate()
