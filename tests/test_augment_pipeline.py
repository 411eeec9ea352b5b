"""The ``augment:`` block of a training config: validated up front, applied inside preprocessing (cached
with it), decontaminated against the experiment's IFEval inputs, and trained on end to end.

Also ``truncation: drop``, which augmented data needs: a reply cut at ``max_length`` no longer
satisfies the instruction it was verified against, so such conversations are dropped and counted.
"""

from __future__ import annotations

import json

import pytest
import yaml

from sftlab.errors import ConfigError
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.prep.pipeline import (
    SKIP_NO_TRAINED,
    SKIP_OVERLONG,
    SKIP_OVERLONG_AUGMENTED,
    PreprocessConfig,
    preprocess,
)
from sftlab.train.config import load_config


@pytest.fixture(scope="module")
def sharegpt_file(tmp_path_factory):
    """40 real ShareGPT first rounds as a JSONL file (real replies, so that every type has material)."""
    from sftlab.data import load_conversations

    convs = load_conversations("sharegpt", max_samples=40, max_rounds=1).conversations
    path = tmp_path_factory.mktemp("aug") / "convs.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "messages": m}) + "\n" for i, m in enumerate(convs)),
                    encoding="utf-8")
    return path


def _train_cfg(model_dir, data, **extra):
    return {"model": str(model_dir), "data": str(data), "chat_template": "chatml", "model_max_length": 512,
            "max_steps": 2, "per_device_train_batch_size": 2, "total_batch_size": 2, "eval_fraction": 0.0,
            "num_proc": 1, "dtype": "fp32", "save_steps": 100, **extra}


def test_config_validates_the_augment_block(tiny_model_dir, sharegpt_file):
    cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"ratio": 0.5,
                                                                                     "holdout_types": "no_comma"}))
    assert cfg.augment["ratio"] == 0.5 and cfg.augment["holdout_types"] == ["no_comma"]
    with pytest.raises(ConfigError, match="unknown augment key 'ration'; did you mean 'ratio'"):
        load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"ration": 0.5}))
    with pytest.raises(ConfigError, match="no_coma"):
        load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"types": ["no_coma"]}))
    with pytest.raises(ConfigError, match="truncation"):
        load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, truncation="middle"))
    cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file))
    assert cfg.augment is None
    # `sftlab train` on a config with an eval block decontaminates against its IFEval inputs, as `run` does.
    ev = {"ifeval_data": "ifeval/input_data.jsonl", "sample": 10}
    cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"seed": 1}, eval=ev))
    assert cfg.augment["ifeval_data"] == "ifeval/input_data.jsonl"
    for own in ({"ifeval_data": "other.jsonl"}, {"decontaminate": False}):
        cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment=own, eval=ev))
        assert cfg.augment["ifeval_data"] == own.get("ifeval_data")
    # ... and against its IFBench inputs when eval.benchmarks names ifbench.
    ev_both = {**ev, "benchmarks": ["ifeval", "ifbench"], "ifbench": {"data": "ifbench/IFBench_test.jsonl"}}
    cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"seed": 1}, eval=ev_both))
    assert cfg.augment["ifbench_data"] == "ifbench/IFBench_test.jsonl"
    cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"seed": 1}, eval=ev))
    assert cfg.augment.get("ifbench_data") is None
    cfg, _ = load_config(None, _train_cfg(tiny_model_dir, sharegpt_file, augment={"type_weights": {"transform": 3}}))
    assert cfg.augment["type_weights"] == {"transform": 3} and cfg.augment["ifeval_data"] is None


