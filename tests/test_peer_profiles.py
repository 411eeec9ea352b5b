"""Peer profiles (sftlab.train.peers): every key of TRL, Axolotl and LLaMA-Factory is mapped or refused with a
reason, and the peers' own example configs (configs/peers) train here doing what their keys mean."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_cli
from test_train import ok

from sftlab.errors import ConfigError
from sftlab.train import aliases
from sftlab.train.aliases import resolve_aliases
from sftlab.train.config import load_config, valid_keys
from sftlab.train.peers import axolotl, llamafactory, trl

PEERS = REPO_ROOT / "configs" / "peers"
DATA = PEERS / "data"
PROFILES = {"TRL": trl, "Axolotl": axolotl, "LLaMA-Factory": llamafactory}


@pytest.fixture(autouse=True)
def _fresh_print_memory(monkeypatch):
    from sftlab.train.peers import base

    monkeypatch.setattr(base, "_printed", set())


def _sftlab_key(target: str) -> bool:
    return target.split(".", 1)[0] in set(valid_keys())


@pytest.mark.parametrize("peer", list(PROFILES))
def test_every_profile_key_is_mapped_or_refused_with_a_reason(peer):
    module = PROFILES[peer]
    for name, key in module.PROFILE.keys.items():
        assert key.kind in ("alias", "refused", "noted"), name
        if key.kind == "alias":
            assert _sftlab_key(key.target), (name, key.target)
        else:  # a reason that says what sftlab does (a sentence, not a placeholder)
            assert len((key.refused or key.note).split()) >= 3, name
        assert aliases.KEYS[name].kind == key.kind, name  # the resolver reads it as the profile says
    for name in module.SAME:  # the peer's keys that are sftlab's or TrainingArguments' of the same name
        assert name in valid_keys() and name not in aliases.KEYS, name


def test_trl_key_list_is_walked_from_trl_itself():
    """Every field of the installed TRL's SFTConfig, ScriptArguments, ModelConfig and DatasetMixtureConfig."""
    pytest.importorskip("trl")
    from transformers import TrainingArguments
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, SFTConfig

    ta = {f.name for f in dataclasses.fields(TrainingArguments)}
    fields = [f.name for cls in (SFTConfig, ScriptArguments, ModelConfig, DatasetMixtureConfig)
              for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
    missing = [n for n in fields if n not in ta and n not in trl.PROFILE.keys and n not in trl.SAME]
    assert not missing
    assert len(fields) > 150  # the TrainingArguments fields SFTConfig inherits pass through as sftlab's


def test_shared_key_names_mean_the_same_to_every_peer():
    seen: dict[str, tuple] = {}
    for module in PROFILES.values():
        for name, key in module.PROFILE.keys.items():
            sig = (key.kind, key.target, key.transform)
            assert seen.setdefault(name, sig) == sig, name


def test_refused_keys_are_named_together_with_their_reasons_and_off_values_pass():
    with pytest.raises(ConfigError) as e:
        resolve_aliases({"load_in_4bit": True, "eos_token": "<|im_end|>", "lora_r": 8})
    msg = str(e.value)
    assert "`load_in_4bit` (TRL/Axolotl): " in msg and "`eos_token` (TRL): " in msg and "\n" not in msg
    assert resolve_aliases({"load_in_4bit": False, "wandb_project": None, "lora_model_dir": ""}) == {}


@pytest.mark.parametrize("raw, typo, want", [
    ({"stage": "sft"}, "lora_rnk", "lora_rank"),
    ({"stage": "sft"}, "train_on_promt", "train_on_prompt"),
    ({"model_name_or_path": "m", "use_peft": True}, "packing_stratgy", "packing_strategy"),
    ({"base_model": "m"}, "sequence_lenn", "sequence_len"),
    ({"base_model": "m", "lora_alpha": 16}, "lora_rnk", "lora_r"),  # not LLaMA-Factory's lora_rank
])
def test_did_you_mean_stays_within_the_peer_and_sftlab(raw, typo, want):
    with pytest.raises(ConfigError, match=f"unknown config key '{typo}'; did you mean '{want}'") as e:
        resolve_aliases({**raw, typo: 1}, known=valid_keys())
    assert "local_rank" not in str(e.value)


@pytest.mark.parametrize("raw, words", [
    ({"stage": "dpo"}, ["stage: dpo", "sft only"]),
    ({"stage": "sft", "finetuning_type": "freeze"}, ["finetuning_type: freeze"]),
    ({"stage": "sft", "finetuning_type": "full", "lora_rank": 8}, ["finetuning_type: full", "lora_rank"]),
    ({"stage": "sft", "train_on_prompt": True}, ["train_on_prompt: true", "no sftlab masking strategy"]),
    ({"stage": "sft", "packing": True}, ["neat_packing"]),
    ({"stage": "sft", "template": "llama3"}, ["template: llama3", "chatml"]),
    ({"datasets": [{"path": "x", "type": "completion"}]}, ["raw text"]),
    ({"datasets": [{"path": "x", "type": "chat_template", "roles_to_train": ["user", "assistant"]}]},
     ["roles_to_train"]),
    ({"datasets": [{"path": "x", "message_property_mappings": {"role": "speaker", "content": "text"}}]},
     ["role/content or from/value"]),
    ({"attn_implementation": "flash_attention_2"}, ["flash_attn", "sdpa"]),
    ({"wandb_name": "r1"}, ["without wandb_project"]),
    ({"special_tokens": {"eos_token": "</s>"}}, ["special_tokens: eos_token"]),
])
def test_what_sftlab_cannot_honour_is_refused_in_one_line(raw, words):
    pytest.importorskip("torch")
    import importlib.util

    if "attn_implementation" in raw and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ConfigError) as e:
        resolve_aliases(raw)
    for w in words:
        assert w in str(e.value)


