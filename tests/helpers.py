"""Small builders shared by the tests: messages in sftlab's normalised ``role/content`` form, and the
one tiny random-init Llama factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def U(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def A(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def S(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


#: The tiny Llama every test builds unless it says otherwise (a few hundred thousand parameters).
TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)


def tiny_llama(tokenizer: Any = None, *, seed: int = 0, **config: Any):
    """A tiny random-init ``LlamaForCausalLM`` (seeded), float32.

    With ``tokenizer`` (the real SmolLM2 one with chatml), the model takes its vocabulary and special
    tokens, and ``<|im_end|>`` (then eos) ends generation, as for a chat model. ``config`` overrides any
    ``LlamaConfig`` field (``vocab_size`` is required without a tokenizer).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings: dict[str, Any] = dict(TINY_LLAMA)
    im_end = None
    if tokenizer is not None:
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        settings.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=im_end,
                        pad_token_id=tokenizer.pad_token_id)
    settings.update(config)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    if tokenizer is not None:
        model.generation_config.eos_token_id = [im_end, tokenizer.eos_token_id]
    return model


def save_tiny_llama(tokenizer: Any, out_dir: Path, *, seed: int = 0, **config: Any) -> Path:
    """:func:`tiny_llama` on ``tokenizer``, saved with the tokenizer to ``out_dir`` (a model directory)."""
    model = tiny_llama(tokenizer, seed=seed, **config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