def test_preprocess_augments_verifiably_and_keys_the_cache(tokenizer, tokenizer_dir, sharegpt_file, ifeval_dir,
                                                          tmp_path):
    base = dict(data=str(sharegpt_file), tokenizer=str(tokenizer_dir), chat_template="chatml", max_length=4096,
                num_proc=1)
    plain = preprocess(PreprocessConfig(**base), tmp_path, tokenizer=tokenizer, progress=False)
    aug_block = {"max_instructions": 2, "seed": 1, "ifeval_data": str(ifeval_dir / "input_data.jsonl")}
    aug = preprocess(PreprocessConfig(**base, augment=aug_block), tmp_path, tokenizer=tokenizer, progress=False)
    assert aug.cache_dir != plain.cache_dir and "augment" not in plain.stats
    st = aug.stats["augment"]
    assert st["augmented"] > 0.8 * st["conversations_in"] and "541 IFEval prompts" in st["decontamination"]
    # The trained text differs from the plain data exactly where instructions were added.
    assert aug.dataset["input_ids"] != plain.dataset["input_ids"]
    # What the model is trained on (the decoded targets) satisfies every added instruction.
    from sftlab.augment import AugmentConfig, augment_conversations
    from sftlab.augment.pipeline import verify
    from sftlab.data import load_conversations

    loaded = load_conversations(str(sharegpt_file))
    records, _ = augment_conversations(loaded.conversations, AugmentConfig.from_dict(aug_block), ids=loaded.ids)
    by_id = {r["id"]: r for r in records}
    checked = 0
    for cid, ids, labels in zip(aug.dataset["id"], aug.dataset["input_ids"], aug.dataset["labels"], strict=True):
        rec = by_id[cid]
        target = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])
        # The role header is a target too (the reference masking's semantics), then the reply and <|im_end|>.
        reply = target.removeprefix("<|im_start|>assistant\n").removesuffix("\n").removesuffix("<|im_end|>")
        assert reply == rec["messages"][-1]["content"]
        if "augment" in rec:
            a = rec["augment"]
            assert all(verify(rec["messages"][-2]["content"], reply, a["instruction_id_list"], a["kwargs"]))
            assert rec["messages"][-2]["content"] != loaded.conversations[loaded.ids.index(cid)][-2]["content"]
            checked += 1
    assert checked == st["augmented"]
    # Same settings: a cache hit with the same stats.
    again = preprocess(PreprocessConfig(**base, augment=aug_block), tmp_path, tokenizer=tokenizer, progress=False)
    assert again.cache_hit and again.stats["augment"] == st


def test_truncation_drop_skips_and_counts_overlong_conversations(tokenizer, tokenizer_dir, sharegpt_file, tmp_path):
    base = dict(data=str(sharegpt_file), tokenizer=str(tokenizer_dir), chat_template="chatml", max_length=256,
                num_proc=1)
    cut = preprocess(PreprocessConfig(**base), tmp_path, tokenizer=tokenizer, progress=False)
    dropped = preprocess(PreprocessConfig(**base, truncation="drop"), tmp_path, tokenizer=tokenizer, progress=False)
    assert cut.stats["truncated"] > 0
    assert dropped.stats["truncated"] == 0
    # Over-long: those truncated, plus those truncation left without a target (skipped there).
    assert dropped.stats["skipped"][SKIP_OVERLONG] == cut.stats["truncated"] + cut.stats["skipped"][SKIP_NO_TRAINED]
    assert SKIP_NO_TRAINED not in dropped.stats["skipped"]
    assert dropped.stats["kept"] == cut.stats["kept"] - cut.stats["truncated"]
    assert max(len(x) for x in dropped.dataset["input_ids"]) <= 256


def test_drop_augmented_cuts_plain_conversations_and_drops_augmented_ones(tokenizer, tokenizer_dir, sharegpt_file,
                                                                         ifeval_dir, tmp_path):
    base = dict(data=str(sharegpt_file), tokenizer=str(tokenizer_dir), chat_template="chatml", num_proc=1)
    block = {"ratio": 0.5, "seed": 3, "ifeval_data": str(ifeval_dir / "input_data.jsonl")}
    whole = preprocess(PreprocessConfig(**base, max_length=100_000, augment=block), tmp_path, tokenizer=tokenizer,
                       progress=False)
    mixed = preprocess(PreprocessConfig(**base, max_length=256, truncation="drop_augmented", augment=block), tmp_path,
                       tokenizer=tokenizer, progress=False)
    ids = whole.dataset["id"]
    lengths = dict(zip(ids, (len(x) for x in whole.dataset["input_ids"]), strict=True))
    from sftlab.augment import AugmentConfig, augment_conversations
    from sftlab.data import load_conversations

    loaded = load_conversations(str(sharegpt_file))
    records, _ = augment_conversations(loaded.conversations, AugmentConfig.from_dict(block), ids=loaded.ids)
    augmented = {r["id"] for r in records if "augment" in r}
    long_aug = {c for c in ids if lengths[c] > 256 and c in augmented}
    long_plain = {c for c in ids if lengths[c] > 256 and c not in augmented}
    assert long_aug and long_plain  # the fixture has both kinds
    kept = set(mixed.dataset["id"])
    assert not kept & long_aug and kept & long_plain
    assert mixed.stats["skipped"][SKIP_OVERLONG_AUGMENTED] == len(long_aug)
    # Plain ones are cut; only those whose cut left no reply token (a long prompt) go, counted as such.
    assert SKIP_OVERLONG not in mixed.stats["skipped"] and mixed.stats["truncated"] == len(kept & long_plain)
    assert mixed.stats["skipped"].get(SKIP_NO_TRAINED, 0) == len(long_plain - kept)
    cut = [x for c, x in zip(mixed.dataset["id"], mixed.dataset["labels"], strict=True) if c in long_plain]
    assert all(len(x) == 256 and x[-1] != IGNORE_INDEX for x in cut)  # the first 256 tokens, ending inside the reply
    assert mixed.stats["augment"]["kept_augmented"] == len(augmented) - len(long_aug)