def test_deepspeed_configs_are_validated_and_refused_without_the_package(tmp_path):
    import importlib.util

    with pytest.raises(ConfigError, match="does not exist"):
        resolve_aliases({"deepspeed": str(tmp_path / "none.json")})
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 4}}')
    with pytest.raises(ConfigError, match="stage must be 0, 1, 2 or 3"):
        resolve_aliases({"deepspeed": str(bad)})
    if importlib.util.find_spec("deepspeed") is None:
        for cfg in ("deepspeed_zero2.json",):
            with pytest.raises(ConfigError, match=r"ZeRO-2\) needs the deepspeed package"):
                resolve_aliases({"deepspeed": str(REPO_ROOT / "configs" / cfg)})
        with pytest.raises(ConfigError, match=r"ZeRO-3\) needs the deepspeed package"):
            resolve_aliases({"deepspeed": {"zero_optimization": {"stage": 3}}})


def test_fsdp_without_cuda_is_ddp_with_a_note(capsys):
    torch = pytest.importorskip("torch")
    raw = {"fsdp": "full_shard auto_wrap", "fsdp_config": {"fsdp_version": 2}, "learning_rate": 1e-4}
    if torch.cuda.is_available():
        assert resolve_aliases(raw) == raw
    else:  # accelerate shards only on GPUs: say so, and record what runs
        assert resolve_aliases(raw) == {"learning_rate": 1e-4}
        assert "`fsdp: full_shard auto_wrap` not applied: without CUDA" in capsys.readouterr().err


def test_an_fsdp_typo_is_refused_on_every_machine():
    """The CPU fallback drops ``fsdp``; a value CUDA would refuse must not slip through it."""
    with pytest.raises(ConfigError, match=r"fsdp: unknown option 'ful_shard'.*full_shard"):
        resolve_aliases({"fsdp": "ful_shard auto_wrap"})
    with pytest.raises(ConfigError, match=r"fsdp: 3: give true or FSDP options"):
        resolve_aliases({"fsdp": 3})


def test_a_saved_config_keeps_trainingarguments_defaults_that_peers_also_name():
    """``debug: []`` and ``do_train`` are TrainingArguments fields in every sftlab_config.yaml; their
    defaults are not Axolotl's debug switch or LLaMA-Factory's eval-only run."""
    assert resolve_aliases({"debug": [], "do_train": True, "learning_rate": 1e-4}) == {"learning_rate": 1e-4}
    with pytest.raises(ConfigError, match="debug"):
        resolve_aliases({"debug": True})
    with pytest.raises(ConfigError, match="do_train: false is not supported"):
        resolve_aliases({"do_train": False})


def test_a_finished_run_is_extended_only_by_more_steps_or_epochs(tmp_path):
    from types import SimpleNamespace

    from sftlab.train.checkpoints import finished_run

    (tmp_path / "train_summary.json").write_text(json.dumps({"global_step": 4, "epochs": 1.0}))
    args = lambda steps, epochs: SimpleNamespace(max_steps=steps, num_train_epochs=epochs)  # noqa: E731
    assert finished_run(tmp_path, args(4, 3), explicit=None, overwrite=False)["global_step"] == 4
    assert finished_run(tmp_path, args(-1, 1), explicit=None, overwrite=False) is not None
    assert finished_run(tmp_path, args(6, 1), explicit=None, overwrite=False) is None  # more steps: continue
    assert finished_run(tmp_path, args(-1, 2), explicit=None, overwrite=False) is None  # more epochs: continue
    assert finished_run(tmp_path, args(4, 1), explicit=None, overwrite=True) is None


