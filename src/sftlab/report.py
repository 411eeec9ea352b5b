"""The experiment report, written from the runs themselves: ``report.md`` and a self-contained ``report.html``.

Every number in the report is read from files the other stages wrote (``train_summary.json``,
``metrics.jsonl``, ``sftlab_config.yaml``, ``eval_results_{strict,loose}.jsonl``, ``summary.json``)
or measured while the report is written (the self-checks); nothing is typed in by hand, and the
analysis only says what those numbers support. Comparisons between the baseline and a fine-tuned
model are made on the prompts both were scored on, from the per-prompt verdicts, so a run evaluated
on a different subset cannot produce a misleading delta.

The document is built once as a list of sections made of small blocks (paragraphs, tables, images,
code, a token rendering) and rendered twice: Markdown next to PNG files, and HTML with the PNGs
inlined as ``data:`` URIs so the one file can be mailed or archived.

Sections (fixed): 1 Environment, 2 Method and checks, 3 Training configuration, 4 Loss curves,
5 Baseline vs fine-tuned, 6 Per-instruction results, 7 Example outputs, 8 Hyperparameters and analysis.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.sweep import (
    FIGURE_LABELS,
    FIGURES,
    RunRecord,
    best_index,
    expand_run_dirs,
    extra_varied,
    fmt_num,
    is_sweep_dir,
    log,
    read_json,
    read_jsonl,
    results_row,
    training_settings,
)
from sftlab.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, environment_info

SECTION_TITLES = (
    "1. Environment",
    "2. Method and checks",
    "3. Training configuration",
    "4. Loss curves",
    "5. Baseline vs fine-tuned",
    "6. Per-instruction results",
    "7. Example outputs",
    "8. Hyperparameters and analysis",
)
TRIM_CHARS = 700
EXAMPLE_MAX_TOKENS = 320  # token rendering shown in section 2 is cut after this many tokens
CHECK_CONVERSATIONS = 24  # training conversations the masking self-check encodes both ways


# --------------------------------------------------------------------------------------------
# Document model
# --------------------------------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # p | bullets | table | code | image | tokens
    text: str = ""
    items: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    image: str = ""  # file name of a PNG next to the report
    segments: list[tuple[str, bool, bool]] = field(default_factory=list)  # (text, trained, special)


def P(text: str) -> Block:
    return Block("p", text=text)


def Bullets(items: list[str]) -> Block:
    return Block("bullets", items=items)


def Table(headers: list[str], rows: list[list[Any]]) -> Block:
    return Block("table", headers=headers, rows=[[str(c) for c in r] for r in rows])


def Code(text: str) -> Block:
    return Block("code", text=text)


def Image(name: str, caption: str) -> Block:
    return Block("image", image=name, text=caption)


@dataclass
class Section:
    title: str
    blocks: list[Block]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, intro: list[Block], sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for sec in [Section("", intro)] + sections:
        if sec.title:
            out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "p":
                out += [b.text, ""]
            elif b.kind == "bullets":
                out += [f"- {it}" for it in b.items] + [""]
            elif b.kind == "table":
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
                out.append("")
            elif b.kind == "code":
                fence = "````" if "```" in b.text else "```"
                out += [fence + "text", b.text.rstrip("\n"), fence, ""]
            elif b.kind == "image":
                out += [f"![{b.text.replace('`', '')}]({b.image})", "", f"*{b.text}*", ""]
            elif b.kind == "tokens":
                merged: list[list] = []
                for t, trained, _ in b.segments:  # one ⟦...⟧ per trained run, special tokens or not
                    if merged and merged[-1][1] == trained:
                        merged[-1][0] += t
                    else:
                        merged.append([t, trained])
                text = "".join(f"⟦{t}⟧" if trained else t for t, trained in merged)
                fence = "````" if "```" in text else "```"
                out += [fence + "text", text.rstrip("\n"), fence, ""]
    return "\n".join(out).rstrip() + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    """Escape, then turn the two inline marks the report uses (``**bold**``, `` `code` ``) into tags."""
    parts = _CODE.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a1a1a;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .55em;
text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.7em;overflow-x:auto;white-space:pre-wrap;word-break:break-word}
code{background:#f0f0f0;padding:0 .2em}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}
.conv .tr{background:#c8f7c5}.conv .sp{color:#0645ad;font-weight:bold}.legend span{padding:0 .3em}
"""


def render_html(title: str, intro: list[Block], sections: list[Section], images: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for sec in [Section("", intro)] + sections:
        if sec.title:
            anchor = re.sub(r"[^a-z0-9]+", "-", sec.title.lower()).strip("-")
            out.append(f'<section id="{anchor}"><h2>{html.escape(sec.title)}</h2>')
        for b in sec.blocks:
            if b.kind == "p":
                out.append(f"<p>{_inline_html(b.text)}</p>")
            elif b.kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline_html(it)}</li>" for it in b.items) + "</ul>")
            elif b.kind == "table":
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
                body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "code":
                out.append(f"<pre>{html.escape(b.text)}</pre>")
            elif b.kind == "image":
                data = base64.b64encode(images[b.image]).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.text.replace("`", ""))}">'
                           f"<figcaption>{_inline_html(b.text)}</figcaption></figure>")
            elif b.kind == "tokens":
                spans = []
                for t, trained, special in b.segments:
                    cls = " ".join(c for c, on in (("tr", trained), ("sp", special)) if on)
                    spans.append(f'<span class="{cls}">{html.escape(t)}</span>' if cls else html.escape(t))
                out.append('<p class="legend"><span class="tr">trained token (label = token id)</span> '
                           '<span class="sp">special token</span> unmarked: label -100</p>')
                out.append(f'<pre class="conv">{"".join(spans)}</pre>')
        if sec.title:
            out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Evaluation data
