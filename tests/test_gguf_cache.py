"""The GGUF conversion cache (sftlab.models.gguf_cache) on a tiny GGUF written here: a cached load gives the
same tensors, logits and tokens as converting the GGUF again, and the cache never serves a stale,
partial or corrupt entry. The real SmolLM2 GGUF is compared in test_models.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sftlab.models import gguf_cache
from sftlab.models.loading import builtin_template, load_model, load_tokenizer

TINY_VOCAB = 600  # the first ids of the SmolLM2 vocabulary: specials, bytes and the first merges
CONV = [{"role": "user", "content": "Say 3 words."}, {"role": "assistant", "content": "One two three."}]
TEXTS = ["Hello world!", "  tabs\tand\nnewlines 123", "Ünïcödé 日本 🤗", "<|im_start|>user\nhi<|im_end|>", ""]


def write_tiny_gguf(path: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF (Q4_1 matrices, Q8_0 embedding, tied head) on a cut of the SmolLM2 vocabulary."""
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter
    from gguf.quants import quantize

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = [t for t, i in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]) if i < TINY_VOCAB]
    known = set(tokens)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    merges = [m for m in merges if set(m.split(" ")) <= known and m.replace(" ", "") in known]
    w = GGUFWriter(str(path), "llama")
    for add, value in [(w.add_context_length, 256), (w.add_embedding_length, 64), (w.add_block_count, 2),
                       (w.add_feed_forward_length, 128), (w.add_head_count, 4), (w.add_head_count_kv, 2),
                       (w.add_rope_freq_base, 10000.0), (w.add_layer_norm_rms_eps, 1e-5),
                       (w.add_rope_dimension_count, 16), (w.add_vocab_size, len(tokens)),
                       (w.add_tokenizer_model, "gpt2"), (w.add_tokenizer_pre, "smollm"), (w.add_token_list, tokens),
                       (w.add_token_types, [3 if i < 17 else 1 for i in range(len(tokens))]),
                       (w.add_token_merges, merges), (w.add_bos_token_id, 1), (w.add_eos_token_id, 2),
                       (w.add_unk_token_id, 0), (w.add_pad_token_id, 2), (w.add_add_bos_token, False),
                       (w.add_chat_template, builtin_template("chatml"))]:
        add(value)
    rng = np.random.default_rng(seed)
    shapes = {"attn_q": (64, 64), "attn_k": (32, 64), "attn_v": (32, 64), "attn_output": (64, 64),
              "ffn_gate": (128, 64), "ffn_up": (128, 64), "ffn_down": (64, 128)}
    w.add_tensor("token_embd.weight", quantize(rng.normal(0, 0.5, (len(tokens), 64)).astype(np.float32), Q.Q8_0),
                 raw_dtype=Q.Q8_0)
    w.add_tensor("output_norm.weight", (1 + rng.normal(0, 0.1, 64)).astype(np.float32))
    for b in range(2):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{b}.{norm}.weight", (1 + rng.normal(0, 0.1, 64)).astype(np.float32))
        for name, shape in shapes.items():
            w.add_tensor(f"blk.{b}.{name}.weight", quantize(rng.normal(0, 0.2, shape).astype(np.float32), Q.Q4_1),
                         raw_dtype=Q.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf_source(tmp_path_factory, tokenizer_dir) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tokenizer_dir)


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(gguf_cache.ENV_ROOT, str(root))
    monkeypatch.delenv(gguf_cache.ENV_SWITCH, raising=False)
    return root


@pytest.fixture
def tiny_gguf(tiny_gguf_source, tmp_path) -> Path:
    """A private copy: tests change its mtime or content."""
    copy = tmp_path / "tiny.gguf"
    copy.write_bytes(tiny_gguf_source.read_bytes())
    return copy


@pytest.fixture(scope="module")
def direct(tiny_gguf_source):
    """What converting the GGUF gives, cache off: logits per dtype and the tokenizer's outputs."""
    mp = pytest.MonkeyPatch()
    mp.setenv(gguf_cache.ENV_SWITCH, "0")
    try:
        tok = load_tokenizer(str(tiny_gguf_source))
        return {"tok": tokenizer_outputs(tok), "float32": model_outputs(load_model(str(tiny_gguf_source)), tok),
                "bfloat16": model_outputs(load_model(str(tiny_gguf_source), dtype="bfloat16"), tok)}
    finally:
        mp.undo()