def test_run_points_augmentation_at_its_ifeval_inputs(tmp_path, tiny_model_dir, sharegpt_file, ifeval_dir):
    from sftlab.experiment.run import load_run_config

    data = str(ifeval_dir / "input_data.jsonl")
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({**_train_cfg(tiny_model_dir, sharegpt_file, augment={"ratio": 1.0}),
                                 "eval": {"ifeval_data": data, "limit": 2}}), encoding="utf-8")
    assert load_run_config(p).train_config()["augment"]["ifeval_data"] == data
    p.write_text(yaml.safe_dump({**_train_cfg(tiny_model_dir, sharegpt_file,
                                              augment={"decontaminate": False}),
                                 "eval": {"ifeval_data": data, "limit": 2}}), encoding="utf-8")
    assert "ifeval_data" not in load_run_config(p).train_config()["augment"]


@pytest.mark.integration
def test_augment_config_trains_end_to_end(tiny_model_dir, sharegpt_file, ifeval_dir, tmp_path, cli):
    out = tmp_path / "train"
    cfg = _train_cfg(tiny_model_dir, sharegpt_file, truncation="drop", output_dir=str(out),
                     augment={"max_instructions": 1, "ifeval_data": str(ifeval_dir / "input_data.jsonl")})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = cli("train", str(path), "--augment.seed", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "augmented:" in proc.stdout
    saved = yaml.safe_load((out / "sftlab_config.yaml").read_text(encoding="utf-8"))
    assert saved["augment"]["seed"] == 3 and saved["truncation"] == "drop"
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["augment"]["augmented"] > 0 and stats["augment"]["config"]["max_instructions"] == 1
    # The saved config is itself a valid training config (reproduce and resume from it).
    load_config(out / "sftlab_config.yaml")


V2_BLOCK = {"hygiene": "all", "preserve_content": True, "binding": True, "phrasing": "v2", "own_types": True,
            "strip_openers": True, "seed": 2}


@pytest.mark.integration
def test_preprocess_with_every_new_switch_on(tokenizer, tokenizer_dir, sharegpt_file, tmp_path):
    """Issue #24's switches inside preprocessing: hygiene drops are counted, system-message placements are
    trained as a system turn, and every claimed instruction (IFEval's and sftlab's own) holds on the target."""
    from sftlab.augment import AugmentConfig, augment_conversations
    from sftlab.augment.pipeline import verify
    from sftlab.data import load_conversations

    base = dict(data=str(sharegpt_file), tokenizer=str(tokenizer_dir), chat_template="chatml", max_length=4096,
                num_proc=1)
    res = preprocess(PreprocessConfig(**base, augment=V2_BLOCK), tmp_path, tokenizer=tokenizer, progress=False)
    st = res.stats["augment"]
    assert st["config"]["phrasing"] == "v2" and st["written"] == st["conversations_in"] - st.get("hygiene_dropped", 0)
    loaded = load_conversations(str(sharegpt_file))
    records, _ = augment_conversations(loaded.conversations, AugmentConfig.from_dict(V2_BLOCK), ids=loaded.ids)
    by_id = {r["id"]: r for r in records}
    assert set(res.dataset["id"]) <= set(by_id)
    own = system = 0
    for cid, ids, labels in zip(res.dataset["id"], res.dataset["input_ids"], res.dataset["labels"], strict=True):
        rec = by_id[cid]
        text = tokenizer.decode(ids)
        if rec["messages"][0]["role"] == "system":
            assert text.startswith("<|im_start|>system\n" + rec["messages"][0]["content"])
            system += "augment" in rec
        if "augment" in rec:
            target = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
            reply = target.removeprefix("<|im_start|>assistant\n").removesuffix("\n").removesuffix("<|im_end|>")
            a = rec["augment"]
            assert all(verify(rec["messages"][-2]["content"], reply, a["instruction_id_list"], a["kwargs"]))
            own += any(i.startswith("sftlab:") for i in a["instruction_id_list"])
    assert own > 0 and system > 0
    plain = preprocess(PreprocessConfig(**base, augment={"seed": 2, "strip_openers": True}), tmp_path,
                       tokenizer=tokenizer, progress=False)
    assert plain.cache_dir != res.cache_dir