# --------------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """One model's IFEval verdicts, keyed by prompt (the official result files carry no key)."""

    dir: Path
    summary: dict[str, Any]
    strict: dict[str, dict[str, Any]]
    loose: dict[str, dict[str, Any]]
    keys: dict[str, Any]


def load_eval(eval_dir: str | Path) -> EvalData:
    d = Path(eval_dir)
    if not (d / "summary.json").is_file():
        raise SftlabError(f"{d} is not a finished evaluation (no summary.json); run 'sftlab eval' into it first")
    summary = read_json(d / "summary.json")
    strict = {r["prompt"]: r for r in read_jsonl(d / "eval_results_strict.jsonl")}
    loose = {r["prompt"]: r for r in read_jsonl(d / "eval_results_loose.jsonl")}
    if not strict or not loose:
        raise SftlabError(f"{d}: eval_results_strict.jsonl / eval_results_loose.jsonl missing or empty")
    keys = {r["prompt"]: r.get("key") for r in read_jsonl(d / "responses.jsonl") if "prompt" in r}
    return EvalData(d, summary, strict, loose, keys)


def figures_on(ev: EvalData, prompts: list[str]) -> dict[str, Any]:
    """The four IFEval figures on ``prompts``, from the per-prompt verdicts."""
    out: dict[str, Any] = {"n_prompts": len(prompts)}
    for level, res in (("strict", ev.strict), ("loose", ev.loose)):
        follow_all = [bool(res[p]["follow_all_instructions"]) for p in prompts]
        inst = [bool(x) for p in prompts for x in res[p]["follow_instruction_list"]]
        out[f"prompt_level_{level}_acc"] = sum(follow_all) / len(follow_all) if follow_all else float("nan")
        out[f"inst_level_{level}_acc"] = sum(inst) / len(inst) if inst else float("nan")
        out["n_instructions"] = len(inst)
    return out


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def paired_se(a: list[bool], b: list[bool]) -> float:
    """Standard error of mean(b - a) for paired 0/1 outcomes on the same prompts."""
    n = len(a)
    if n < 2:
        return float("nan")
    d = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    m = sum(d) / n
    var = sum((x - m) ** 2 for x in d) / (n - 1)
    return math.sqrt(var / n)


def per_instruction(ev: EvalData, prompts: list[str]) -> dict[str, dict[str, Any]]:
    """For each instruction id and each category (the part before ':'): count and strict/loose accuracy."""
    acc: dict[str, dict[str, int]] = {}
    for p in prompts:
        s, lo = ev.strict[p], ev.loose[p]
        for iid, fs, fl in zip(s["instruction_id_list"], s["follow_instruction_list"], lo["follow_instruction_list"],
                               strict=True):
            for name in (iid, iid.split(":")[0] + ":*"):
                a = acc.setdefault(name, {"n": 0, "strict": 0, "loose": 0})
                a["n"] += 1
                a["strict"] += int(bool(fs))
                a["loose"] += int(bool(fl))
    return {k: {"n": v["n"], "strict": v["strict"] / v["n"], "loose": v["loose"] / v["n"]} for k, v in acc.items()}


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _loss_series(rec: RunRecord) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    train, ev = [], []
    for m in rec.metrics:
        step = m.get("step")
        if not isinstance(step, (int, float)):
            continue
        if isinstance(m.get("eval_loss"), (int, float)):
            ev.append((step, float(m["eval_loss"])))
        elif isinstance(m.get("loss"), (int, float)):
            train.append((step, float(m["loss"])))
    return train, ev


def plot_loss(rec: RunRecord) -> bytes:
    from matplotlib.figure import Figure

    train, ev = _loss_series(rec)
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="training loss", color="tab:blue", lw=1.4)
    if ev:
        ax.plot([s for s, _ in ev], [v for _, v in ev], "o-", label="held-out loss", color="tab:orange", lw=1.4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats / trained token)")
    ax.set_title(f"Loss: {rec.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def plot_overlay(records: list[RunRecord]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.2))
    ax = fig.add_subplot()
    for rec in records:
        train, _ = _loss_series(rec)
        if train:
            ax.plot([s for s, _ in train], [v for _, v in train], label=rec.name, lw=1.3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats / trained token)")
    ax.set_title("Training loss of all runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_ifeval(names: list[str], figs: list[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    for i, (name, f) in enumerate(zip(names, figs, strict=True)):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(FIGURES))]
        ax.bar(xs, [100 * f[k] for k in FIGURES], width=width, label=name)
    ax.set_xticks(range(len(FIGURES)), [FIGURE_LABELS[k] for k in FIGURES])
    ax.set_ylabel("IFEval accuracy (%)")
    ax.set_title("IFEval: baseline vs fine-tuned")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Self-checks (run at report time)
# --------------------------------------------------------------------------------------------

_EDGE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
     {"role": "assistant", "content": "6"}],
    [{"role": "user", "content": "Écris «bonjour» en 日本語 🙂"}, {"role": "assistant", "content": "こんにちは 🙂\n\n  indented"}],
    [{"role": "user", "content": "  leading spaces and a <|im_start|> lookalike"},
     {"role": "assistant", "content": "trailing newline\n"}],
]