def test_llamafactory_defaults_and_per_dataset_max_samples(tmp_path):
    out = resolve_aliases({"stage": "sft", "dataset": "demo_sharegpt,demo_alpaca", "dataset_dir": str(DATA),
                           "max_samples": 3, "mask_history": True})
    assert out["lora"] == {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    assert out["eval_fraction"] == 0.0 and out["masking"] == "last_assistant" and "max_samples" not in out
    assert [d["max_samples"] for d in out["data"]] == [3, 3]
    assert out["data"][0]["columns"] == {"system": "system"}


def test_sharegpt_system_column_is_kept_and_text_records_say_why(tmp_path):
    from sftlab.data import load_conversations, parse_data_specs

    specs = parse_data_specs(resolve_aliases({"stage": "sft", "dataset": "demo_sharegpt",
                                              "dataset_dir": str(DATA)})["data"])
    msgs = load_conversations(specs).conversations[0]
    assert msgs[0] == {"role": "system", "content": "You answer in as few words as possible."}
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "plain words"}\n')
    with pytest.raises(Exception, match="not on plain text"):
        load_conversations(parse_data_specs(str(text)), strict=True)


def test_axolotl_data_files_pick_files_under_a_directory_and_one_entry_stays_a_list():
    out = resolve_aliases({"datasets": [{"path": str(DATA), "data_files": ["chat.jsonl"], "type": "chat_template"}]})
    assert out["data"] == [{"path": str(DATA / "chat.jsonl"), "format": "messages"}]
    with pytest.raises(ConfigError, match="local directory"):
        resolve_aliases({"datasets": [{"path": "org/hub-set", "data_files": "a.json"}]})


def test_bf16_flag_is_read_as_the_dtype():
    assert resolve_aliases({"bf16": True}) == {"dtype": "bf16"}
    assert resolve_aliases({"bf16": "auto"}) == {"dtype": "auto"}
    assert resolve_aliases({"bf16": False}) == {"dtype": "fp32"}
    assert resolve_aliases({"bf16": True, "dtype": "bf16"}) == {"bf16": True, "dtype": "bf16"}


def test_readme_shows_the_examples_and_lists_every_refused_key_with_its_reason():
    from sftlab.train.peers.docs import generated

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert generated(REPO_ROOT) in readme, "regenerate with: python -m sftlab.train.peers.docs"
    for m in PROFILES.values():
        for name, key in m.PROFILE.keys.items():
            if key.kind == "refused":
                assert f"| `{name}` | {key.refused.replace('|', '/')} |" in readme, name


# --------------------------------------------------------------------------------------------------
# Verified by effect: the example configs train here and do what their keys mean
# --------------------------------------------------------------------------------------------------


def _train(cfg: Path, model_key: str, model: Path, out: Path, *extra: str):
    return ok(run_cli("train", str(cfg), f"--{model_key}", str(model), "--output_dir", str(out), *extra,
                      cwd=REPO_ROOT))


def _lora_params(model: Path, r: int, modules: list[str]) -> int:
    c = json.loads((model / "config.json").read_text())
    h, head = c["hidden_size"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    q, kv, i = c["num_attention_heads"] * head, c["num_key_value_heads"] * head, c["intermediate_size"]
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
              "up_proj": (h, i), "down_proj": (i, h)}
    return c["num_hidden_layers"] * sum(r * sum(shapes[m]) for m in modules)


