"""``report_to``: any integration transformers supports, validated by transformers; TensorBoard,
W&B (offline) and trackio (local) all record the loss history of one tiny run, with no network."""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli
from test_train import ok

SMOKE = str(REPO_ROOT / "configs" / "tiny-smoke.yaml")
SMOLTALK = REPO_ROOT / "tests" / "fixtures" / "smoltalk_like.jsonl"


def _cli_error(capsys, *args: str) -> str:
    from sftlab.cli import main

    rc = main(list(args))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and "\n" not in err, err
    return err


def test_unknown_integration_is_one_line_with_transformers_list(capsys, tiny_model_dir):
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tiny_model_dir), "--data", str(SMOLTALK),
                     "--report_to", "tensorbord")
    assert "report_to: unknown integration 'tensorbord'; did you mean 'tensorboard'?" in err
    assert "trackio" in err and "mlflow" in err  # the names come from transformers' table


def test_trackio_and_mlflow_are_accepted_names(capsys, monkeypatch, tiny_model_dir):
    """No sftlab list refuses them: trackio validates; mlflow fails only on its missing package."""
    from transformers.integrations import integration_utils

    from sftlab.train.config import load_config

    _, ta = load_config(SMOKE, ["--model", str(tiny_model_dir), "--data", str(SMOLTALK), "--report_to", "trackio"])
    assert ta["report_to"] == "trackio"
    monkeypatch.setattr(integration_utils, "is_mlflow_available", lambda: False)
    err = _cli_error(capsys, "train", SMOKE, "--model", str(tiny_model_dir), "--data", str(SMOLTALK),
                     "--report_to", "[tensorboard, mlflow]")
    assert err.endswith("report_to: mlflow needs the mlflow package (pip install mlflow)")


def wandb_history(path: Path) -> list[dict]:
    """The history records of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk  # full/first start a record; middle/last extend it
        if kind in (1, 4):
            rec = pb2.Record()
            rec.ParseFromString(buf)
            if rec.WhichOneof("record_type") == "history":
                out.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return out


@pytest.mark.integration
def test_tensorboard_wandb_offline_and_trackio_record_the_loss_history(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_DISABLED": "",
           "WANDB_SILENT": "true", "TRACKIO_DIR": str(tmp_path / "trackio"), "WANDB_PROJECT": "sftlab-test"}
    (tmp_path / "wb").mkdir()
    ok(run_cli("train", SMOKE, "--model", str(tiny_model_dir), "--data", str(SMOLTALK), "--output_dir", str(out),
               "--report_to", "[tensorboard, wandb, trackio]", "--max_steps", "3", env=env))
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(out.glob("runs/*/events.out.tfevents.*"))
    assert len(events) == 1, list(out.rglob("*tfevents*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(losses)

    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    wb = [h["train/loss"] for h in wandb_history(runs[0]) if "train/loss" in h]
    assert wb == pytest.approx(losses)

    db = tmp_path / "trackio" / "huggingface.db"  # trackio's local store: one SQLite file per project
    rows = sqlite3.connect(db).execute("select metrics from metrics order by step").fetchall()
    tk = [json.loads(m)["train/loss"] for (m,) in rows if "train/loss" in json.loads(m)]
    assert tk == pytest.approx(losses)
