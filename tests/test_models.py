"""Model loading (sftlab.models.loading) on the real offline weights: SmolLM2-135M-Instruct as a GGUF file."""

from __future__ import annotations

import json

import pytest

from sftlab.models.loading import GGUF_ALIAS, load_model, load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def gguf_model():
    return load_model(GGUF_ALIAS)


def test_gguf_alias_resolves_to_the_installed_file():
    src = resolve_model(GGUF_ALIAS)
    assert src.gguf_file and src.gguf_file.endswith(".gguf")


@pytest.mark.integration
def test_gguf_weights_load_as_an_ordinary_float_model(gguf_model, tmp_path):
    """transformers keeps a GGUF quantizer on the dequantised model; sftlab detaches it so the
    Trainer accepts the model and a saved checkpoint is a plain float one that reloads identically."""
    import torch
    from transformers import AutoModelForCausalLM

    model = gguf_model
    assert getattr(model, "hf_quantizer", None) is None
    assert not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert sum(p.numel() for p in model.parameters()) > 100_000_000  # the real 135M model, not a toy

    model.save_pretrained(tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    name, weight = next(iter(model.state_dict().items()))
    assert torch.equal(again.state_dict()[name], weight)


@pytest.mark.integration
def test_gguf_model_answers_a_simple_question_greedily(gguf_model):
    """End to end on real weights: the GGUF tokenizer's own chat template, greedy decoding, stop at
    the end-of-turn token. An instruction-tuned 135M model gets 2 + 2 right."""
    import torch

    tok = load_tokenizer(GGUF_ALIAS)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2? Answer with a number."}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = gguf_model.generate(**ids, max_new_tokens=12, do_sample=False,
                                  eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "4" in answer


@pytest.mark.integration
def test_cached_gguf_load_equals_converting_the_gguf(gguf_model, monkeypatch):
    """The module's model came through the GGUF cache (built on first use, in the test session's cache
    directory); converting the GGUF file again gives bit-identical logits, and the same tokens."""
    import torch

    from sftlab.models import gguf_cache

    cached_tok = load_tokenizer(GGUF_ALIAS)
    assert list(gguf_cache.cache_root().glob("gguf/*/model/model.safetensors"))
    monkeypatch.setenv(gguf_cache.ENV_SWITCH, "0")
    tok = load_tokenizer(GGUF_ALIAS)
    conv = [{"role": "user", "content": "List three colours, in JSON."}]
    texts = [tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True), "Hello <|im_end|> wörld 42"]
    assert [cached_tok(t)["input_ids"] for t in texts] == [tok(t)["input_ids"] for t in texts]
    assert cached_tok.chat_template == tok.chat_template
    ids = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(gguf_model(**ids).logits, load_model(GGUF_ALIAS)(**ids).logits)
