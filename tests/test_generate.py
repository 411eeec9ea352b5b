"""Generation: batched == one-by-one greedy, stop tokens, resume after an interrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from sftlab.errors import DataError, SftlabError
from sftlab.eval.generate import (
    GenerationConfig,
    decode_response,
    end_of_turn_token,
    generate_responses,
    read_responses_file,
    render_prompt,
    stop_token_ids,
)


@pytest.fixture(scope="module")
def prompts(ifeval_dir):
    with open(ifeval_dir / "input_data.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f][:7]


@pytest.fixture(scope="module")
def chatty_model(tokenizer):
    """A tiny float32 Llama whose greedy outputs differ from prompt to prompt.

    With the default init (std 0.02) a 2-layer random model emits the same token forever, which
    would make the batching test pass trivially; std 0.1 gives context-dependent outputs.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, initializer_range=0.1)
    model = LlamaForCausalLM(cfg).float().eval()
    model.generation_config.eos_token_id = None  # only the tokenizer/template decide where turns end
    return model


def _reference_ids(model, tokenizer, prompts, n):
    """Greedy continuations straight from transformers' generate(), one prompt at a time."""
    from sftlab.eval.generate import encode_prompt

    out = []
    for p in prompts:
        ids = torch.tensor([encode_prompt(tokenizer, p)])
        out.append(model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist())
    return out


@pytest.mark.parametrize(("engine", "batch_size"), [("static", 3), ("continuous", 3), ("continuous", None)])
def test_batched_generation_matches_one_by_one(chatty_model, tokenizer, prompts, engine, batch_size):
    """The float32 path is exact: batch 3 over 7 prompts of different lengths (left padding, a ragged
    last batch), and rows that stop at different steps: a few tokens the model emits mid-answer are
    declared stop tokens, so the continuous engine must free slots, move the last live row into them,
    prefill waiting prompts (in length buckets) into the free slots and keep per-row positions.
    ``batch_size=None`` is the memory-aware default (all 7 at once here)."""
    n = 24
    ref_ids = _reference_ids(chatty_model, tokenizer, prompts, n)
    stops = sorted({ref_ids[i][3 + 5 * i] for i in range(3)})
    stop_at = [next((j for j, t in enumerate(r) if t in stops), None) for r in ref_ids]
    assert len({s for s in stop_at if s is not None}) >= 3 and None in stop_at  # varied finishing steps
    saved = chatty_model.generation_config.eos_token_id
    chatty_model.generation_config.eos_token_id = stops
    try:
        single, _ = generate_responses(chatty_model, tokenizer, prompts,
                                       GenerationConfig(max_new_tokens=n, batch_size=1, engine="static"),
                                       progress=False)
        batched, stats = generate_responses(chatty_model, tokenizer, prompts,
                                            GenerationConfig(max_new_tokens=n, batch_size=batch_size, engine=engine,
                                                             dtype="float32"), progress=False)
    finally:
        chatty_model.generation_config.eos_token_id = saved
    assert len(set(single)) == len(prompts), "outputs should differ per prompt, or this test proves nothing"
    assert batched == single
    assert (stats.engine, stats.dtype, stats.batch_size) == (engine, "float32", batch_size or len(prompts))
    for text, ids, s in zip(single, ref_ids, stop_at, strict=True):  # cut right before the stop token
        assert text == tokenizer.decode(ids[:s] if s is not None else ids, skip_special_tokens=True)


def test_end_of_turn_detected_from_template(tokenizer):
    # base SmolLM2 tokenizer: eos is <|endoftext|>, but a ChatML turn ends with <|im_end|>
    assert tokenizer.eos_token == "<|endoftext|>"
    assert end_of_turn_token(tokenizer) == "<|im_end|>"
    ids = stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids and tokenizer.eos_token_id in ids