def tokenizer_outputs(tok) -> dict:
    return {"enc": [tok(t)["input_ids"] for t in TEXTS], "dec": [tok.decode(tok(t)["input_ids"]) for t in TEXTS],
            "chat": tok.apply_chat_template(CONV, tokenize=False), "chat_ids": tok.apply_chat_template(CONV),
            "vocab": tok.get_vocab(), "special": dict(tok.special_tokens_map), "pad": tok.pad_token_id,
            "template": tok.chat_template, "backend": tok.backend_tokenizer.to_str()}


def model_outputs(model, tok) -> dict:
    import torch

    ids = tok([tok.apply_chat_template(CONV, tokenize=False), "Hello world"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**ids).logits
    return {"logits": logits, "state": {k: v.clone() for k, v in model.state_dict().items()},
            "dtypes": {k: v.dtype for k, v in model.named_buffers()}, "config": config_of(model),
            "generation": model.generation_config.to_dict()}


def config_of(model) -> dict:
    """The config but where it names its origin (a cached config.json also records the architecture)."""
    skip = {"_name_or_path", "architectures", "transformers_version"}
    return {k: v for k, v in model.config.to_dict().items() if k not in skip}


def assert_same_model(got: dict, want: dict) -> None:
    import torch

    assert got["logits"].dtype == want["logits"].dtype and torch.equal(got["logits"], want["logits"])
    assert got["state"].keys() == want["state"].keys()
    assert all(torch.equal(got["state"][k], want["state"][k]) for k in want["state"])
    assert {k: v for k, v in got.items() if k not in ("logits", "state")} == {
        k: v for k, v in want.items() if k not in ("logits", "state")}


def entries(root: Path, kind: str) -> list[Path]:
    return sorted(root.glob(f"gguf/*/{kind}"))


def test_cached_loads_equal_the_direct_conversion(cache, tiny_gguf, direct, monkeypatch):
    """First load converts and fills the cache, later ones read it: the same logits in float32 and
    bfloat16, the same tokens, chat template and special tokens as converting the GGUF each time."""
    for dtype in ("float32", "bfloat16"):
        tok = load_tokenizer(str(tiny_gguf))
        assert_same_model(model_outputs(load_model(str(tiny_gguf), dtype=dtype), tok), direct[dtype])
    assert [e.name for e in entries(cache, "*")] == ["model", "tokenizer"]

    monkeypatch.setattr(gguf_cache, "_convert_into", lambda *a, **k: pytest.fail("converted again"))
    tok = load_tokenizer(str(tiny_gguf))
    assert tokenizer_outputs(tok) == direct["tok"]
    model = load_model(str(tiny_gguf))
    assert_same_model(model_outputs(model, tok), direct["float32"])
    assert_same_model(model_outputs(load_model(str(tiny_gguf), dtype="bfloat16"), tok), direct["bfloat16"])
    assert tok.name_or_path == model.name_or_path == model.config.name_or_path == str(tiny_gguf.parent)


def test_entries_hold_no_pickle(cache, tiny_gguf):
    load_tokenizer(str(tiny_gguf))
    load_model(str(tiny_gguf))
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".jinja"}
    for p in files:
        head = p.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{p} looks like a pickle or torch zip"