def check_masking(tokenizer, conversations: list[list[dict[str, str]]], *, strategy: str, max_length: int,
                  truncation: str) -> dict[str, Any]:
    """Encode each conversation with the fast path and with the prefix reference; count identical results.

    Each conversation is also encoded cut short (``max_length`` 23) so that a trained span split by
    truncation is compared too.
    """
    from sftlab.masking import encode_conversation

    n_same = n_total = tokens = 0
    first_diff = None
    for conv in conversations:
        for ml in (max_length, 23):
            kw = {"strategy": strategy, "max_length": ml, "truncation": truncation}
            fast = encode_conversation(conv, tokenizer, method="fast", **kw)
            ref = encode_conversation(conv, tokenizer, method="prefix", **kw)
            n_total += 1
            tokens += len(ref["input_ids"])
            if fast == ref:
                n_same += 1
            elif first_diff is None:
                first_diff = f"conversation starting {conv[0]['content'][:40]!r}, max_length {ml}"
    return {"name": f"masking fast path vs prefix reference ({strategy})", "passed": n_same == n_total,
            "detail": f"{n_same}/{n_total} encodings identical (input_ids, labels, attention_mask; "
                      f"{len(conversations)} conversations at max_length {max_length} and at 23; {tokens} tokens)"
                      + (f"; first difference: {first_diff}" if first_diff else "")}


def _oracle64(logits, labels):
    import torch.nn.functional as F

    z = logits[..., :-1, :].double().reshape(-1, logits.shape[-1])
    y = labels[..., 1:].reshape(-1)
    total = F.cross_entropy(z, y, ignore_index=-100, reduction="sum")
    return total, int((y != -100).sum())