def _force_token_at_step(model, token_id: int, step: int):
    """Hooks that add a huge logit to ``token_id`` in the forward that emits new token number ``step``
    (the prefill forwards, any number of them, emit token 1; each decoding forward one more).
    Returns ``(handles, calls)``; ``calls["decode"]`` counts decoding forwards."""
    calls = {"decode": 0, "is_decode": False}

    def see_input(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls["is_decode"] = ids is not None and ids.shape[1] == 1
        if calls["is_decode"]:
            calls["decode"] += 1

    def boost(module, inputs, output):
        if calls["is_decode"] and calls["decode"] == step - 1:
            output[:, -1, token_id] += 1e4
        return output

    handles = [model.model.register_forward_pre_hook(see_input, with_kwargs=True),
               model.lm_head.register_forward_hook(boost)]
    return handles, calls


def test_generation_stops_at_end_of_turn(chatty_model, tokenizer, prompts):
    """Force <|im_end|> as the 5th new token (via a hook on the logits): every response must be
    exactly the 4 tokens before it, with the stop token and everything after it stripped."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def run(n):
        return generate_responses(chatty_model, tokenizer, prompts[:3], GenerationConfig(max_new_tokens=n, batch_size=3),
                                  progress=False)[0]

    first4, free8 = run(4), run(8)
    handles, calls = _force_token_at_step(chatty_model, im_end, 5)
    try:
        out = run(8)
    finally:
        for h in handles:
            h.remove()
    assert calls["decode"] == 4, "generation must end as soon as every row has emitted <|im_end|>"
    assert out == first4  # the 4 tokens before the stop, nothing of the stop token or after it
    assert all(a != b for a, b in zip(out, free8, strict=True))


def test_bfloat16_path_runs_and_stops_at_end_of_turn(chatty_model, tokenizer, prompts, monkeypatch):
    """The bf16 path (what ``dtype: auto`` picks on a CPU with bf16 instructions) runs end to end and
    ends every response at its stop token: the token each row emits at some step of a free run is
    declared a stop token, and the rerun must stop exactly there (5 tokens per row: 4 + the stop)."""
    import copy

    import sftlab.eval.generate as gen_mod

    model = copy.deepcopy(chatty_model).to(torch.bfloat16)
    captured: dict[str, list[int]] = {}
    real_decode = gen_mod.decode_response

    def spy(tok, ids, stops):
        text, n = real_decode(tok, ids, stops)
        captured[text] = list(ids)
        return text, n

    monkeypatch.setattr(gen_mod, "decode_response", spy)
    cfg = GenerationConfig(max_new_tokens=8, batch_size=2, dtype="bfloat16")  # 3 prompts: one refill
    free, stats = generate_responses(model, tokenizer, prompts[:3], cfg, progress=False)
    assert (stats.engine, stats.dtype) == ("continuous", "bfloat16")
    assert len(set(free)) == 3, "outputs should differ per prompt, or this test proves nothing"
    ids = [captured[t] for t in free]
    # the stop tokens: each row's token at step j, none of them emitted by any row before step j
    for j in range(2, 7):
        stops = {x[j] for x in ids}
        if not any(set(r[:j]) & stops for r in ids):
            break
    else:
        pytest.fail("no clean stop step in the free run")
    model.generation_config.eos_token_id = sorted(stops)
    out, stats = generate_responses(model, tokenizer, prompts[:3], cfg, progress=False)
    assert out == [tokenizer.decode(r[:j], skip_special_tokens=True) for r in ids]
    assert stats.new_tokens == 3 * (j + 1)  # generation ended at the stop token of every row


def test_decode_response_cuts_at_first_stop(tokenizer):
    ids = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tail = tokenizer("junk", add_special_tokens=False)["input_ids"]
    text, n = decode_response(tokenizer, ids + [im_end] + tail, [im_end])
    assert text == "Hello world" and n == len(ids) + 1
    text, n = decode_response(tokenizer, ids, [im_end])  # no stop: ran to max_new_tokens
    assert text == "Hello world" and n == len(ids)


def test_system_prompt_and_generation_prompt(tokenizer):
    text = render_prompt(tokenizer, "Say hi.", "Be brief.")
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    assert "system" not in render_prompt(tokenizer, "Say hi.")


def test_resume_generates_only_missing_prompts(chatty_model, tokenizer, prompts, tmp_path, monkeypatch):
    out = tmp_path / "responses.jsonl"
    done = [{"key": 0, "prompt": prompts[0], "response": "SENTINEL-0"},
            {"key": 1, "prompt": prompts[1], "response": "SENTINEL-1"}]
    half = json.dumps({"key": 2, "prompt": prompts[2], "response": "cut off"})[:25]  # killed mid-write
    out.write_text("".join(json.dumps(r) + "\n" for r in done) + half, encoding="utf-8")

    import sftlab.eval.generate as gen_mod

    encoded = []
    real_encode = gen_mod.encode_prompt

    def counting_encode(tok, prompt, system_prompt=None):
        encoded.append(prompt)
        return real_encode(tok, prompt, system_prompt)

    monkeypatch.setattr(gen_mod, "encode_prompt", counting_encode)
    cfg = GenerationConfig(max_new_tokens=6, batch_size=2)
    got, stats = generate_responses(chatty_model, tokenizer, prompts[:5], cfg, out_path=out, progress=False,
                                    keys=[10, 11, 12, 13, 14])
    assert sorted(encoded) == sorted(prompts[2:5])  # the half-written one is regenerated, done ones are not
    assert (stats.n_reused, stats.n_generated) == (2, 3)
    assert got[:2] == ["SENTINEL-0", "SENTINEL-1"]
    records = read_responses_file(out)
    assert [r["prompt"] for r in records][:2] == prompts[:2]
    assert sorted(r["prompt"] for r in records) == sorted(prompts[:5])  # one line each, no duplicates
    assert {r["key"] for r in records[2:]} == {12, 13, 14}
    assert out.read_text(encoding="utf-8").endswith("\n")
    # a second rerun has nothing left to do
    encoded.clear()
    again, stats = generate_responses(chatty_model, tokenizer, prompts[:5], cfg, out_path=out, progress=False)
    assert encoded == [] and again == got and (stats.n_reused, stats.n_generated) == (5, 0)


def test_damaged_middle_line_is_an_error(tmp_path):
    out = tmp_path / "responses.jsonl"
    out.write_text('{"prompt": "a", "response": "b"}\n{not json\n{"prompt": "c", "response": "d"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"responses.jsonl:2"):
        read_responses_file(out)


def test_generation_config_validation():
    with pytest.raises(SftlabError, match="backend"):
        GenerationConfig(backend="tgi")
    with pytest.raises(SftlabError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def test_vllm_backend_without_vllm_is_a_clear_error(monkeypatch):
    import builtins

    from sftlab.eval.generate import require_vllm

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm":
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(SftlabError, match="--backend hf"):
        require_vllm()
