"""``push_to_hub: true``: upload exactly the trained model and what describes it, with a model card.

The Trainer's own push (``TrainingArguments.push_to_hub``) uploads the whole output directory less
its checkpoints: the preprocessing ``cache/`` (the tokenized training data), TensorBoard ``runs/``,
``metrics.jsonl`` and the lock file included, and writes no card saying what was trained. sftlab turns
it off (see :func:`sftlab.train.config.resolve_training_arguments`) and pushes itself once training has
finished, from a staging folder that holds exactly:

* the final model (``config.json``, ``generation_config.json``, the safetensors weights and index),
* the tokenizer with the chat template used in training,
* ``sftlab_config.yaml``, ``train_summary.json`` and ``loss_curve.png``,
* ``README.md``: a model card written by :func:`model_card` (base model, data and mix, masking,
  hyperparameters, loss, IFEval figures when an evaluation ran, how to load it).

:func:`hub_files` and :func:`model_card` are pure (read files, return names and text);
:func:`upload_folder` is the one call that touches the network. The token comes from the
environment only (``HF_TOKEN`` or ``huggingface-cli login``), never from a config.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sftlab import layout
from sftlab.errors import SftlabError
from sftlab.utils import atomic_write_text

#: Files of the final model, at the top of the output directory.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json")
MODEL_SHARD_GLOB = "model-*-of-*.safetensors"
#: Tokenizer files (whichever the tokenizer saved), the chat template included.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")
#: sftlab's records of the run.
RECORD_FILES = (layout.TRAIN_CONFIG, layout.TRAIN_SUMMARY, layout.LOSS_CURVE)
CARD = "README.md"


def hub_files(output_dir: str | Path) -> list[str]:
    """The files of ``output_dir`` that a push uploads (names relative to it, sorted), README.md
    (written by the push) not included. Raises when the run has not finished or saved no model."""
    root = Path(output_dir)
    if not (root / layout.TRAIN_SUMMARY).is_file():
        raise SftlabError(f"{root} holds no finished training run ({layout.TRAIN_SUMMARY} is missing)")
    names = [n for n in MODEL_FILES + TOKENIZER_FILES + RECORD_FILES if (root / n).is_file()]
    names += [p.name for p in root.glob(MODEL_SHARD_GLOB) if p.is_file()]
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise SftlabError(f"{root} holds no saved model (config.json and safetensors weights)")
    if not any(n in names for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise SftlabError(f"{root} holds no saved tokenizer")
    return sorted(set(names))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def ifeval_figures(output_dir: str | Path) -> dict[str, Any]:
    """IFEval results that belong to this training run, when any evaluation ran.

    ``finetuned``/``baseline``: the summaries of ``sftlab run`` when ``output_dir`` is the ``train/``
    folder of an experiment (found through :mod:`sftlab.layout`); ``during_training``: the last
    ``ifeval_*`` record of ``metrics.jsonl`` (``ifeval_eval_steps``).
    """
    root = Path(output_dir).resolve()
    out: dict[str, Any] = {}
    if root.name == layout.TRAIN:
        for key, eval_dir in (("baseline", layout.RunDir(root.parent).baseline),
                              ("finetuned", layout.RunDir(root.parent).finetuned)):
            summary = _read_json(eval_dir.summary)
            if "prompt_level_strict_acc" in summary:
                out[key] = summary
    metrics = root / layout.METRICS
    if metrics.is_file():
        recs = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        during = [r for r in recs if r.get("ifeval_prompt_strict") is not None]
        if during:
            out["during_training"] = during[-1]
    return out


def ifbench_figures(output_dir: str | Path) -> dict[str, Any]:
    """IFBench results of this training run: ``sftlab run``'s ``baseline_eval_ifbench``/``finetuned_eval_ifbench``
    summaries, and the last ``ifbench_*`` record of ``metrics.jsonl`` (``ifeval_eval_ifbench_sample``)."""
    root = Path(output_dir).resolve()
    out: dict[str, Any] = {}
    if root.name == layout.TRAIN:
        run = layout.RunDir(root.parent)
        for key, eval_dir in (("baseline", run.baseline_for("ifbench")), ("finetuned", run.finetuned_for("ifbench"))):
            summary = _read_json(eval_dir.summary)
            if "prompt_level_loose_acc" in summary:
                out[key] = summary
    metrics = root / layout.METRICS
    if metrics.is_file():
        recs = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        during = [r for r in recs if r.get("ifbench_prompt_loose") is not None]
        if during:
            out["during_training"] = during[-1]
    return out


def _ifbench_lines(figures: dict[str, Any]) -> list[str]:
    """The card's IFBench table: prompt-level loose (the benchmark's headline) first."""
    lines = ["[IFBench](https://github.com/allenai/IFBench) (AllenAI, data ODC-BY-1.0): 58 constraint types that "
             "are not IFEval's, on held-out prompts; headline: prompt-level loose.", "",
             "| model | prompt loose | prompt strict | instruction loose | instruction strict | prompts |",
             "|---|---|---|---|---|---|"]
    for key, label in (("baseline", "base model"), ("finetuned", "this model")):
        s = figures.get(key)
        if s:
            lines.append(f"| {label} | {_pct(s.get('prompt_level_loose_acc'))} | "
                         f"{_pct(s.get('prompt_level_strict_acc'))} | {_pct(s.get('inst_level_loose_acc'))} | "
                         f"{_pct(s.get('inst_level_strict_acc'))} | {s.get('counts', {}).get('prompts', 'n/a')} |")
    d = figures.get("during_training")
    if d:
        lines.append(f"| this model at step {d.get('step')} (seeded sample, during training) | "
                     f"{_pct(d.get('ifbench_prompt_loose'))} | {_pct(d.get('ifbench_prompt_strict'))} | "
                     f"{_pct(d.get('ifbench_inst_loose'))} | n/a | {d.get('ifbench_prompts', 'n/a')} |")
    return lines


def _data_lines(data: Any) -> list[str]:
    specs = data if isinstance(data, list) else [data]
    total = sum(float(s.get("weight", 1.0)) for s in specs if isinstance(s, dict)) or 1.0
    lines = []
    for spec in specs:
        if not isinstance(spec, dict):
            lines.append(f"- `{spec}`")
            continue
        extra = [f"{k}: {spec[k]}" for k in ("name", "split", "format", "max_samples") if spec.get(k)]
        if len(specs) > 1:
            extra.append(f"weight {spec.get('weight', 1.0)} ({100 * float(spec.get('weight', 1.0)) / total:.0f}% "
                         "of the mix)")
        lines.append(f"- `{spec.get('path')}`" + (f" ({', '.join(extra)})" if extra else ""))
    return lines


def _hub_datasets(data: Any) -> list[str]:
    """The hub ids among a config's data (or model) specs: ``owner/name`` that is no local path."""
    specs = data if isinstance(data, list) else [data]
    paths = [s.get("path") if isinstance(s, dict) else s for s in specs]
    return [p for p in paths if isinstance(p, str) and p.count("/") == 1 and not Path(p).exists()
            and Path(p).suffix not in (".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow")]


HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "total_batch_size", "lr_scheduler_type", "warmup_steps",
                   "weight_decay", "max_grad_norm", "optim", "model_max_length", "truncation", "padding", "packing",
                   "loss", "dtype", "seed")


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


def _ifeval_lines(figures: dict[str, Any]) -> list[str]:
    if not figures:
        return ["No IFEval evaluation ran with this training run."]
    lines = ["| model | prompt strict | instruction strict | prompt loose | instruction loose | prompts |",
             "|---|---|---|---|---|---|"]
    for key, label in (("baseline", "base model"), ("finetuned", "this model")):
        s = figures.get(key)
        if s:
            lines.append(f"| {label} | {_pct(s.get('prompt_level_strict_acc'))} | "
                         f"{_pct(s.get('inst_level_strict_acc'))} | {_pct(s.get('prompt_level_loose_acc'))} | "
                         f"{_pct(s.get('inst_level_loose_acc'))} | {s.get('counts', {}).get('prompts', 'n/a')} |")
    d = figures.get("during_training")
    if d:
        lines.append(f"| this model at step {d.get('step')} (seeded sample, during training) | "
                     f"{_pct(d.get('ifeval_prompt_strict'))} | {_pct(d.get('ifeval_inst_strict'))} | n/a | n/a | "
                     f"{d.get('ifeval_prompts', 'n/a')} |")
    return lines


