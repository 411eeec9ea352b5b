"""Peers' keys: configs written for ``trl sft`` or Axolotl load and train under sftlab's own names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli
from test_train import ok

from sftlab.errors import ConfigError
from sftlab.train import aliases
from sftlab.train.aliases import resolve_aliases
from sftlab.train.config import load_config

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SMOLTALK = FIXTURES / "smoltalk_like.jsonl"


def _cli_error(capsys, *args: str) -> str:
    """The one-line error of a refused command (after any alias notes), exit 2, no traceback."""
    from sftlab.cli import main

    rc = main(list(args))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("sftlab train: error: ")
    assert all(line.startswith("`") for line in err.splitlines()[:-1]), err
    return last


@pytest.fixture(autouse=True)
def _fresh_print_memory(monkeypatch):
    from sftlab.train.peers import base

    monkeypatch.setattr(base, "_printed", set())


@pytest.mark.parametrize("raw, want", [
    ({"warmup_ratio": 0.1}, {"warmup_steps": 0.1}),
    ({"max_seq_length": 512}, {"model_max_length": 512}),
    ({"max_length": 512}, {"model_max_length": 512}),
    ({"sequence_len": 512}, {"model_max_length": 512}),
    ({"model_name_or_path": "org/m"}, {"model": "org/m"}),
    ({"base_model": "org/m"}, {"model": "org/m"}),
    ({"dataset_name": "org/d"}, {"data": "org/d"}),
    ({"dataset_name": "org/d", "dataset_config": "en", "dataset_train_split": "train"},
     {"data": [{"path": "org/d", "name": "en", "split": "train"}]}),
    ({"dataset_num_proc": 4, "chat_template_path": "t.jinja"}, {"num_proc": 4, "chat_template": "t.jinja"}),
    ({"torch_dtype": "bfloat16"}, {"dtype": "bf16"}),
    ({"dtype": "float32"}, {"dtype": "fp32"}),
    ({"datasets": [{"path": "a.jsonl", "type": "chat_template", "field_messages": "msgs"}]},
     {"data": [{"path": "a.jsonl", "format": "messages", "columns": {"messages": "msgs"}}]}),
    ({"datasets": [{"path": "org/a", "type": "sharegpt", "split": "train", "name": "en", "ds_type": "json"},
                   {"path": "org/b", "type": "alpaca"}]},
     {"data": [{"path": "org/a", "format": "sharegpt", "split": "train", "name": "en"},
               {"path": "org/b", "format": "alpaca"}]}),
    ({"assistant_only_loss": True}, {"masking": "assistant"}),
    ({"train_on_inputs": False}, {"masking": "assistant"}),
    ({"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "lora_target_modules": ["q_proj"]},
     {"lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj"]}}),
    ({"use_peft": True}, {"lora": {"target_modules": ["q_proj", "v_proj"]}}),  # peft's Llama default, as TRL
    ({"adapter": "lora", "lora_r": 4}, {"lora": {"r": 4}}),
    ({"val_set_size": 0.05}, {"eval_fraction": 0.05}),
    ({"micro_batch_size": 2, "num_epochs": 3, "sample_packing": True},
     {"per_device_train_batch_size": 2, "num_train_epochs": 3, "packing": True}),
    ({"dataset_text_field": "text", "learning_rate": 1e-4}, {"learning_rate": 1e-4}),
])
def test_each_alias_maps_onto_sftlab_keys(raw, want):
    assert resolve_aliases(raw) == want


def test_each_rewrite_is_printed_once_in_the_issue_form(capsys):
    resolve_aliases({"warmup_ratio": 0.1, "lora_r": 8})
    resolve_aliases({"warmup_ratio": 0.1})
    err = capsys.readouterr().err.splitlines()
    assert err.count("`warmup_ratio: 0.1` read as `warmup_steps: 0.1`") == 1
    assert "`lora_r: 8` read as `lora.r: 8`" in err


@pytest.mark.parametrize("raw, words", [
    ({"max_length": 64, "model_max_length": 64}, ["max_length", "model_max_length"]),
    ({"max_length": 64, "sequence_len": 64}, ["max_length", "sequence_len"]),
    ({"model": "a", "base_model": "a"}, ["base_model", "model"]),
    ({"lora": {"r": 4}, "lora_r": 8}, ["lora_r", "lora"]),
    ({"lora_r": 8, "lora": {"alpha": 4}}, ["lora_r", "lora"]),
    ({"val_set_size": 0.1, "eval_fraction": 0.1}, ["val_set_size", "eval_fraction"]),
    ({"assistant_only_loss": True, "train_on_inputs": False}, ["train_on_inputs", "assistant_only_loss"]),
    ({"use_peft": False, "lora_r": 8}, ["use_peft", "lora_r"]),
    ({"warmup_ratio": 1.5}, ["warmup_ratio", "[0, 1)"]),
    ({"adapter": "qlora"}, ["qlora"]),
    ({"dataset_config": "en"}, ["data.name set without the dataset"]),
    ({"torch_dtype": "float32", "dtype": "fp32"}, ["torch_dtype", "dtype"]),
    ({"datasets": [{"path": "x", "type": "dpo"}]}, ["datasets[0].type", "dpo"]),
    ({"datasets": [{"path": "x", "shards": 2}]}, ["unknown Axolotl dataset key 'shards'"]),
])
def test_alias_conflicts_and_bad_values_are_config_errors(raw, words):
    with pytest.raises(ConfigError) as e:
        resolve_aliases(raw)
    for w in words:
        assert w in str(e.value)


def test_assistant_only_loss_false_is_a_full_sequence_strategy_or_a_clear_error():
    from sftlab.prep.masking import STRATEGIES

    full = [s for s in aliases.FULL_SEQUENCE_STRATEGIES if s in STRATEGIES]
    if full:
        assert resolve_aliases({"assistant_only_loss": False}) == {"masking": full[0]}
    else:
        with pytest.raises(ConfigError, match="assistant_only_loss: false"):
            resolve_aliases({"assistant_only_loss": False})


def test_issue_keys_load_from_a_file_and_overrides_replace_the_aliased_key(tmp_path, tiny_model_dir):
    cfg_file = tmp_path / "peer.yaml"
    cfg_file.write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_name: org/not-used\nwarmup_ratio: 0.1\n"
        "max_seq_length: 96\nassistant_only_loss: true\nlora_r: 4\nval_set_size: 0.25\nreport_to: none\n")
    cfg, ta = load_config(cfg_file, ["--data", str(SMOLTALK)])
    assert (cfg.model, cfg.data, cfg.model_max_length, cfg.masking) == (str(tiny_model_dir), str(SMOLTALK), 96,
                                                                        "assistant")
    assert cfg.lora is not None and cfg.lora.r == 4 and cfg.lora.alpha == 32
    assert cfg.eval_fraction == 0.25 and ta["warmup_steps"] == 0.1


def test_an_override_replaces_the_file_key_of_the_same_meaning():
    from sftlab.train.aliases import without_replaced

    file_raw = {"dataset_name": "org/d", "dataset_config": "en", "lora_alpha": 16, "max_length": 64}
    assert without_replaced(file_raw, {"data": "x.jsonl", "lora": {"r": 4}, "model_max_length": 32}) == {
        "lora_alpha": 16}


def test_unknown_peer_key_is_still_unknown_with_a_suggestion(capsys, tiny_model_dir):
    err = _cli_error(capsys, "train", str(FIXTURES / "trl_sft_config.yaml"), "--model_name_or_path",
                     str(tiny_model_dir), "--dataset_name", str(SMOLTALK), "--warmup_ration", "0.1")
    assert "unknown config key 'warmup_ration'" in err and "did you mean 'warmup_ratio'" in err
    err = _cli_error(capsys, "train", str(FIXTURES / "trl_sft_config.yaml"), "--model_name_or_path",
                     str(tiny_model_dir), "--dataset_name", str(SMOLTALK), "--max_length", "64",
                     "--sequence_len", "64")
    assert "both set model_max_length" in err


@pytest.mark.integration
def test_trl_documentation_config_trains_unchanged(tmp_path, tiny_model_dir):
    """TRL's example config, with only the model, data and output dir passed by TRL's own key names."""
    out = tmp_path / "out"
    proc = ok(run_cli("train", str(FIXTURES / "trl_sft_config.yaml"), "--model_name_or_path", str(tiny_model_dir),
                      "--dataset_name", str(SMOLTALK), "--output_dir", str(out)))
    assert proc.stderr.count(f"`model_name_or_path: {tiny_model_dir}` read as `model: {tiny_model_dir}`") == 1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] > 0 and summary["final_loss"] is not None
    saved = (out / "sftlab_config.yaml").read_text()
    assert "lr_scheduler_type: cosine" in saved and "model_name_or_path" not in saved


@pytest.mark.integration
def test_trl_recipe_with_lora_and_warmup_ratio_trains(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    proc = ok(run_cli("train", str(FIXTURES / "trl_sft_recipe.yaml"), "--model_name_or_path", str(tiny_model_dir),
                      "--dataset_name", str(SMOLTALK), "--output_dir", str(out)))
    for line in ("`warmup_ratio: 0.1` read as `warmup_steps: 0.1`", "`max_length: 256` read as `model_max_length: 256`",
                 "`assistant_only_loss: true` read as `masking: assistant`", "`lora_r: 8` read as `lora.r: 8`"):
        assert proc.stderr.count(line) == 1, proc.stderr
    assert "`dataset_text_field: text` accepted: " in proc.stderr
    assert (out / "adapter").is_dir() and (out / "model.safetensors").is_file()
    import yaml

    saved = yaml.safe_load((out / "sftlab_config.yaml").read_text())
    assert saved["warmup_steps"] == 0.1 and saved["lora"]["r"] == 8 and saved["model_max_length"] == 256


def test_keys_help_lists_the_aliases():
    proc = run_cli("train", str(FIXTURES / "trl_sft_config.yaml"), "--keys")
    assert proc.returncode == 0
    assert "warmup_ratio -> warmup_steps" in proc.stdout and "lora_r -> lora.r" in proc.stdout


def test_readme_documents_every_alias():
    readme = Path(REPO_ROOT / "README.md").read_text()
    for name in aliases.ALIASES:
        assert f"`{name}`" in readme, name


def test_axolotl_train_on_eos_words(tiny_model_dir):
    base = {"model": str(tiny_model_dir), "data": str(REPO_ROOT / "tests" / "fixtures" / "smoltalk_like.jsonl")}
    assert load_config(None, {**base, "train_on_eos": "turn"})[0].train_on_eos is True
    assert load_config(None, {**base, "train_on_eos": "none"})[0].train_on_eos is False
    with pytest.raises(ConfigError, match="train_on_eos: 'last' has no sftlab equivalent"):
        load_config(None, {**base, "train_on_eos": "last"})


def test_sftlab_run_reads_peer_keys_too(tiny_model_dir, tmp_path, ifeval_dir):
    """``sftlab run`` finds the model under TRL's name and hands sftlab's keys to training."""
    import yaml

    from sftlab.experiment.run import load_run_config

    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "dataset_name": "sharegpt",
                                 "max_seq_length": 256, "eval": {"ifeval_data": str(ifeval_dir / "input_data.jsonl")}}),
                 encoding="utf-8")
    train = load_run_config(p).train_config()
    assert train["model"] == str(tiny_model_dir) and train["data"] == "sharegpt" and train["model_max_length"] == 256
    assert not {"model_name_or_path", "dataset_name", "max_seq_length"} & set(train)
