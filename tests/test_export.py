"""``sftlab export --gguf``: the written GGUF loads back in transformers with the source model's logits,
tokenizer and chat template; the Q/K permutation is the inverse of transformers' reading; the Modelfile's
template reproduces the chat template."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sftlab.errors import SftlabError
from sftlab.models.export import export_gguf, ollama_modelfile, permute_qk, turn_format

TEXT = "Hello there, how are you? Reply in 3 words.<|im_end|>\n<|im_start|>assistant\nFine"
#: Tolerances on logits, relative to the largest logit: f16 weights round at 2^-11 (~5e-4);
#: Q8_0 keeps 8 bits per weight with one scale per 32 (~4e-3 per weight, a few 1e-2 on the logits).
TOL = {"f16": 2e-3, "q8_0": 3e-2}


def small_bpe_tokenizer():
    """A byte-level BPE tokenizer of ~300 tokens with ChatML's specials, trained here: the GGUF readers
    parse metadata in pure Python (~20 s for SmolLM2's 49k tokens and merges), so the weight round trips
    use this one and only the CLI test carries the real tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sftlab.models.loading import resolve_chat_template

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([TEXT.replace("<|im_end|>", " ")] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = resolve_chat_template(tok, "chatml")
    return tok


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _roundtrip(src_dir, gguf_path, tokenizer, gguf_type):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    ref = AutoModelForCausalLM.from_pretrained(src_dir).eval()
    back = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                dtype=torch.float32).eval()
    a, b = _logits(ref, ids), _logits(back, ids)
    err = (a - b).abs().max().item() / a.abs().max().item()
    assert err < TOL[gguf_type], f"{gguf_type}: relative logit error {err:.2e}"
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    tok_back = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    assert tok_back(TEXT).input_ids == tokenizer(TEXT).input_ids
    assert tok_back.chat_template == tokenizer.chat_template
    return err, back.config


@pytest.mark.integration
def test_cli_exports_the_real_tokenizer_and_template(cli, tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "export" / "tiny-f16.gguf"
    proc = cli("export", str(tiny_model_dir), "--gguf", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith("sftlab export: CPU ")
    assert f"wrote {out} (f16, " in proc.stdout
    assert not list(out.parent.glob(".*tmp*"))  # the temporary file was renamed into place
    back = AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    for text in (TEXT, "Numbers 12345 and émojis 🙂, tabs\tand\n\nnewlines"):
        assert back(text).input_ids == tokenizer(text).input_ids, text
    assert back.chat_template == tokenizer.chat_template
    modelfile = out.with_suffix(".Modelfile").read_text()
    assert modelfile.startswith("FROM ./tiny-f16.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "{{ .Prompt }}" in modelfile


@pytest.mark.parametrize("gguf_type, tied", [("f16", True), ("q8_0", False)])
def test_export_reads_back_with_the_source_logits(gguf_type, tied, tmp_path):
    from helpers import save_tiny_llama
    from safetensors.torch import load_file

    tok = small_bpe_tokenizer()
    src = save_tiny_llama(tok, tmp_path / "src", seed=3, tie_word_embeddings=tied)
    res = export_gguf(str(src), tmp_path / "out" / "m.gguf", gguf_type=gguf_type)
    err, config = _roundtrip(src, res.gguf, tok, gguf_type)
    assert config.tie_word_embeddings == tied  # output.weight written only for an untied head
    n_weights = sum(p.numel() for p in load_file(src / "model.safetensors").values())
    bits = 8 * res.bytes / n_weights  # metadata (tokenizer) is a few kB here
    assert (15 < bits < 18) if gguf_type == "f16" else (8 < bits < 10), bits
    if gguf_type == "q8_0":
        assert err > 1e-4  # the weights really were quantised, not stored as floats


def test_qk_permutation_is_what_transformers_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)  # 4 heads of 8 rows
    p = permute_qk(w, 4)
    assert not np.array_equal(p, w)
    assert np.array_equal(p[:8, 0], w[[0, 4, 1, 5, 2, 6, 3, 7], 0])  # pairs (i, i + d/2) interleaved
    proc = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 4})
    assert np.array_equal(proc.process(p, "blk.0.attn_q.weight").weights, w)


def test_modelfile_template_reproduces_the_chat_template(tokenizer):
    fmt = turn_format(tokenizer)
    assert fmt is not None
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    expected = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert fmt.system_prefix + "S" + fmt.end + fmt.user_prefix + "U" + fmt.end + fmt.assistant_prefix == expected
    text = ollama_modelfile(tokenizer, "./m.gguf", ["<|im_end|>"])
    assert text.splitlines()[0] == "FROM ./m.gguf" and "SYSTEM" not in text  # chatml has no default system


def test_unsupported_models_are_refused_in_one_line(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))).save_pretrained(d)
    tokenizer.save_pretrained(d)
    with pytest.raises(SftlabError, match="only Llama-architecture"):
        export_gguf(str(d), tmp_path / "x.gguf")
    with pytest.raises(SftlabError, match="must end in .gguf"):
        export_gguf(str(d), tmp_path / "x.bin")
    assert not (tmp_path / "x.gguf").exists()
