"""``push_to_hub: true``: exactly the final model, tokenizer, records and a model card are handed to the
upload, never ``cache/``, checkpoints or logs; the Trainer's own push is off. The hub is never reached:
the upload function is replaced and the staged folder it receives is inspected."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from sftlab import layout
from sftlab.errors import SftlabError
from sftlab.train import hub

SMOKE = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")
SMOLTALK = REPO_ROOT / "tests" / "fixtures" / "smoltalk_like.jsonl"
EXPECTED = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "sftlab_config.yaml", "train_summary.json", "loss_curve.png", "README.md"}


def _capture_upload(monkeypatch) -> dict:
    got: dict = {}

    def fake_upload(folder: Path, repo_id: str, *, private, revision):
        got.update(repo_id=repo_id, private=private, revision=revision,
                   files=sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
                   card=(folder / "README.md").read_text())
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(hub, "upload_folder", fake_upload)
    return got


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_model_dir):
    """One tiny run in an `sftlab run`-shaped folder, trained in-process with push_to_hub: true."""
    from sftlab.cli import main

    mp = pytest.MonkeyPatch()
    got = _capture_upload(mp)
    import transformers

    def no_trainer_push(*a, **k):
        raise AssertionError("the Trainer's own push_to_hub ran")

    mp.setattr(transformers.Trainer, "push_to_hub", no_trainer_push)
    exp = tmp_path_factory.mktemp("exp")
    out = exp / layout.TRAIN
    rc = main(["train", SMOKE, "--model", str(tiny_model_dir), "--data", str(SMOLTALK), "--output_dir", str(out),
               "--max_steps", "3", "--save_steps", "2", "--report_to", "tensorboard", "--push_to_hub", "true",
               "--hub_model_id", "someone/tiny-sft", "--hub_private_repo", "true"])
    mp.undo()
    assert rc == 0
    return out, got


@pytest.mark.integration
def test_push_uploads_exactly_the_model_tokenizer_records_and_card(pushed):
    out, got = pushed
    assert got["repo_id"] == "someone/tiny-sft" and got["private"] is True
    assert set(got["files"]) == EXPECTED, got["files"]
    # ...while the output dir also holds what must never be uploaded
    assert (out / "cache").is_dir() and list(out.glob("checkpoint-*")) and list(out.glob("runs/*/events.*"))
    assert (out / "metrics.jsonl").is_file()
    saved = yaml.safe_load((out / layout.TRAIN_CONFIG).read_text())
    assert saved["push_to_hub"] is True  # the record keeps the user's setting (sftlab's push, not the Trainer's)


@pytest.mark.integration
def test_card_describes_the_run_and_its_snippet_loads_the_model(pushed):
    out, got = pushed
    card = got["card"]
    front = yaml.safe_load(card.split("---\n")[1])
    assert "base_model" not in front  # a local path: the hub takes only a hub id there
    assert f"fine-tune of `{yaml.safe_load((out / layout.TRAIN_CONFIG).read_text())['model']}`" in card
    summary = json.loads((out / layout.TRAIN_SUMMARY).read_text())
    for text in (f"`{SMOLTALK}`", "## Masking", "masking: assistant", "the assistant turns only", "learning_rate: 0.003",
                 "lr_scheduler_type: constant", "model_max_length: 128", f"{summary['final_loss']:.4f}",
                 "![loss curve](loss_curve.png)", "No IFEval evaluation ran", 'from_pretrained("someone/tiny-sft")'):
        assert text in card, text
    # the "how to load" snippet works, pointed at the local folder
    code = re.search(r"```python\n(.*?)```", hub.model_card(out, str(out)), re.S).group(1)
    exec(compile(code, "card-snippet", "exec"), {})


def _fake_run(root: Path, *, data) -> Path:
    root.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "loss_curve.png", "metrics.jsonl", "stats.json",
                 "trainer_state.json", ".sftlab-train.lock", "training_args.bin"):
        (root / name).write_text("{}")
    for sub in ("cache/abc", "checkpoint-2", "runs/Nov30", "adapter", "eval_data"):
        (root / sub).mkdir(parents=True)
        (root / sub / "x.safetensors").write_text("x")
    (root / layout.TRAIN_CONFIG).write_text(yaml.safe_dump({
        "model": "HuggingFaceTB/SmolLM2-135M", "data": data, "masking": "assistant", "learning_rate": 2e-5,
        "num_train_epochs": 3, "max_steps": -1, "lora": None, "sftlab_version": "0.1"}))
    (root / layout.TRAIN_SUMMARY).write_text(json.dumps({"global_step": 10, "final_loss": 1.25, "first_loss": 2.5}))
    return root


def test_file_list_is_exact_and_refuses_an_unfinished_run(tmp_path):
    root = _fake_run(tmp_path / "run", data="HuggingFaceTB/smol-smoltalk")
    assert set(hub.hub_files(root)) == EXPECTED - {"README.md"}
    (root / layout.TRAIN_SUMMARY).unlink()
    with pytest.raises(SftlabError, match="no finished training run"):
        hub.hub_files(root)


def test_card_shows_the_mix_and_ifeval_figures_of_the_experiment(tmp_path):
    data = [{"path": "HuggingFaceTB/smol-smoltalk", "split": "train", "weight": 3.0},
            {"path": "local/extra.jsonl", "format": "sharegpt", "weight": 1.0}]
    root = _fake_run(tmp_path / "exp" / layout.TRAIN, data=data)
    run = layout.RunDir(tmp_path / "exp")
    for eval_dir, p in ((run.baseline, 0.125), (run.finetuned, 0.375)):
        eval_dir.root.mkdir()
        eval_dir.summary.write_text(json.dumps({"prompt_level_strict_acc": p, "inst_level_strict_acc": 0.5,
                                                "prompt_level_loose_acc": 0.4, "inst_level_loose_acc": 0.6,
                                                "counts": {"prompts": 8}}))
    with open(root / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 5, "ifeval_prompt_strict": 0.25, "ifeval_inst_strict": 0.3,
                            "ifeval_prompts": 4}) + "\n")
    card = hub.model_card(root, "me/model")
    assert "weight 3.0 (75% of the mix)" in card and "weight 1.0 (25% of the mix)" in card
    assert "| base model | 12.5% |" in card and "| this model | 37.5% |" in card
    assert "| this model at step 5 (seeded sample, during training) | 25.0% | 30.0%" in card
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["datasets"] == ["HuggingFaceTB/smol-smoltalk"]
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M"


def test_a_failed_upload_is_one_error_naming_the_retry(tmp_path, monkeypatch):
    root = _fake_run(tmp_path / "run", data="x.jsonl")

    def boom(*a, **k):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(hub, "upload_folder", boom)
    with pytest.raises(SftlabError, match=r"upload to me/m failed .*python -m sftlab.train.hub"):
        hub.push_to_hub(root, "me/m")
    got = _capture_upload(monkeypatch)
    exp_train = _fake_run(tmp_path / "my-exp" / layout.TRAIN, data="x.jsonl")
    assert hub.push_to_hub(exp_train)["repo_id"] == "my-exp" and got["repo_id"] == "my-exp"
    assert hub.main([str(root), "me/again"]) == 0 and got["repo_id"] == "me/again"


def test_trainer_push_is_off_and_the_token_stays_out_of_configs(tiny_model_dir):
    from sftlab.train.config import load_config, resolve_training_arguments

    cfg, ta = load_config(SMOKE, ["--model", str(tiny_model_dir), "--data", str(SMOLTALK), "--push_to_hub", "true"])
    run = resolve_training_arguments(cfg, ta)
    assert run.push_to_hub is True and run.args.push_to_hub is False
    with pytest.raises(SftlabError, match="HF_TOKEN"):
        load_config(SMOKE, ["--model", str(tiny_model_dir), "--data", str(SMOLTALK), "--hub_token", "hf_x"])
