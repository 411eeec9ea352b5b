"""The reference recipe never rots: it trains on CPU with overrides (tiny model, local smoltalk-format
data, 2 steps, fp32), and ``make gpu-check`` reports what ran and what was skipped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_cli
from test_train import ok

RECIPE = str(REPO_ROOT / "configs" / "smollm2-135m-smoltalk.yaml")
SMOLTALK = str(REPO_ROOT / "tests" / "fixtures" / "smoltalk_like.jsonl")


@pytest.mark.integration
def test_reference_recipe_trains_on_cpu_with_overrides(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    ok(run_cli("train", RECIPE, "--model", str(tiny_model_dir), "--data", SMOLTALK, "--output_dir", str(out),
               "--max_steps", "2", "--total_batch_size", "4", "--per_device_train_batch_size", "2",
               "--per_device_eval_batch_size", "2", "--dtype", "fp32"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["final_loss"] is not None
    assert summary["masking"] == "assistant" and summary["group_by_length"] is True


def _gpucheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftlab.bench.gpucheck", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=900)


def test_gpu_check_reports_skipped_gpu_parts_on_this_machine(tmp_path):
    import torch

    proc = _gpucheck("--output-dir", str(tmp_path / "gc"), "--data", SMOLTALK)
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert "ran" in proc.stdout or "FAILED" in proc.stdout
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sftlab gpu-check:"
    for step in ("train bf16 (reference recipe)", "eval vLLM (20 prompts)", "train DeepSpeed ZeRO-2"):
        row = next(line for line in lines if line.startswith(step))
        assert "skipped" in row and "no CUDA GPU" in row, row


@pytest.mark.integration
def test_gpu_check_allow_cpu_trains_the_recipe(tmp_path, tiny_model_dir):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - on a GPU the bf16 path runs instead
        return
    proc = _gpucheck("--output-dir", str(tmp_path / "gc"), "--data", SMOLTALK, "--model", str(tiny_model_dir),
                     "--max-steps", "2", "--small-batch", "--allow-cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("train fp32 on CPU"))
    assert " ran " in row, proc.stdout
    assert (tmp_path / "gc" / "train" / "train_summary.json").is_file()
