"""Report sections 1 to 3 and 5: environment, method and self-checks, training configuration, loss curves
(section 4, the data, is in :mod:`sftlab.report.data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sftlab.data import describe_data
from sftlab.layout import LOSS_ALL_RUNS, TRAIN_CONFIG, TRAIN_SUMMARY, loss_plot_name
from sftlab.layout import METRICS as METRICS_FILE
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.report.document import SECTION_TITLES, Block, Image, P, Section, Table, fmt_seconds
from sftlab.report.evals import EvalData
from sftlab.report.plots import plot_overlay, plot_run_loss
from sftlab.report.results import RunRecord, first, fmt_num, loss_series, training_settings
from sftlab.report.selfcheck import EXAMPLE_MAX_TOKENS, inspect_run
from sftlab.utils import environment_info

MASKING_SENTENCES = {
    "assistant": ("Masking strategy `assistant`: each message owns the tokens the chat template adds for it "
                  "(its role header, content and end-of-turn marker); the labels copy the token ids on the "
                  "assistant messages and are -100 on system and user messages, so the loss is the mean "
                  "cross-entropy over assistant tokens only."),
    "reverse": ("Masking strategy `reverse`: the model learns to predict the user. Labels copy the token ids on "
                "user messages and are -100 elsewhere; a single-turn conversation is reordered to assistant then "
                "user, and a multi-turn one without a system message gets the system prompt "
                "\"You are a good state predictor.\"."),
}


# ---- section 1 --------------------------------------------------------------------------------


def section_environment(records: list[RunRecord], base: EvalData) -> Section:
    env = environment_info()
    rows = [["report", env.get("device", "n/a"), env.get("torch", "n/a"), env.get("transformers", "n/a"),
             env.get("python", "n/a")]]
    for r in records:
        s = r.summary
        e = s.get("environment") if isinstance(s.get("environment"), dict) else {}
        device = s.get("device") or e.get("device") or "n/a"
        ws = s.get("world_size")
        if ws and ws != 1:
            device = f"{device} x {ws} processes"
        rows.append([f"training `{r.name}`", device, e.get("torch", s.get("torch", "n/a")),
                     e.get("transformers", s.get("transformers", "n/a")), e.get("python", s.get("python", "n/a"))])
    blocks = [Table(["where", "device", "torch", "transformers", "python"], rows)]
    dtypes = {r.name: r.summary.get("precision") or r.config.get("resolved_dtype") for r in records}
    if any(dtypes.values()):
        blocks.append(P("Training precision: " + ", ".join(f"`{k}` {v}" for k, v in dtypes.items() if v) + "."))
    gen = base.summary.get("generation") or {}
    if isinstance(gen, dict) and gen:
        blocks.append(P("IFEval generation settings (baseline): "
                        + ", ".join(f"{k} {v}" for k, v in gen.items()
                                    if v is not None and not isinstance(v, (dict, list)) and "hash" not in k) + "."))
    return Section(SECTION_TITLES[0], blocks)


# ---- section 2 --------------------------------------------------------------------------------


def section_method(records: list[RunRecord], best: int, data: dict[str, Any], *, model_check: bool = True) -> Section:
    strategies = sorted({str(r.config.get("masking") or "assistant") for r in records})
    blocks: list[Block] = [P(MASKING_SENTENCES.get(s, f"Masking strategy `{s}`.")) for s in strategies]
    rec = records[best]
    insp = inspect_run(rec, strategies, model_check=model_check)
    feats = insp.example
    if feats is not None:
        n_tr = sum(1 for x in feats["labels"] if x != IGNORE_INDEX)
        n = len(feats["input_ids"])
        shown = min(n, EXAMPLE_MAX_TOKENS)
        blocks.append(P(f"One conversation from the training data of run `{rec.name}` (`{rec.config.get('data')}`, "
                        f"conversation {insp.example_index + 1} of the first {insp.conversations_read} read), as the "
                        f"run's chat template renders it with special tokens visible: {n} tokens, {n_tr} of them "
                        f"trained. In the Markdown report trained tokens are between ⟦ and ⟧; in HTML they are "
                        f"highlighted." + (f" Only the first {shown} tokens are shown." if shown < n else "")))
        blocks.append(Block("tokens", segments=insp.segments))
        data["example_conversation"] = {"index": insp.example_index, "tokens": n, "trained_tokens": n_tr}
    elif not insp.conversations_read:
        blocks.append(P(f"No training conversation could be shown: {insp.why_no_example}."))
    checks = insp.checks
    data["checks"] = checks
    n_pass = sum(c["passed"] for c in checks)
    blocks.append(P(f"Self-checks run while writing this report: **{n_pass}/{len(checks)} passed**."))
    blocks.append(Table(["check", "result", "numbers"],
                        [[c["name"], "**pass**" if c["passed"] else "**FAIL**", c["detail"]] for c in checks]))
    return Section(SECTION_TITLES[1], blocks)


# ---- section 3 --------------------------------------------------------------------------------


def section_training(records: list[RunRecord]) -> Section:
    fields = [
        ("model", lambda r, st: r.config.get("model")),
        ("data", lambda r, st: describe_data(r.config.get("data"))),
        ("training examples", lambda r, st: first(r.summary, "num_train_examples")),
        ("held-out examples", lambda r, st: first(r.summary, "num_eval_examples")),
        ("per-device batch", lambda r, st: st["per_device_batch"]),
        ("gradient accumulation", lambda r, st: st["gradient_accumulation"]),
        ("world size", lambda r, st: r.summary.get("world_size", 1)),
        ("effective batch", lambda r, st: st["total_batch"]),
        ("learning rate", lambda r, st: st["learning_rate"]),
        ("epochs (configured / done)", lambda r, st: f"{fmt_num(st['epochs'])} / {fmt_num(r.summary.get('epochs'))}"),
        ("total optimizer steps", lambda r, st: first(r.summary, "global_step")),
        ("max length", lambda r, st: st["max_length"]),
        ("warmup", lambda r, st: st["warmup"]),
        ("scheduler", lambda r, st: st["scheduler"]),
        ("masking", lambda r, st: st["masking"]),
        ("loss implementation", lambda r, st: st["loss"]),
        ("precision", lambda r, st: r.summary.get("precision") or r.config.get("resolved_dtype")),
        ("tokens seen", lambda r, st: first(r.summary, "tokens", "total_tokens")),
        ("trained tokens", lambda r, st: first(r.summary, "trained_tokens")),
        ("training time", lambda r, st: fmt_seconds(first(r.summary, "train_time_s"))),
        ("wall time (last invocation)", lambda r, st: fmt_seconds(first(r.summary, "wall_time_s"))),
        ("tokens/s", lambda r, st: first(r.summary, "tokens_per_s")),
        ("first / final training loss", lambda r, st: _first_last(r)),
        ("final model", lambda r, st: f"`{r.train_dir.resolve()}`"),
        ("last checkpoint", lambda r, st: f"`{r.summary['final_checkpoint']}`" if r.summary.get("final_checkpoint")
         else "none kept"),
    ]
    rows = []
    for label, fn in fields:
        vals = []
        for r in records:
            v = fn(r, training_settings(r))
            vals.append(v if isinstance(v, str) else fmt_num(v) or "n/a")
        rows.append([label] + vals)
    blocks = [P(f"From each run's resolved `{TRAIN_CONFIG}` and `{TRAIN_SUMMARY}`."),
              Table(["setting"] + [f"`{r.name}`" for r in records], rows)]
    return Section(SECTION_TITLES[2], blocks)


def _first_last(r: RunRecord) -> str:
    train, _ = loss_series(r)
    if not train:
        return "n/a"
    return f"{train[0][1]:.4f} → {train[-1][1]:.4f}"

# ---- section 5 --------------------------------------------------------------------------------


def section_loss(records: list[RunRecord], images: dict[str, bytes], out_dir: Path) -> Section:
    blocks: list[Block] = []
    for r in records:
        train, ev = loss_series(r)
        if not train:
            blocks.append(P(f"Run `{r.name}`: no training loss was logged (no `{METRICS_FILE}` lines with a loss)."))
            continue
        name = loss_plot_name(r.name)
        images[name] = plot_run_loss(r, out_dir / name)
        desc = (f"Run `{r.name}`: training loss per optimizer step from `{METRICS_FILE}` ({len(train)} logged steps, "
                f"{train[0][1]:.4f} at step {train[0][0]:g}, {train[-1][1]:.4f} at step {train[-1][0]:g})")
        if len(ev) == 1:
            desc += f"; held-out loss {ev[0][1]:.4f} at step {ev[0][0]:g}"
        elif ev:
            desc += f"; held-out loss {ev[0][1]:.4f} → {ev[-1][1]:.4f} over {len(ev)} evaluations"
        blocks.append(Image(name, desc + "."))
    if len(records) > 1:
        images[LOSS_ALL_RUNS] = plot_overlay(records)
        blocks.append(Image(LOSS_ALL_RUNS, f"Training loss of all {len(records)} runs, overlaid."))
    return Section(SECTION_TITLES[4], blocks)