def _front_matter(cfg: dict[str, Any]) -> str:
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation",
                            "tags": ["sftlab", "sft", "trl-compatible"]}
    if _hub_datasets(cfg.get("model")):  # a hub id (the hub refuses a local path as base_model)
        meta["base_model"] = str(cfg["model"])
    datasets = _hub_datasets(cfg.get("data"))
    if datasets:
        meta["datasets"] = datasets
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(output_dir: str | Path, repo_id: str) -> str:
    """The model card (``README.md``) of the run in ``output_dir``, to be published as ``repo_id``."""
    root = Path(output_dir)
    cfg = _read_yaml(root / layout.TRAIN_CONFIG)
    summary = _read_json(root / layout.TRAIN_SUMMARY)
    masking = {k: v for k, v in cfg.items()
               if k.startswith(("mask", "train_on_")) or k in ("max_rounds", "system_prompt")}
    hyper = {k: cfg[k] for k in HYPERPARAMETERS if cfg.get(k) not in (None, -1)}
    if cfg.get("lora"):
        hyper["lora"] = cfg["lora"]
    loss = {k: summary.get(k) for k in ("global_step", "epochs", "first_loss", "final_loss", "best_loss",
                                        "final_eval_loss", "trained_tokens", "precision", "effective_batch_size")}
    parts = [
        _front_matter(cfg),
        f"# {repo_id.split('/')[-1]}\n",
        f"Supervised fine-tune of `{cfg.get('model', 'unknown')}` trained with "
        f"sftlab {cfg.get('sftlab_version', '')} (`sftlab train`).\n",
        "## Data\n", *_data_lines(cfg.get("data")), "",
        f"Eval split: {'`' + str(cfg['eval_data']) + '`' if cfg.get('eval_data') else 'eval_fraction ' + str(cfg.get('eval_fraction'))}.\n",
        "## Masking\n", "The loss is computed on: " + _masking_sentence(cfg.get("masking")), "",
        "```yaml", yaml.safe_dump(masking, sort_keys=False).strip(), "```\n",
        "## Hyperparameters\n", "```yaml", yaml.safe_dump(hyper, sort_keys=False).strip(), "```\n",
        f"The full resolved config (every TrainingArguments field) is `{layout.TRAIN_CONFIG}` in this repository.\n",
        "## Training loss\n", "| " + " | ".join(loss) + " |", "|" + "---|" * len(loss),
        "| " + " | ".join(_fmt(v) for v in loss.values()) + " |", "", f"![loss curve]({layout.LOSS_CURVE})\n",
        "## IFEval\n", *_ifeval_lines(ifeval_figures(root)), "",
        *(["## IFBench\n", *_ifbench_lines(ifb), ""] if (ifb := ifbench_figures(root)) else []),
        "## How to load\n", _how_to_load(repo_id),
    ]
    return "\n".join(parts) + "\n"


def _masking_sentence(masking: Any) -> str:
    return {"assistant": "the assistant turns only (system, user and tool turns are masked).",
            "last_assistant": "the last assistant turn of each conversation only.",
            "reverse": "everything but the assistant turns (a diagnostic setting)."}.get(
        str(masking), f"masking strategy `{masking}`.")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "n/a" if v is None else str(v)


def _how_to_load(repo_id: str) -> str:
    return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")  # carries the chat template used in training
model = AutoModelForCausalLM.from_pretrained("{repo_id}")
messages = [{{"role": "user", "content": "Write a haiku about the sea."}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""


def stage(output_dir: str | Path, staging: str | Path, repo_id: str) -> list[str]:
    """Copy exactly the files a push uploads into ``staging`` (hard links where possible) and write the
    model card there; returns the staged names."""
    root, dst = Path(output_dir), Path(staging)
    names = hub_files(root)
    for name in names:
        try:
            (dst / name).hardlink_to(root / name)
        except OSError:
            shutil.copy2(root / name, dst / name)
    atomic_write_text(dst / CARD, model_card(root, repo_id))
    return sorted(names + [CARD])


def upload_folder(folder: Path, repo_id: str, *, private: bool | None, revision: str | None) -> str:
    """The one network call: create the repo when needed and upload ``folder`` as one commit."""
    from huggingface_hub import HfApi

    api = HfApi()  # the token from the environment (HF_TOKEN) or the login cache, never from a config
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo.repo_id, repo_type="model",
                             revision=revision, commit_message="Upload model trained with sftlab")
    return str(getattr(info, "commit_url", repo.repo_id))


def push_to_hub(output_dir: str | Path, repo_id: str | None = None, *, private: bool | None = None,
                revision: str | None = None) -> dict[str, Any]:
    """Upload the finished run in ``output_dir`` as ``repo_id`` (default: the output folder's name, or
    the experiment's for ``<experiment>/train``, in the token's namespace); returns
    ``{"repo_id", "files", "url"}``."""
    root = Path(output_dir)
    if not repo_id:  # the experiment's name for the train/ folder of `sftlab run`, else the folder's own
        resolved = root.resolve()
        repo_id = resolved.parent.name if resolved.name == layout.TRAIN else resolved.name
    with tempfile.TemporaryDirectory(prefix="sftlab-hub-") as tmp:
        files = stage(root, tmp, repo_id)
        try:
            url = upload_folder(Path(tmp), repo_id, private=private, revision=revision)
        except Exception as e:  # network, auth, permissions: the run itself is saved and complete
            raise SftlabError(f"push_to_hub: upload to {repo_id} failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); the model is saved in {root}; "
                              f"retry once the hub is reachable: python -m sftlab.train.hub {root} {repo_id}") from e
    return {"repo_id": repo_id, "files": files, "url": url}


def main(argv: list[str] | None = None) -> int:
    """``python -m sftlab.train.hub OUTPUT_DIR [REPO_ID]``: push a finished run (a retry after a failed upload)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2 or args[0].startswith("-"):
        print("usage: python -m sftlab.train.hub OUTPUT_DIR [REPO_ID]", file=sys.stderr)
        return 2
    try:
        done = push_to_hub(args[0], args[1] if len(args) > 1 else None)
    except SftlabError as e:
        print(f"sftlab hub: error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {len(done['files'])} files to {done['repo_id']}: {done['url']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
