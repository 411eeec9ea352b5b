"""``make gpu-check`` (``python -m sftlab.bench.gpucheck``): is this machine ready for the reference recipe?

Runs, each as the command a user would type, and prints a table of what ran and what was skipped:

1. **train bf16**: ``configs/smollm2-135m-smoltalk.yaml`` (the reference recipe) for ``--max-steps``
   steps (default 40) on whatever data is local: ``--data`` when given, else the recipe's hub dataset
   when it is in the local cache (or the hub is reachable), else ``tests/fixtures/smoltalk_like.jsonl``.
   Needs a CUDA GPU with bf16 (skipped otherwise; ``--allow-cpu`` runs it in fp32 on the CPU, for tests).
2. **eval vLLM**: ``sftlab eval --backend vllm`` on 20 IFEval prompts with the model just trained, when
   vLLM is installed and a GPU is present.
3. **train DeepSpeed ZeRO-2**: the same recipe through ``configs/deepspeed_zero2.json`` for a few steps,
   when DeepSpeed is installed and a GPU is present.

Exit status: 0 when every step ran or was skipped, 1 when one failed. Output goes to
``runs/gpu-check/`` (``--output-dir``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from sftlab.eval.ifeval import IFEVAL_HUB_ID

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "configs" / "smollm2-135m-smoltalk.yaml"
ZERO2 = REPO / "configs" / "deepspeed_zero2.json"
LOCAL_DATA = REPO / "tests" / "fixtures" / "smoltalk_like.jsonl"
RECIPE_DATA = "HuggingFaceTB/smol-smoltalk"
SHARED_IFEVAL = REPO.parent / "shared" / "ifeval" / "input_data.jsonl"


def gpu_info() -> tuple[bool, bool, str]:
    """(CUDA present, bf16 supported, a description)."""
    import torch

    if not torch.cuda.is_available():
        return False, False, "no CUDA GPU"
    name = torch.cuda.get_device_name(0)
    return True, bool(torch.cuda.is_bf16_supported()), f"{torch.cuda.device_count()} x {name}"


def local_data(explicit: str | None) -> str:
    """``--data``, else the recipe's dataset when it can be loaded here, else the local fixture."""
    if explicit:
        return explicit
    try:
        from huggingface_hub import try_to_load_from_cache

        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        cached = try_to_load_from_cache(RECIPE_DATA, "README.md", repo_type="dataset")
        if isinstance(cached, str) or not offline:
            return RECIPE_DATA
    except Exception:  # noqa: BLE001 - any doubt: the local fixture
        pass
    return str(LOCAL_DATA)


def _run(cmd: list[str], log: Path) -> tuple[bool, str]:
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    took = f"{time.time() - start:.0f}s"
    if proc.returncode == 0:
        return True, took
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
    return False, f"exit {proc.returncode} after {took}: {tail[0][:120]} (log: {log})"


def _train_cmd(args: argparse.Namespace, out: Path, data: str, dtype: str, steps: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "sftlab", "train", str(RECIPE), "--data", data, "--output_dir", str(out),
           "--max_steps", str(steps), "--dtype", dtype, "--overwrite_output_dir", "true",
           "--eval_strategy", "no", "--save_strategy", "no", *extra]
    if args.model:
        cmd += ["--model", args.model]
    if args.small_batch:
        cmd += ["--total_batch_size", "4", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2"]
    return cmd


def run_checks(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """The rows of the table: (step, ran/skipped/FAILED, detail)."""
    cuda, bf16, desc = gpu_info()
    out = Path(args.output_dir)
    data = local_data(args.data)
    rows: list[tuple[str, str, str]] = [("GPU", "found" if cuda else "none", desc), ("data", "local", data)]
    trained = out / "train"
    if cuda and bf16:
        ok, detail = _run(_train_cmd(args, trained, data, "bf16", args.max_steps), out / "train.log")
        rows.append(("train bf16 (reference recipe)", "ran" if ok else "FAILED", detail))
    elif args.allow_cpu:
        ok, detail = _run(_train_cmd(args, trained, data, "fp32", args.max_steps), out / "train.log")
        rows.append(("train fp32 on CPU (reference recipe)", "ran" if ok else "FAILED", detail))
    else:
        ok = False
        rows.append(("train bf16 (reference recipe)", "skipped", desc if not cuda else "GPU without bf16"))
    if not cuda:
        rows.append(("eval vLLM (20 prompts)", "skipped", "no CUDA GPU"))
    elif importlib.util.find_spec("vllm") is None:
        rows.append(("eval vLLM (20 prompts)", "skipped", "vllm not installed (pip install 'sftlab[vllm]')"))
    elif not ok:
        rows.append(("eval vLLM (20 prompts)", "skipped", "no trained model (training did not run)"))
    else:
        cmd = [sys.executable, "-m", "sftlab", "eval", "--model", str(trained), "--output-dir", str(out / "eval-vllm"),
               "--backend", "vllm", "--limit", "20", "--max-new-tokens", "256", "--ifeval-data", args.ifeval_data]
        ok_eval, detail = _run(cmd, out / "eval-vllm.log")
        rows.append(("eval vLLM (20 prompts)", "ran" if ok_eval else "FAILED", detail))
    if not cuda:
        rows.append(("train DeepSpeed ZeRO-2", "skipped", "no CUDA GPU"))
    elif importlib.util.find_spec("deepspeed") is None:
        rows.append(("train DeepSpeed ZeRO-2", "skipped", "deepspeed not installed (pip install 'sftlab[deepspeed]')"))
    else:
        import torch

        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={torch.cuda.device_count()}"]
        cmd = _train_cmd(args, out / "train-zero2", data, "bf16" if bf16 else "fp16", min(args.max_steps, 10),
                         "--deepspeed", str(ZERO2))
        cmd = launcher + cmd[1:]  # torchrun -m sftlab train ... (DeepSpeed wants a launcher)
        ok_ds, detail = _run(cmd, out / "train-zero2.log")
        rows.append(("train DeepSpeed ZeRO-2", "ran" if ok_ds else "FAILED", detail))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sftlab.bench.gpucheck", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model instead of the recipe's (a local directory works offline)")
    p.add_argument("--data", help="training data instead of whatever is local")
    p.add_argument("--ifeval-data", default=str(SHARED_IFEVAL) if SHARED_IFEVAL.is_file() else IFEVAL_HUB_ID,
                   help="IFEval inputs for the vLLM eval "
                        f"(default: ../shared/ifeval when present, else {IFEVAL_HUB_ID})")
    p.add_argument("--max-steps", type=int, default=40, help="training steps (default 40)")
    p.add_argument("--small-batch", action="store_true", help="batch 4 instead of the recipe's 128 (small machines)")
    p.add_argument("--allow-cpu", action="store_true", help="without a GPU, train in fp32 on the CPU instead of skipping")
    p.add_argument("--output-dir", default="runs/gpu-check")
    args = p.parse_args(argv)
    rows = run_checks(args)
    print("sftlab gpu-check:\n" + format_table(rows), flush=True)
    return 1 if any(r[1] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
