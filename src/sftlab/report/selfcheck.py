"""Self-checks run while a report is written: everything that loads a tokenizer, data or a model then.

* masking: the fast encoder against the prefix-by-prefix reference, on training conversations and
  edge cases (:func:`check_masking`);
* loss: sftlab's losses and the chunked loss's gradient against a float64 ``F.cross_entropy``
  oracle on random data of the real vocabulary size (:func:`check_loss`);
* the fine-tuned model's loss on one training conversation against the same oracle
  (:func:`check_model_loss`).

:func:`inspect_run` runs them for one run and also picks and encodes the example conversation the
report shows; the report only renders what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.report.results import RunRecord

EXAMPLE_MAX_TOKENS = 320  # token rendering shown in the report is cut after this many tokens
CHECK_CONVERSATIONS = 24  # training conversations the masking self-check encodes both ways

EDGE_CONVERSATIONS: list[list[dict[str, str]]] = [
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
    from sftlab.prep.masking import encode_conversation

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
    total = F.cross_entropy(z, y, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, int((y != IGNORE_INDEX).sum())


def check_loss(vocab_size: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """sftlab's losses against a float64 ``F.cross_entropy`` oracle on random data of the real vocabulary size."""
    import torch

    from sftlab.train.loss import chunked_cross_entropy_loss, cross_entropy_loss

    g = torch.Generator().manual_seed(seed)
    b, t, h = 2, 48, 64
    labels = torch.randint(0, vocab_size, (b, t), generator=g)
    labels[torch.rand((b, t), generator=g) < 0.35] = IGNORE_INDEX
    labels[0, :5] = IGNORE_INDEX
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

    from sftlab.models.loading import load_model
    from sftlab.train.loss import compute_loss_from_logits

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


def load_training_conversations(config: dict[str, Any], n: int) -> tuple[list[list[dict[str, str]]], str]:
    from sftlab.data import load_conversations

    src = config.get("data")
    if not src:
        return [], "the run's config names no training data"
    try:
        res = load_conversations(src, conversation_field=config.get("conversation_field") or "conversations",
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
        k = (lab != IGNORE_INDEX, tid in special_ids)
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
    from sftlab.prep.masking import encode_conversation

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


@dataclass
class RunInspection:
    """What the report's section 2 shows about one run: an encoded example and the self-check results."""

    strategies: list[str]
    conversations_read: int = 0
    why_no_example: str = ""
    example_index: int | None = None
    example: dict[str, list[int]] | None = None
    segments: list[tuple[str, bool, bool]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)


def inspect_run(rec: RunRecord, strategies: list[str], *, model_check: bool = True) -> RunInspection:
    """Load the run's tokenizer and training data, pick the example conversation and run every self-check."""
    from sftlab.models.loading import load_tokenizer
    from sftlab.prep.pipeline import encode_truncation

    cfg = rec.config
    max_length = int(cfg.get("model_max_length") or 2048)
    truncation = encode_truncation(str(cfg.get("truncation") or "right"))
    strategy = str(cfg.get("masking") or "assistant")
    tok = load_tokenizer(str(rec.train_dir))  # the tokenizer and chat template saved with the run
    convs, why = load_training_conversations(cfg, CHECK_CONVERSATIONS)
    out = RunInspection(strategies=strategies, conversations_read=len(convs), why_no_example=why)
    if convs:
        picked = pick_example(tok, convs, strategy=strategy, max_length=max_length, truncation=truncation)
        if picked is not None:
            out.example_index, out.example = picked
            out.segments = token_segments(tok, out.example, EXAMPLE_MAX_TOKENS)
    for s in strategies:
        out.checks.append(check_masking(tok, convs + EDGE_CONVERSATIONS, strategy=s, max_length=max_length,
                                        truncation=truncation))
    out.checks.extend(check_loss(len(tok)))
    if model_check and out.example is not None and any(x != IGNORE_INDEX for x in out.example["labels"][1:]):
        try:
            out.checks.append(check_model_loss(rec.train_dir, out.example))
        except (SftlabError, OSError, RuntimeError) as e:
            out.checks.append({"name": "fine-tuned model's loss vs float64 reference", "passed": False,
                               "detail": f"could not run: {e}"})
    return out