def _record(out: Path) -> tuple[dict, dict, list[dict]]:
    summary = json.loads((out / "train_summary.json").read_text())
    saved = yaml.safe_load((out / "sftlab_config.yaml").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, saved, rows


@pytest.mark.integration
def test_trl_example_trains_as_written(tmp_path, tiny_model_dir, capsys, monkeypatch):
    out = tmp_path / "trl"
    _train(PEERS / "trl_sft.yaml", "model_name_or_path", tiny_model_dir, out, "--max_length", "64",
                  "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--bf16", "false")
    summary, saved, rows = _record(out)
    assert summary["padding"] == "packed" and summary["num_train_examples"] < 10  # 10 conversations, packed
    assert summary["precision"] == "fp32" and saved["resolved_dtype"] == "fp32" and saved["bf16"] is False
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted({m.rsplit(".", 1)[-1] for m in adapter["target_modules"]}) == ["q_proj", "v_proj"]
    assert adapter["r"] == 8
    assert summary["trainable_params"] == _lora_params(tiny_model_dir, 8, ["q_proj", "v_proj"])
    lrs = [r["learning_rate"] for r in rows if "loss" in r]
    assert len(lrs) >= 3 and max(lrs) <= 2e-4 and lrs[-1] < 0.5 * max(lrs)  # warmup then cosine to ~0
    assert lrs.index(max(lrs)) <= 1
    from sftlab.cli import main

    args = ["train", str(PEERS / "trl_sft.yaml"), "--model_name_or_path", str(tiny_model_dir), "--output_dir",
            str(out), "--max_length", "64", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps",
            "1", "--bf16", "false"]
    monkeypatch.chdir(REPO_ROOT)  # the config's data path is relative to the repository, as in README
    capsys.readouterr()
    assert main(args) == 0  # the same run again, in this process: nothing to do
    again = capsys.readouterr()
    assert "already holds this finished run" in again.out and "Resuming" not in again.out
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == summary["global_step"]
    assert "model_name_or_path" not in saved and saved["model_max_length"] == 64


@pytest.mark.integration
def test_axolotl_example_trains_as_written(tmp_path, tiny_model_dir):
    out = tmp_path / "axolotl"
    proc = _train(PEERS / "axolotl_lora.yml", "base_model", tiny_model_dir, out, "--sequence_len", "64",
                  "--micro_batch_size", "1", "--gradient_accumulation_steps", "1", "--sample_packing", "false")
    summary, saved, rows = _record(out)
    pre = summary["preprocess"]
    assert pre["records_read"] == 10  # chat.jsonl alone: data_files, not the 4 of more_chat.jsonl beside it
    assert summary["num_eval_examples"] == 2 and summary["num_train_examples"] == 8  # val_set_size: 0.2 of 10
    assert summary["padding"] == "max_length"  # pad_to_sequence_len: true without sample_packing
    all_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert summary["trainable_params"] == _lora_params(tiny_model_dir, 8, all_linear)
    evals = sorted({r["step"] for r in rows if "eval_loss" in r})
    steps = summary["global_step"]
    every = math.ceil(0.5 * steps)  # evals_per_epoch: 2 of 1 epoch: every half of the steps, and at the end
    assert saved["eval_steps"] == 0.5 and evals == sorted(set(range(every, steps + 1, every)) | {steps})
    assert saved["optim"] == "adamw_torch" and saved["lr_scheduler_type"] == "cosine"
    assert saved["masking"] == "assistant" and saved["chat_template"] == "tokenizer"
    assert "`datasets: " in proc.stderr and "`wandb_project: null` accepted" in proc.stderr


@pytest.mark.integration
def test_llamafactory_example_trains_as_written(tmp_path, tiny_model_dir):
    out = tmp_path / "lf"
    _train(PEERS / "llamafactory_lora_sft.yaml", "model_name_or_path", tiny_model_dir, out, "--cutoff_len", "96")
    summary, saved, _ = _record(out)
    assert summary["preprocess"]["kept"] == 10  # max_samples: 5 of each dataset (6 records each), not 5 in all
    assert summary["num_eval_examples"] == 2  # val_size: 0.2 of 10
    assert saved["resolved_dtype"] == "bf16" and summary["precision"].startswith("bf16")  # bf16: true, recorded
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16 and adapter["lora_dropout"] == 0.0
    assert {m.rsplit(".", 1)[-1] for m in adapter["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}


def test_trained_tokens_per_role_of_the_llamafactory_example(tmp_path, tiny_model_dir):
    """What would be trained: the system column is in the input, never trained; user turns untrained."""
    from transformers import AutoTokenizer

    from sftlab.prep.pipeline import PreprocessConfig, preprocess

    cfg, _ = load_config(PEERS / "llamafactory_lora_sft.yaml", ["--model_name_or_path", str(tiny_model_dir),
                                                                 "--dataset", "demo_sharegpt"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pre = preprocess(PreprocessConfig.from_train_config(cfg, sample_seed=42), tmp_path, tokenizer=tok, progress=False)
    row = pre.dataset[0]
    text = tok.decode(row["input_ids"])
    trained = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100])
    assert "You answer in as few words as possible." in text and "system" not in trained
    assert re.search(r"boiling point", text) and "boiling point" not in trained
    assert "100 degrees Celsius" in trained