def test_a_changed_gguf_gets_a_new_entry_and_the_old_one_goes(cache, tiny_gguf, tokenizer_dir, direct):
    load_model(str(tiny_gguf))
    (old,) = entries(cache, "model")
    write_tiny_gguf(tiny_gguf, tokenizer_dir, seed=1)  # new weights, same path
    os.utime(tiny_gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    tok = load_tokenizer(str(tiny_gguf))
    changed = model_outputs(load_model(str(tiny_gguf)), tok)
    (new,) = entries(cache, "model")
    assert new != old and not old.parent.exists()
    assert not changed["logits"].equal(direct["float32"]["logits"])
    mp = pytest.MonkeyPatch()
    mp.setenv(gguf_cache.ENV_SWITCH, "0")
    try:
        assert_same_model(changed, model_outputs(load_model(str(tiny_gguf)), tok))
    finally:
        mp.undo()


def test_a_killed_build_leaves_only_an_ignored_tmp_dir(cache, tiny_gguf, direct):
    """A build killed before its rename leaves a ``.tmp-*`` directory that readers never take for an
    entry; a later build completes normally and deletes such leftovers once they are old (a recent one
    may be a build still running)."""
    entry = gguf_cache.entry_dir(tiny_gguf, "model")
    entry.parent.mkdir(parents=True)
    old, recent = entry.parent / ".tmp-model-killed", entry.parent / ".tmp-model-running"
    for leftover in (old, recent):
        leftover.mkdir()
        (leftover / "config.json").write_text("{", encoding="utf-8")  # half written
    os.utime(old, (time.time() - 2 * gguf_cache.STALE_TMP_SECONDS,) * 2)

    def killed(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}", encoding="utf-8")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gguf_cache.build(entry, gguf_cache.expected_manifest(tiny_gguf, "model"), killed)
    assert not entry.exists() and not old.exists() and recent.exists()
    tok = load_tokenizer(str(tiny_gguf))
    assert_same_model(model_outputs(load_model(str(tiny_gguf)), tok), direct["float32"])
    assert gguf_cache.is_valid(entry, gguf_cache.expected_manifest(tiny_gguf, "model"))
    assert list(entry.parent.glob(".tmp-*")) == [recent]


@pytest.mark.parametrize("damage", ["truncate", "garble", "drop_manifest"])
def test_a_damaged_entry_is_rebuilt(cache, tiny_gguf, direct, damage):
    load_model(str(tiny_gguf))
    (entry,) = entries(cache, "model")
    weights = entry / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garble":  # same size: only loading it finds out
        weights.write_bytes(b"\xff" * weights.stat().st_size)
    else:
        (entry / gguf_cache.MANIFEST).unlink()
    tok = load_tokenizer(str(tiny_gguf))
    assert_same_model(model_outputs(load_model(str(tiny_gguf)), tok), direct["float32"])
    assert gguf_cache.is_valid(entry, gguf_cache.expected_manifest(tiny_gguf, "model"))


def test_a_load_error_of_an_intact_entry_is_the_callers(cache, tiny_gguf, monkeypatch):
    """An option the cached load cannot honour fails as it would on the GGUF; the intact entry stays."""
    from sftlab.errors import SftlabError

    load_model(str(tiny_gguf))
    (entry,) = entries(cache, "model")
    monkeypatch.setattr(gguf_cache, "_convert_into", lambda *a, **k: pytest.fail("converted again"))
    with pytest.raises(SftlabError, match="cannot load model"):
        load_model(str(tiny_gguf), attn_implementation="no_such_attention")
    assert gguf_cache.is_valid(entry, gguf_cache.expected_manifest(tiny_gguf, "model")) and gguf_cache.intact(entry)


def test_the_cache_can_be_turned_off(cache, tiny_gguf, direct, monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV_SWITCH, "0")
    tok = load_tokenizer(str(tiny_gguf))
    assert tokenizer_outputs(tok) == direct["tok"]
    assert_same_model(model_outputs(load_model(str(tiny_gguf)), tok), direct["float32"])
    assert not cache.exists()


def test_an_unwritable_cache_falls_back_to_the_gguf(monkeypatch, tmp_path, tiny_gguf, direct):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv(gguf_cache.ENV_ROOT, str(blocker / "cache"))
    tok = load_tokenizer(str(tiny_gguf))
    assert tokenizer_outputs(tok) == direct["tok"]
    assert_same_model(model_outputs(load_model(str(tiny_gguf)), tok), direct["float32"])


def test_a_concurrent_build_that_finished_first_is_kept(cache, tiny_gguf):
    entry = gguf_cache.entry_dir(tiny_gguf, "tokenizer")
    want = gguf_cache.expected_manifest(tiny_gguf, "tokenizer")
    gguf_cache.build(entry, want, lambda tmp: (tmp / "a.json").write_text("1", encoding="utf-8"))
    first = (entry / gguf_cache.MANIFEST).stat().st_ino
    gguf_cache.build(entry, want, lambda tmp: (tmp / "a.json").write_text("2", encoding="utf-8"))
    assert (entry / gguf_cache.MANIFEST).stat().st_ino == first and (entry / "a.json").read_text() == "1"
    assert not list(entry.parent.glob(".tmp-*"))


def test_pickle_files_are_refused(cache, tiny_gguf):
    entry = gguf_cache.entry_dir(tiny_gguf, "model")
    with pytest.raises(OSError, match="safetensors and JSON only"):
        gguf_cache.build(entry, gguf_cache.expected_manifest(tiny_gguf, "model"),
                         lambda tmp: (tmp / "pytorch_model.bin").write_bytes(b"\x80\x04"))
    assert not entry.exists() and not list(entry.parent.glob(".tmp-*"))
