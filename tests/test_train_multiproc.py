"""``torchrun --nproc_per_node 2 -m sftlab train``: two CPU processes (gloo) train like one.

With every optimizer step covering the whole (tiny) training set, two processes x 2 accumulation
steps and one process x 4 accumulation steps see exactly the same examples per step. Their losses and
final weights must then agree to float noise: that proves the gradients are synchronised and the
loss is normalised by the global token count (``num_items_in_batch`` x processes), not per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_cli
from test_train import SMOKE, max_abs_diff, ok, train_losses, weights, write_conversations


@pytest.mark.integration
def test_torchrun_two_processes_matches_one_process(tmp_path, tiny_model_dir):
    data = write_conversations(tmp_path / "convs.jsonl", n=8)
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--eval_fraction", "0",
              "--total_batch_size", "8", "--per_device_train_batch_size", "2", "--num_train_epochs", "3",
              "--save_steps", "2"]
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sftlab", "train", SMOKE, *common, "--output_dir", str(ddp_out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    ok(ddp)
    ok(run_cli("train", SMOKE, *common, "--output_dir", str(single_out)))

    summary = json.loads((ddp_out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["gradient_accumulation_steps"] == 2
    assert summary["effective_batch_size"] == 8 and summary["global_step"] == 3
    assert json.loads((single_out / "train_summary.json").read_text())["gradient_accumulation_steps"] == 4
    # both processes' RNG states are checkpointed; one model is saved (by rank 0), one metrics line a step
    assert {p.name for p in (ddp_out / "checkpoint-2").glob("rng_state*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert len(list(ddp_out.glob("*.safetensors"))) == 1
    assert ddp.stdout.count("sftlab train: done") == 1

    ddp_losses, single_losses = train_losses(ddp_out), train_losses(single_out)
    assert sorted(ddp_losses) == [1, 2, 3] and ddp_losses[3] < ddp_losses[1]
    for step, loss in single_losses.items():
        assert ddp_losses[step] == pytest.approx(loss, abs=1e-4), step
    # tokens are summed over both processes
    assert summary["tokens"] == json.loads((single_out / "train_summary.json").read_text())["tokens"]
    assert max_abs_diff(weights(ddp_out), weights(single_out)) < 1e-4
