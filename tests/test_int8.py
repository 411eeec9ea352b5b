"""``--dtype int8``: float32 weights with int8 dynamic-quantised linear layers, through the continuous engine."""

from __future__ import annotations

import copy

import pytest
import torch

from sftlab.errors import SftlabError
from sftlab.eval.generate import GenerationConfig, generate_responses
from sftlab.models.int8 import is_int8, quantize_int8


@pytest.fixture(scope="module")
def model(tokenizer):
    from helpers import tiny_llama

    return tiny_llama(tokenizer, seed=1, initializer_range=0.1).eval()


def test_every_linear_is_quantised_and_logits_stay_close(model, tokenizer):
    ids = tokenizer("The quick brown fox jumps over the lazy dog", return_tensors="pt").input_ids
    q = quantize_int8(copy.deepcopy(model))
    assert is_int8(q) and not is_int8(model)
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    kept = quantize_int8(copy.deepcopy(model), head="float32")
    assert type(kept.lm_head) is torch.nn.Linear and is_int8(kept.model)
    with torch.no_grad():
        a, b = model(ids).logits, q(ids).logits
    rel = ((a - b).abs().max() / a.abs().max()).item()
    assert 0 < rel < 0.1, rel  # quantised (not the float path), but close


def test_int8_generation_runs_continuous_and_records_its_dtype(model, tokenizer):
    prompts = ["Say hi.", "Name three colours, please.", "Count to five."]
    q = quantize_int8(copy.deepcopy(model))
    out, stats = generate_responses(q, tokenizer, prompts, GenerationConfig(max_new_tokens=6, dtype="int8"),
                                    progress=False)
    assert stats.engine == "continuous" and stats.dtype == "int8"
    assert len(out) == 3 and all(isinstance(r, str) for r in out)
    assert 3 <= stats.new_tokens <= 18  # at least one token per row, at most max_new_tokens


def test_int8_is_cpu_hf_only():
    with pytest.raises(SftlabError, match="hf backend"):
        GenerationConfig(dtype="int8", backend="vllm")
    assert GenerationConfig(dtype="int8").dtype == "int8"


def test_rescored_head_gives_the_float32_argmax(model):
    from sftlab.models.int8 import RescoredHead

    torch.manual_seed(0)
    hidden = torch.randn(200, 1, model.config.hidden_size)
    head = RescoredHead(model.lm_head)
    with torch.no_grad():
        exact = model.lm_head(hidden)
        got = head(hidden)
    assert torch.equal(got.argmax(-1), exact.argmax(-1))
    finite = torch.isfinite(got)
    assert finite.sum(-1).eq(head.k).all()  # k candidates, rescored to their float32 values
    assert torch.allclose(got[finite], exact[finite], atol=1e-5)
    q = quantize_int8(copy.deepcopy(model), head="rescored")
    assert is_int8(q.model) and type(q.get_output_embeddings()).__name__ == "_RescoredHead"