def check_loss(vocab_size: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """sftlab's losses against a float64 ``F.cross_entropy`` oracle on random data of the real vocabulary size."""
    import torch

    from sftlab.loss import chunked_cross_entropy_loss, cross_entropy_loss

    g = torch.Generator().manual_seed(seed)
    b, t, h = 2, 48, 64
    labels = torch.randint(0, vocab_size, (b, t), generator=g)
    labels[torch.rand((b, t), generator=g) < 0.35] = -100
    labels[0, :5] = -100
    logits = torch.randn((b, t, vocab_size), generator=g) * 4.0
    out = []

    def record(name: str, got: float, ref: float, tol: float = 1e-5) -> None:
        rel = abs(got - ref) / max(abs(ref), 1e-12)
        out.append({"name": name, "passed": rel <= tol,
                    "detail": f"sftlab {got:.8f} vs float64 {ref:.8f}: relative difference {rel:.2e} (tolerance {tol:g})"})

    total, count = _oracle64(logits, labels)
    record("loss vs float64 reference (token mean)", float(cross_entropy_loss(logits, labels)), float(total / count))
    n_items = count * 3  # as with gradient accumulation over three micro-batches
    record("loss vs float64 reference (sum / num_items_in_batch)",
           float(cross_entropy_loss(logits, labels, num_items_in_batch=n_items)), float(total / n_items))

    hidden = torch.randn((b, t, h), generator=g, requires_grad=True)
    weight = (torch.randn((vocab_size, h), generator=g) * 0.3).requires_grad_(True)
    got = chunked_cross_entropy_loss(hidden, weight, labels, chunk_size=7)
    h64 = hidden.detach().double().requires_grad_(True)
    ref_total, ref_count = _oracle64(h64 @ weight.detach().double().T, labels)
    ref = ref_total / ref_count
    record("chunked loss vs float64 reference", got.item(), ref.item())
    got.backward()
    ref.backward()
    gdiff = float((hidden.grad.double() - h64.grad).abs().max())
    gscale = float(h64.grad.abs().max())
    # float32 sums over the whole vocabulary: errors of ~sqrt(V) * 1.2e-7 relative are expected.
    out.append({"name": "chunked loss gradient vs float64 autograd", "passed": gdiff <= 1e-4 * max(gscale, 1e-12),
                "detail": f"max |difference| {gdiff:.2e} of max |gradient| {gscale:.2e} "
                          f"(relative {gdiff / max(gscale, 1e-12):.1e}; tolerance 1e-4 of the largest gradient)"})
    return out


def check_model_loss(model_dir: Path, features: dict[str, list[int]]) -> dict[str, Any]:
    """The fine-tuned model's loss on the example conversation: sftlab's loss vs the float64 oracle."""
    import torch

    from sftlab.loss import compute_loss_from_logits
    from sftlab.models import load_model

    model = load_model(str(model_dir))
    model.eval()
    ids = torch.tensor([features["input_ids"]])
    labels = torch.tensor([features["labels"]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    got = float(compute_loss_from_logits(out, labels))
    total, count = _oracle64(out.logits, labels)
    ref = float(total / count)
    rel = abs(got - ref) / max(abs(ref), 1e-12)
    return {"name": "fine-tuned model's loss on the example conversation vs float64 reference", "passed": rel <= 1e-5,
            "detail": f"{count} trained tokens: sftlab {got:.6f} vs float64 {ref:.6f}, relative difference {rel:.2e}"}


# --------------------------------------------------------------------------------------------
# Example conversation (section 2)
# --------------------------------------------------------------------------------------------


def _load_training_conversations(config: dict[str, Any], n: int) -> tuple[list[list[dict[str, str]]], str]:
    from sftlab.data import load_conversations

    src = config.get("data")
    if not src:
        return [], "the run's config names no training data"
    try:
        res = load_conversations(str(src), conversation_field=config.get("conversation_field") or "conversations",
                                 max_samples=n, max_rounds=config.get("max_rounds"))
    except SftlabError as e:
        return [], f"could not read the training data ({e})"
    return res.conversations, ""


def token_segments(tokenizer, features: dict[str, list[int]], limit: int) -> list[tuple[str, bool, bool]]:
    """Group consecutive tokens by (trained, special) and decode each group with special tokens kept."""
    special_ids = set(tokenizer.all_special_ids)
    for tid, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            special_ids.add(int(tid))
    ids, labels = features["input_ids"][:limit], features["labels"][:limit]
    segs: list[tuple[str, bool, bool]] = []
    group: list[int] = []
    key: tuple[bool, bool] | None = None
    for tid, lab in zip(ids, labels, strict=True):
        k = (lab != -100, tid in special_ids)
        if key is not None and k != key:
            segs.append((tokenizer.decode(group, skip_special_tokens=False, clean_up_tokenization_spaces=False), *key))
            group = []
        key = k
        group.append(tid)
    if group and key is not None:
        segs.append((tokenizer.decode(group, skip_special_tokens=False, clean_up_tokenization_spaces=False), *key))
    return segs


def pick_example(tokenizer, conversations: list[list[dict[str, str]]], *, strategy: str, max_length: int,
                 truncation: str) -> tuple[int, dict[str, list[int]]] | None:
    """A short multi-turn conversation when there is one (it shows the most of the masking), else the shortest."""
    from sftlab.masking import encode_conversation

    best = None
    for i, conv in enumerate(conversations):
        feats = encode_conversation(conv, tokenizer, strategy=strategy, max_length=max_length, truncation=truncation)
        n = len(feats["input_ids"])
        multi = sum(m["role"] == "assistant" for m in conv) >= 2
        fits = n <= EXAMPLE_MAX_TOKENS
        score = (not (multi and fits), not fits, n)
        if best is None or score < best[0]:
            best = (score, i, feats)
    return None if best is None else (best[1], best[2])


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


# --------------------------------------------------------------------------------------------
# Report assembly
# --------------------------------------------------------------------------------------------


def _baseline_from(dirs: list[Path]) -> Path | None:
    for d in dirs:
        if (d / "baseline_eval" / "summary.json").is_file():
            return d / "baseline_eval"
    return None


def _pct(v: Any, digits: int = 1) -> str:
    return "n/a" if not isinstance(v, (int, float)) or math.isnan(v) else f"{100 * v:.{digits}f}"


def _signed(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:+.{digits}f}"


def _trim(text: str, n: int = TRIM_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n].rstrip() + f" … [trimmed; {len(text)} characters in all]"


def _fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def write_report(*, baseline: str | Path | None, runs: list[str | Path], output_dir: str | Path,
                 title: str = "sftlab report", model_check: bool = True) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, the PNG plots and ``report.json`` into ``output_dir``.

    ``runs`` are run directories (a sweep directory stands for all its finished runs); ``baseline``
    is the base model's eval directory, found next to the runs (``baseline_eval/``) when omitted.
    """
    t0 = time.time()
    run_dirs = [Path(r) for r in runs]
    records = expand_run_dirs(run_dirs)
    if not records:
        raise SftlabError("no finished runs to report (a sweep's runs need their DONE file)")
    base_dir = Path(baseline) if baseline else _baseline_from(run_dirs)
    if base_dir is None:
        raise SftlabError("no baseline evaluation: pass --baseline EVAL_DIR (an 'sftlab eval' output of the base model)")
    base = load_eval(base_dir)
    evals = [load_eval(r.eval_dir) for r in records]  # type: ignore[arg-type]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    data: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "baseline": str(base_dir),
                            "runs": [str(r.run_dir) for r in records]}

    varied_keys: list[str] = []
    for d in run_dirs:
        if is_sweep_dir(d):
            for k in read_json(d / "sweep.json").get("varied", []):
                if k not in varied_keys:
                    varied_keys.append(k)
    rows = [results_row(r, varied_keys) for r in records]
    # Headline figures are recomputed on the prompts each run shares with the baseline.
    commons, run_figs, base_figs = [], [], []
    for ev in evals:
        common = [p for p in ev.strict if p in base.strict and p in ev.loose and p in base.loose]
        if not common:
            raise SftlabError(f"{ev.dir} and the baseline {base_dir} share no prompt; evaluate both on the same data")
        commons.append(common)
        run_figs.append(figures_on(ev, common))
        base_figs.append(figures_on(base, common))
    for row, f in zip(rows, run_figs, strict=True):
        row.update({k: f[k] for k in FIGURES})
        row["n_prompts"] = f["n_prompts"]
    best = best_index(rows)
    assert best is not None
    best_rec, best_ev, common = records[best], evals[best], commons[best]

    sections = [
        _section_environment(records, base),
        _section_method(records, best, data, model_check=model_check),
        _section_training(records),
        _section_loss(records, images),
        _section_baseline(records, rows, run_figs, base_figs, commons, base, evals, best, images, data),
        _section_per_instruction(best_rec, base, best_ev, common, data),
        _section_examples(best_rec, base, best_ev, common, data),
        _section_analysis(records, rows, varied_keys, best, base_figs[best], commons, base, evals, data),
    ]
    assert [s.title for s in sections] == list(SECTION_TITLES)
    n = run_figs[best]["n_prompts"]
    bmodel = base.summary.get("model")
    bmodel = bmodel.get("spec") if isinstance(bmodel, dict) else bmodel
    intro = [P(f"Baseline: `{base_dir}` (model `{bmodel}`). "
               f"Fine-tuned run(s): {', '.join('`' + r.name + '`' for r in records)}. "
               f"IFEval figures are percentages on {n} prompts; best run by prompt-level strict accuracy: "
               f"**{best_rec.name}**. Generated {data['generated_at']} by `sftlab report`.")]
    for name, png in images.items():
        atomic_write_bytes(out / name, png)
    md = render_markdown(title, intro, sections)
    htm = render_html(title, intro, sections, images)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", htm)
    data["results"] = rows
    data["best_run"] = best_rec.name
    data["images"] = sorted(images)
    atomic_write_json(out / "report.json", data)
    log(f"sftlab report: wrote {out / 'report.md'} and {out / 'report.html'} ({time.time() - t0:.1f} s)")
    return {"markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json",
            "images": [out / n for n in sorted(images)], "best_run": best_rec.name, "data": data}


# ---- section 1 --------------------------------------------------------------------------------


def _section_environment(records: list[RunRecord], base: EvalData) -> Section:
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


def _section_method(records: list[RunRecord], best: int, data: dict[str, Any], *, model_check: bool = True) -> Section:
    from sftlab.models import load_tokenizer

    blocks: list[Block] = []
    checks: list[dict[str, Any]] = []
    strategies = sorted({str(r.config.get("masking") or "assistant") for r in records})
    for s in strategies:
        blocks.append(P(MASKING_SENTENCES.get(s, f"Masking strategy `{s}`.")))
    rec = records[best]
    cfg = rec.config
    max_length = int(cfg.get("model_max_length") or 2048)
    truncation = str(cfg.get("truncation") or "right")
    strategy = str(cfg.get("masking") or "assistant")
    tok = load_tokenizer(str(rec.train_dir))  # the tokenizer and chat template saved with the run
    convs, why = _load_training_conversations(cfg, CHECK_CONVERSATIONS)
    example = None
    if convs:
        picked = pick_example(tok, convs, strategy=strategy, max_length=max_length, truncation=truncation)
        if picked is not None:
            idx, feats = picked
            example = feats
            n_tr = sum(1 for x in feats["labels"] if x != -100)
            n = len(feats["input_ids"])
            shown = min(n, EXAMPLE_MAX_TOKENS)
            blocks.append(P(f"One conversation from the training data of run `{rec.name}` (`{cfg.get('data')}`, "
                            f"conversation {idx + 1} of the first {len(convs)} read), as the run's chat template "
                            f"renders it with special tokens visible: {n} tokens, {n_tr} of them trained. In the "
                            f"Markdown report trained tokens are between ⟦ and ⟧; in HTML they are highlighted."
                            + (f" Only the first {shown} tokens are shown." if shown < n else "")))
            blocks.append(Block("tokens", segments=token_segments(tok, feats, EXAMPLE_MAX_TOKENS)))
            data["example_conversation"] = {"index": idx, "tokens": n, "trained_tokens": n_tr}
    else:
        blocks.append(P(f"No training conversation could be shown: {why}."))
    for s in strategies:
        checks.append(check_masking(tok, convs + _EDGE_CONVERSATIONS, strategy=s, max_length=max_length,
                                    truncation=truncation))
    checks.extend(check_loss(len(tok)))
    if model_check and example is not None and any(x != -100 for x in example["labels"][1:]):
        try:
            checks.append(check_model_loss(rec.train_dir, example))
        except (SftlabError, OSError, RuntimeError) as e:
            checks.append({"name": "fine-tuned model's loss vs float64 reference", "passed": False,
                           "detail": f"could not run: {e}"})
    data["checks"] = checks
    n_pass = sum(c["passed"] for c in checks)
    blocks.append(P(f"Self-checks run while writing this report: **{n_pass}/{len(checks)} passed**."))
    blocks.append(Table(["check", "result", "numbers"],
                        [[c["name"], "**pass**" if c["passed"] else "**FAIL**", c["detail"]] for c in checks]))
    return Section(SECTION_TITLES[1], blocks)


# ---- section 3 --------------------------------------------------------------------------------


def _section_training(records: list[RunRecord]) -> Section:
    fields = [
        ("model", lambda r, st: r.config.get("model")),
        ("data", lambda r, st: r.config.get("data")),
        ("training examples", lambda r, st: _first(r.summary, "num_train_examples")),
        ("held-out examples", lambda r, st: _first(r.summary, "num_eval_examples")),
        ("per-device batch", lambda r, st: st["per_device_batch"]),
        ("gradient accumulation", lambda r, st: st["gradient_accumulation"]),
        ("world size", lambda r, st: r.summary.get("world_size", 1)),
        ("effective batch", lambda r, st: st["total_batch"]),
        ("learning rate", lambda r, st: st["learning_rate"]),
        ("epochs (configured / done)", lambda r, st: f"{fmt_num(st['epochs'])} / {fmt_num(r.summary.get('epochs'))}"),
        ("total optimizer steps", lambda r, st: _first(r.summary, "global_step")),
        ("max length", lambda r, st: st["max_length"]),
        ("warmup", lambda r, st: st["warmup"]),
        ("scheduler", lambda r, st: st["scheduler"]),
        ("masking", lambda r, st: st["masking"]),
        ("loss implementation", lambda r, st: st["loss"]),
        ("precision", lambda r, st: r.summary.get("precision") or r.config.get("resolved_dtype")),
        ("tokens seen", lambda r, st: _first(r.summary, "tokens", "total_tokens")),
        ("trained tokens", lambda r, st: _first(r.summary, "trained_tokens")),
        ("training time", lambda r, st: _fmt_seconds(_first(r.summary, "train_time_s"))),
        ("wall time (last invocation)", lambda r, st: _fmt_seconds(_first(r.summary, "wall_time_s"))),
        ("tokens/s", lambda r, st: _first(r.summary, "tokens_per_s")),
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
    blocks = [P("From each run's resolved `sftlab_config.yaml` and `train_summary.json`."),
              Table(["setting"] + [f"`{r.name}`" for r in records], rows)]
    return Section(SECTION_TITLES[2], blocks)


def _first(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def _first_last(r: RunRecord) -> str:
    train, _ = _loss_series(r)
    if not train:
        return "n/a"
    return f"{train[0][1]:.4f} → {train[-1][1]:.4f}"


# ---- section 4 --------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _section_loss(records: list[RunRecord], images: dict[str, bytes]) -> Section:
    blocks: list[Block] = []
    for r in records:
        train, ev = _loss_series(r)
        if not train:
            blocks.append(P(f"Run `{r.name}`: no training loss was logged (no `metrics.jsonl` lines with a loss)."))
            continue
        name = f"loss_{_safe(r.name)}.png"
        images[name] = plot_loss(r)
        desc = (f"Run `{r.name}`: training loss per optimizer step from `metrics.jsonl` ({len(train)} logged steps, "
                f"{train[0][1]:.4f} at step {train[0][0]:g}, {train[-1][1]:.4f} at step {train[-1][0]:g})")
        if len(ev) == 1:
            desc += f"; held-out loss {ev[0][1]:.4f} at step {ev[0][0]:g}"
        elif ev:
            desc += f"; held-out loss {ev[0][1]:.4f} → {ev[-1][1]:.4f} over {len(ev)} evaluations"
        blocks.append(Image(name, desc + "."))
    if len(records) > 1:
        images["loss_all_runs.png"] = plot_overlay(records)
        blocks.append(Image("loss_all_runs.png", f"Training loss of all {len(records)} runs, overlaid."))
    return Section(SECTION_TITLES[3], blocks)


# ---- section 5 --------------------------------------------------------------------------------


def _section_baseline(records, rows, run_figs, base_figs, commons, base: EvalData, evals: list[EvalData], best: int,
                      images: dict[str, bytes], data: dict[str, Any]) -> Section:
    blocks: list[Block] = []
    same = all(len(c) == len(commons[0]) for c in commons) and all(bf == base_figs[0] for bf in base_figs)
    n = base_figs[best]["n_prompts"]
    headers = ["figure", "baseline"]
    for r in records:
        headers += [f"`{r.name}`", "Δ"]
    table = []
    for k in FIGURES:
        row = [FIGURE_LABELS[k], _pct(base_figs[best][k])]
        for rf, bf in zip(run_figs, base_figs, strict=True):
            row += [_pct(rf[k]), _signed(rf[k] - bf[k])]
        table.append(row)
    blocks.append(P(f"IFEval accuracies in percent on {n} prompts ({base_figs[best]['n_instructions']} instructions), "
                    f"from the per-prompt verdicts in `eval_results_strict.jsonl` and `eval_results_loose.jsonl`; "
                    f"Δ = fine-tuned minus baseline, in points."
                    + ("" if same else " Runs were scored on different prompt sets; each Δ uses the prompts that "
                                      "run shares with the baseline.")))
    blocks.append(Table(headers, table))
    se_lines = []
    deltas = []
    for r, ev, common, rf, bf in zip(records, evals, commons, run_figs, base_figs, strict=True):
        a = [bool(base.strict[p]["follow_all_instructions"]) for p in common]
        b = [bool(ev.strict[p]["follow_all_instructions"]) for p in common]
        d = rf["prompt_level_strict_acc"] - bf["prompt_level_strict_acc"]
        se = paired_se(a, b)
        verdict = _noise_verdict(d, se)
        won = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
        lost = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
        se_lines.append(f"`{r.name}`: prompt-level strict {_pct(rf['prompt_level_strict_acc'])}% "
                        f"(binomial standard error ±{100 * binomial_se(rf['prompt_level_strict_acc'], len(common)):.1f}) "
                        f"vs baseline {_pct(bf['prompt_level_strict_acc'])}% "
                        f"(±{100 * binomial_se(bf['prompt_level_strict_acc'], len(common)):.1f}); "
                        f"Δ {_signed(d)} points, paired standard error ±{100 * se:.1f}: {verdict}. "
                        f"Prompts newly followed: {won}; newly failed: {lost}.")
        deltas.append({"run": r.name, "delta_prompt_strict": d, "paired_se": se, "won": won, "lost": lost,
                       "figures": rf, "baseline_figures": bf})
    blocks.append(Bullets(se_lines))
    images["ifeval.png"] = plot_ifeval(["baseline"] + [r.name for r in records], [base_figs[best]] + run_figs)
    blocks.append(Image("ifeval.png", "The four IFEval figures, baseline and fine-tuned (percent)."))
    data["baseline_figures"] = base_figs[best]
    data["comparisons"] = deltas
    return Section(SECTION_TITLES[4], blocks)


def _noise_verdict(d: float, se: float) -> str:
    if se is None or math.isnan(se):
        return "too few prompts to judge noise"
    if se == 0:
        return "no prompt changed" if d == 0 else "every changed prompt moved the same way"
    z = d / se
    if abs(z) < 2:
        return f"within noise (|Δ| < 2 standard errors, z = {z:.1f})"
    return f"beyond 2 standard errors (z = {z:.1f})"


# ---- section 6 --------------------------------------------------------------------------------


def _section_per_instruction(rec: RunRecord, base: EvalData, ev: EvalData, common: list[str],
                             data: dict[str, Any]) -> Section:
    before = per_instruction(base, common)
    after = per_instruction(ev, common)
    rows = []
    for k in before:
        b, a = before[k], after[k]
        rows.append({"id": k, "n": b["n"], "strict_before": b["strict"], "strict_after": a["strict"],
                     "loose_before": b["loose"], "loose_after": a["loose"],
                     "d_strict": a["strict"] - b["strict"], "d_loose": a["loose"] - b["loose"]})
    rows.sort(key=lambda x: (-x["d_strict"], -x["d_loose"], x["id"]))
    cats = [r for r in rows if r["id"].endswith(":*")]
    ids = [r for r in rows if not r["id"].endswith(":*")]

    def table(rs):
        return Table(["instruction", "n", "strict before", "strict after", "Δ strict", "loose before", "loose after",
                      "Δ loose"],
                     [[f"`{r['id']}`", r["n"], _pct(r["strict_before"]), _pct(r["strict_after"]),
                       _signed(r["d_strict"]), _pct(r["loose_before"]), _pct(r["loose_after"]), _signed(r["d_loose"])]
                      for r in rs])

    improved = [r for r in ids if r["d_strict"] > 0 or (r["d_strict"] == 0 and r["d_loose"] > 0)]
    regressed = [r for r in ids if r["d_strict"] < 0 or (r["d_strict"] == 0 and r["d_loose"] < 0)]

    def names(rs):
        return ", ".join(f"`{r['id']}` ({_signed(r['d_strict'], 0)} strict, n={r['n']})" for r in rs) or "none"

    blocks = [
        P(f"Baseline vs the best run, `{rec.name}`, on {len(common)} prompts; instruction-level accuracy in percent "
          f"per category (the part of the id before the colon, shown as `category:*`) and per instruction id, "
          f"sorted by the change in strict accuracy. n is how many times the instruction occurs, so one prompt "
          f"moves an id with n occurrences by 100/n points."),
        Bullets([f"**Improved** ({len(improved)}): {names(improved)}",
                 f"**Regressed** ({len(regressed)}): {names(regressed)}",
                 f"Unchanged: {len(ids) - len(improved) - len(regressed)} instruction ids."]),
        P("By category:"), table(cats), P("By instruction id:"), table(ids),
    ]
    data["per_instruction"] = rows
    return Section(SECTION_TITLES[5], blocks)


# ---- section 7 --------------------------------------------------------------------------------


def _passed_list(res: dict[str, Any]) -> str:
    return ", ".join(f"{'✓' if ok else '✗'} `{iid}`" for iid, ok in
                     zip(res["instruction_id_list"], res["follow_instruction_list"], strict=True))


def _example_blocks(label: str, prompt: str, base: EvalData, ev: EvalData, run_name: str) -> list[Block]:
    b, f = base.strict[prompt], ev.strict[prompt]
    key = base.keys.get(prompt) or ev.keys.get(prompt)
    return [
        P(f"**{label}**" + (f" (IFEval key {key})" if key is not None else "") + ":"),
        Code(_trim(prompt, 600)),
        P(f"Baseline ({sum(b['follow_instruction_list'])}/{len(b['follow_instruction_list'])} instructions "
          f"followed, strict): {_passed_list(b)}"),
        Code(_trim(b.get("response", ""))),
        P(f"Fine-tuned `{run_name}` ({sum(f['follow_instruction_list'])}/{len(f['follow_instruction_list'])} "
          f"instructions followed, strict): {_passed_list(f)}"),
        Code(_trim(f.get("response", ""))),
    ]


def choose_examples(base: EvalData, ev: EvalData, common: list[str], k: int = 3) -> dict[str, Any]:
    """Prompts where the fine-tuned model follows all instructions (strict) and the baseline does not.

    When there are none, the prompts where it follows the most additional instructions stand in
    (labelled as such). Ties go to prompts with more instructions, then to shorter prompts, so the
    choice is deterministic. One regression (the reverse case) is added when there is one.
    """
    def n_ok(res, p):
        return sum(bool(x) for x in res[p]["follow_instruction_list"])

    wins = [p for p in common if ev.strict[p]["follow_all_instructions"] and not base.strict[p]["follow_all_instructions"]]
    wins.sort(key=lambda p: (-len(ev.strict[p]["instruction_id_list"]), len(p), p))
    kind = "full"
    if not wins:
        kind = "partial"
        wins = [p for p in common if n_ok(ev.strict, p) > n_ok(base.strict, p)]
        wins.sort(key=lambda p: (-(n_ok(ev.strict, p) - n_ok(base.strict, p)), len(p), p))
    losses = [p for p in common if base.strict[p]["follow_all_instructions"] and not ev.strict[p]["follow_all_instructions"]]
    losses.sort(key=lambda p: (-len(base.strict[p]["instruction_id_list"]), len(p), p))
    return {"wins": wins[:k], "kind": kind, "regression": losses[:1], "n_wins": len(wins), "n_losses": len(losses)}


def _section_examples(rec: RunRecord, base: EvalData, ev: EvalData, common: list[str], data: dict[str, Any]) -> Section:
    ch = choose_examples(base, ev, common)
    blocks: list[Block] = []
    if ch["kind"] == "full" and ch["wins"]:
        blocks.append(P(f"{ch['n_wins']} of {len(common)} prompts are followed completely (strict) by `{rec.name}` "
                        f"and not by the baseline; {len(ch['wins'])} of them, chosen automatically (most "
                        f"instructions first), with both responses trimmed to {TRIM_CHARS} characters."))
    elif ch["wins"]:
        blocks.append(P(f"No prompt is followed completely by `{rec.name}` while the baseline fails it. Shown instead: "
                        f"{len(ch['wins'])} of the {ch['n_wins']} prompts where it follows more instructions than the "
                        f"baseline (largest gain first)."))
    else:
        blocks.append(P(f"On none of the {len(common)} prompts does `{rec.name}` follow more instructions than the "
                        f"baseline, so there is no improvement to show."))
    for i, p in enumerate(ch["wins"], 1):
        blocks += _example_blocks(f"Example {i}", p, base, ev, rec.name)
    if ch["regression"]:
        blocks.append(P(f"Regression ({ch['n_losses']} prompt(s) followed completely by the baseline but not by "
                        f"`{rec.name}`), the first by the same ordering:"))
        blocks += _example_blocks("Regression", ch["regression"][0], base, ev, rec.name)
    else:
        blocks.append(P("No regression: every prompt the baseline follows completely, the fine-tuned model follows too."))
    data["examples"] = {"wins": [base.keys.get(p) or p[:60] for p in ch["wins"]], "kind": ch["kind"],
                        "regression": [base.keys.get(p) or p[:60] for p in ch["regression"]]}
    return Section(SECTION_TITLES[6], blocks)


# ---- section 8 --------------------------------------------------------------------------------


def _section_analysis(records, rows, varied_keys, best, base_fig, commons, base: EvalData, evals, data) -> Section:
    cols = extra_varied(varied_keys)
    headers = (["run"] + [f"`{k}`" for k in cols] + ["lr", "epochs", "total batch", "warmup", "scheduler",
                                                     "max length", "final train loss"]
               + [FIGURE_LABELS[f] + " %" for f in FIGURES])
    trows = []
    for i, r in enumerate(rows):
        name = f"**{r['run']}** (best)" if i == best and len(rows) > 1 else r["run"]
        trows.append([name] + [fmt_num(r.get(k)) for k in cols]
                     + [fmt_num(r[k]) for k in ("learning_rate", "epochs", "total_batch", "warmup", "scheduler",
                                                "max_length")]
                     + [fmt_num(r["final_train_loss"])] + [_pct(r[f]) for f in FIGURES])
    blocks = [P(f"Varied settings: {', '.join(f'`{k}`' for k in varied_keys) or 'none'}. IFEval figures in percent "
                f"on {rows[best]['n_prompts']} prompts."), Table(headers, trows)]
    br = rows[best]
    n = br["n_prompts"]
    p = br["prompt_level_strict_acc"]
    scores = [r["prompt_level_strict_acc"] for r in rows]
    tied = [r["run"] for r in rows if r["prompt_level_strict_acc"] == p]
    lines = []
    ev_best = evals[best]
    common = commons[best]
    a = [bool(base.strict[q]["follow_all_instructions"]) for q in common]
    b = [bool(ev_best.strict[q]["follow_all_instructions"]) for q in common]
    d = p - base_fig["prompt_level_strict_acc"]
    best_txt = (f"Best run by prompt-level strict accuracy: **{br['run']}** with {_pct(p)}% on {n} prompts "
                f"(binomial standard error ±{100 * binomial_se(p, n):.1f} points)")
    if len(tied) > 1:
        best_txt += (f", tied with {', '.join(f'`{t}`' for t in tied if t != br['run'])} (ties are broken by "
                     f"instruction-level strict, then prompt-level loose accuracy, then sweep order)")
    lines.append(best_txt + f"; baseline {_pct(base_fig['prompt_level_strict_acc'])}%, Δ {_signed(d)} points "
                 f"({_noise_verdict(d, paired_se(a, b))}).")
    if len(rows) == 1:
        lines.append("Only one configuration was trained, so this report cannot say how any hyperparameter affects "
                     "the score.")
    elif max(scores) == min(scores):
        lines.append(f"All {len(rows)} runs score the same prompt-level strict accuracy ({_pct(p)}%) on these {n} "
                     f"prompts, so no setting measurably moved it; more prompts or longer training would be needed "
                     f"to separate them.")
    else:
        pooled = sum(scores) / len(scores)
        # Two standard errors of the difference between two independent runs at the pooled accuracy.
        noise = 2 * math.sqrt(2) * binomial_se(pooled, n)
        spread = max(scores) - min(scores)
        lines.append(f"Prompt-level strict accuracy ranges from {_pct(min(scores))}% to {_pct(max(scores))}% across "
                     f"the {len(rows)} runs (spread {100 * spread:.1f} points). With {n} prompts, two runs differ "
                     f"beyond noise only by more than about {100 * noise:.1f} points (2 standard errors of a "
                     f"difference at the pooled accuracy {_pct(pooled)}%); this spread is "
                     f"{'within' if spread <= noise else 'beyond'} that.")
        effects = []
        for k in varied_keys:
            groups: dict[str, list[float]] = {}
            for r in rows:
                groups.setdefault(fmt_num(r.get(k)), []).append(r["prompt_level_strict_acc"])
            if len(groups) < 2:
                continue
            means = {v: sum(x) / len(x) for v, x in groups.items()}
            effects.append((max(means.values()) - min(means.values()), k, means))
        effects.sort(key=lambda e: -e[0])
        for rng, k, means in effects:
            desc = ", ".join(f"{v}: {_pct(m)}%" for v, m in means.items())
            lines.append(f"`{k}`: mean prompt-level strict accuracy by value {desc}; range {100 * rng:.1f} points "
                         f"({'within' if rng <= noise else 'beyond'} the ~{100 * noise:.1f}-point noise level).")
        if effects:
            top = effects[0]
            if top[0] > noise:
                lines.append(f"The setting that moved the score most is `{top[1]}` ({100 * top[0]:.1f} points between "
                             f"its best and worst value, averaged over the other settings).")
            else:
                lines.append(f"`{top[1]}` moved the score most ({100 * top[0]:.1f} points), but no setting's effect "
                             f"exceeds the noise level at {n} prompts; more prompts or repeated seeds are needed "
                             f"before preferring one value.")
    if len(rows) > 1:
        losses = [(r["final_train_loss"], r["run"]) for r in rows if isinstance(r["final_train_loss"], (int, float))]
        if losses:
            lo = min(losses)
            if lo[1] in tied:
                rel = "also among the best runs on IFEval" if len(tied) > 1 else "also the best run on IFEval"
            else:
                rel = "not the best run on IFEval"
            lines.append(f"Lowest final training loss: `{lo[1]}` ({lo[0]:.4f}); it is {rel}.")
    data["analysis"] = lines
    blocks.append(Bullets(lines))
    return Section(SECTION_TITLES[7], blocks)
