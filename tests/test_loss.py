"""sftlab.train.loss: values and gradients against a float64 F.cross_entropy oracle, the divisor contract,
all-masked batches, low precision, model wrappers (tied weights, bias, LoRA, DDP), and gradient
accumulation through the real HF Trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers  # tests/ is on sys.path (rootdir-less test modules)
import pytest
import torch
import torch.nn.functional as F

from sftlab.errors import SftlabError
from sftlab.train.loss import (
    IGNORE_INDEX,
    chunked_cross_entropy_loss,
    chunked_loss_for_model,
    compute_loss_from_logits,
    cross_entropy_loss,
    make_compute_loss,
)

TINY = dict(
    vocab_size=97,  # prime: never a multiple of a chunk
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=True,
    initializer_range=0.2,  # large enough that gradients are far above the 1e-5 tolerance
    pad_token_id=0,
)


def oracle(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, divisor=None, bias=None) -> torch.Tensor:
    """float64 causal-LM loss via F.cross_entropy: sum over shifted non-ignored targets / divisor."""
    logits = h.double() @ w.double().t()
    if bias is not None:
        logits = logits + bias.double()
    v = logits.shape[-1]
    y = labels[..., 1:].reshape(-1)
    total = F.cross_entropy(logits[..., :-1, :].reshape(-1, v), y, ignore_index=IGNORE_INDEX, reduction="sum")
    n = (y != IGNORE_INDEX).sum() if divisor is None else divisor
    return total / n


def random_problem(batch=3, seq=13, hidden=16, vocab=97, p_mask=0.35, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, seq, hidden, generator=g).to(dtype)
    w = (torch.randn(vocab, hidden, generator=g) * 0.7).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[torch.rand(batch, seq, generator=g) < p_mask] = IGNORE_INDEX
    return h, w, labels


def grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = fn(*leaves)
    return loss.detach(), torch.autograd.grad(loss, leaves)


def assert_matches_oracle(fn, h, w, labels, divisor=None, atol=1e-5):
    loss, (gh, gw) = grads(fn, h, w)
    ref, (rh, rw) = grads(lambda a, b: oracle(a, b, labels, divisor), h.double(), w.double())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, atol=atol, rtol=1e-5)
    torch.testing.assert_close(gh.double(), rh, atol=atol, rtol=1e-4)
    torch.testing.assert_close(gw.double(), rw, atol=atol, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# values and gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch,seq", [(1, 9), (3, 13)])
def test_reference_loss_matches_float64_oracle(batch, seq):
    h, w, labels = random_problem(batch, seq)
    assert (labels[:, 1:] == IGNORE_INDEX).any() and (labels[:, 1:] != IGNORE_INDEX).any()
    assert_matches_oracle(lambda a, b: cross_entropy_loss(a @ b.t(), labels), h, w, labels)


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 16, 1000])
def test_chunked_loss_matches_float64_oracle(chunk_size):
    # 3 x 12 shifted positions, ~23 valid: chunks of 5/7/16 leave a ragged last chunk; 1000 > all rows.
    h, w, labels = random_problem(3, 13, seed=chunk_size)
    assert_matches_oracle(
        lambda a, b: chunked_cross_entropy_loss(a, b, labels, chunk_size=chunk_size), h, w, labels
    )


def test_chunked_equals_reference_exactly_enough_and_shift_is_causal():
    h, w, labels = random_problem(2, 11, seed=3)
    a = cross_entropy_loss(h @ w.t(), labels)
    b = chunked_cross_entropy_loss(h, w, labels, chunk_size=4)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # Causal shift: logits at t that put all mass on labels[t + 1] give ~0 loss; on labels[t], a large one.
    y = torch.tensor([[0, 1, 2, 3, 4, 0]])
    right = torch.full((1, 6, 5), -30.0)
    wrong = right.clone()
    right[0, torch.arange(5), y[0, 1:]] = 30.0
    wrong[0, torch.arange(6), y[0]] = 30.0
    assert cross_entropy_loss(right, y) < 1e-6
    assert cross_entropy_loss(wrong, y) > 50.0


def test_compute_loss_from_logits_reads_any_trainer_output():
    from transformers.modeling_outputs import CausalLMOutputWithPast

    h, w, labels = random_problem(2, 9, seed=8)
    logits = h @ w.t()
    want = cross_entropy_loss(logits, labels, 17)
    for outputs in (CausalLMOutputWithPast(logits=logits), {"logits": logits}, (logits,), logits):
        assert torch.equal(compute_loss_from_logits(outputs, labels, num_items_in_batch=17), want)
    with pytest.raises(ValueError, match="labels"):
        compute_loss_from_logits({"logits": logits}, None)


def test_chunked_loss_with_bias_matches_oracle():
    h, w, labels = random_problem(2, 10, seed=4)
    b = torch.randn(w.shape[0])
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    loss = chunked_cross_entropy_loss(leaves[0], leaves[1], labels, chunk_size=3, bias=leaves[2])
    got = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.double().requires_grad_() for t in (h, w, b)]
    ref = oracle(ref_leaves[0], ref_leaves[1], labels, bias=ref_leaves[2])
    want = torch.autograd.grad(ref, ref_leaves)
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
    for g1, g2 in zip(got, want, strict=True):
        torch.testing.assert_close(g1.double(), g2, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# the divisor and the empty cases
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reference", "chunked"])
def test_num_items_in_batch_is_the_exact_divisor(kind):
    h, w, labels = random_problem(2, 12, seed=5)
    count = int((labels[:, 1:] != IGNORE_INDEX).sum())

    def loss_fn(n):
        if kind == "reference":
            return lambda a, b: cross_entropy_loss(a @ b.t(), labels, n)
        return lambda a, b: chunked_cross_entropy_loss(a, b, labels, n, chunk_size=5)

    base, (gh, gw) = grads(loss_fn(None), h, w)
    for n in (3 * count, torch.tensor(3 * count), torch.tensor(3.0 * count, dtype=torch.float64)):
        loss, (gh3, gw3) = grads(loss_fn(n), h, w)
        torch.testing.assert_close(loss, base / 3, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(gh3, gh / 3, atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(gw3, gw / 3, atol=1e-7, rtol=1e-5)
        assert_matches_oracle(loss_fn(n), h, w, labels, divisor=3 * count)


@pytest.mark.parametrize("kind", ["reference", "chunked"])
@pytest.mark.parametrize("case", ["all_masked", "all_masked_with_count", "zero_divisor"])
def test_empty_batches_give_finite_zero_and_zero_grads(kind, case):
    h, w, labels = random_problem(2, 8, seed=6, p_mask=0.0)
    n = None
    if case.startswith("all_masked"):
        labels = torch.full_like(labels, IGNORE_INDEX)
        n = 7 if case == "all_masked_with_count" else None  # another micro-batch had the targets
    else:
        n = torch.tensor(0)
    if kind == "reference":
        loss, (gh, gw) = grads(lambda a, b: cross_entropy_loss(a @ b.t(), labels, n), h, w)
    else:
        loss, (gh, gw) = grads(lambda a, b: chunked_cross_entropy_loss(a, b, labels, n, chunk_size=3), h, w)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    assert torch.count_nonzero(gh) == 0 and torch.count_nonzero(gw) == 0
    assert torch.isfinite(gh).all() and torch.isfinite(gw).all()


def test_low_precision_inputs_are_computed_in_float32():
    h, w, labels = random_problem(2, 12, seed=7, dtype=torch.bfloat16)
    # The oracle sees exactly the bf16 values, upcast: only the arithmetic's precision differs.
    ref, (rh, rw) = grads(lambda a, b: oracle(a, b, labels), h.double(), w.double())
    loss, (gh, gw) = grads(lambda a, b: chunked_cross_entropy_loss(a, b, labels, chunk_size=5), h, w)
    assert loss.dtype == torch.float32 and gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh.double(), rh, atol=1e-3, rtol=1e-2)  # bf16 rounding of the result only
    torch.testing.assert_close(gw.double(), rw, atol=1e-3, rtol=1e-2)
    logits = (h.double() @ w.double().t()).to(torch.bfloat16)
    got = cross_entropy_loss(logits, labels)
    want = F.cross_entropy(
        logits[:, :-1].double().reshape(-1, w.shape[0]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["reference", "chunked"])
def test_gradcheck_passes_in_float64(kind):
    """float64 inputs are computed in float64, so finite differences can check the analytic gradients."""
    h, w, labels = random_problem(batch=2, seq=5, hidden=4, vocab=7, p_mask=0.3, seed=11, dtype=torch.float64)
    bias = torch.randn(7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert (labels[:, 1:] != IGNORE_INDEX).sum() >= 3

    def loss(a, b, c):
        if kind == "reference":
            return cross_entropy_loss(a @ b.t() + c, labels, 6)
        return chunked_cross_entropy_loss(a, b, labels, 6, chunk_size=3, bias=c)

    leaves = tuple(t.clone().requires_grad_() for t in (h, w, bias))
    assert loss(*leaves).dtype == torch.float64
    assert torch.autograd.gradcheck(loss, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


#: Loss and two gradient fingerprints (gradients dotted with fixed random tensors) computed by the
#: implementation before float64 support (commit 6f7813f), on ``random_problem(2, 11, 16, 97, seed=7)``.
BEFORE_FLOAT64 = {
    (torch.float32, "reference"): (12.374940872192383, 1.8074050303205684, -0.373094093753621),
    (torch.float32, "chunked"): (12.3749418258667, 1.8074047816472196, -0.373094060686963),
    (torch.bfloat16, "reference"): (12.387866020202637, 1.8043585964039908, -0.367429845010698),
    (torch.bfloat16, "chunked"): (12.379894256591797, 1.8074811835697295, -0.3761021165504),
}


@pytest.mark.parametrize("dtype, kind", list(BEFORE_FLOAT64))
def test_float32_and_bf16_results_are_unchanged(dtype, kind):
    h, w, labels = random_problem(batch=2, seq=11, hidden=16, vocab=97, seed=7, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    ph = torch.randn(h.shape, generator=g, dtype=torch.float64)
    pw = torch.randn(w.shape, generator=g, dtype=torch.float64)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    if kind == "reference":
        loss = cross_entropy_loss(hh @ ww.t(), labels, 9)
    else:
        loss = chunked_cross_entropy_loss(hh, ww, labels, 9, chunk_size=5)
    loss.backward()
    assert loss.dtype == torch.float32 and hh.grad.dtype == dtype
    got = (loss.item(), (hh.grad.double() * ph).sum().item(), (ww.grad.double() * pw).sum().item())
    assert got == pytest.approx(BEFORE_FLOAT64[(dtype, kind)], rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------------------------------------
# a real (tiny) model: tied weights, bias, LoRA, refusals
# ------------------------------------------------------------------------------------------------


def tiny_llama(seed: int = 0, **overrides):
    return helpers.tiny_llama(seed=seed, **{**TINY, **overrides})


def toy_examples() -> list[dict[str, list[int]]]:
    """Four sequences of very different lengths and target counts (2, 5, 10, 21 targets)."""
    g = torch.Generator().manual_seed(11)
    out = []
    for length, n_prompt in ((6, 4), (9, 4), (16, 6), (26, 5)):
        ids = torch.randint(1, TINY["vocab_size"], (length,), generator=g).tolist()
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        out.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * length})
    return out


def collate(examples):
    width = max(len(e["input_ids"]) for e in examples)

    def pad(key, value):
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in examples])

    return {
        "input_ids": pad("input_ids", 0),
        "labels": pad("labels", IGNORE_INDEX),
        "attention_mask": pad("attention_mask", 0),
    }


def count_lm_head_positions(model) -> list[int]:
    seen: list[int] = []
    model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[-2]))
    return seen


def param_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(a: dict, b: dict, atol=1e-5, rtol=1e-4):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def test_chunked_loss_for_model_matches_logits_path_with_tied_weights():
    batch = collate(toy_examples())
    ref_model, model = tiny_llama(), tiny_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ref = cross_entropy_loss(ref_model(**inputs).logits, batch["labels"])
    ref.backward()
    seen = count_lm_head_positions(model)
    loss = chunked_loss_for_model(model, batch, chunk_size=7)
    loss.backward()
    assert seen == [1], "the chunked path must never run lm_head over all positions"
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    assert_grads_close(param_grads(model), param_grads(ref_model))


def test_chunked_loss_for_model_supports_an_untied_biased_head():
    batch = collate(toy_examples()[:2])
    models = []
    for _ in range(2):
        m = tiny_llama(tie_word_embeddings=False)
        torch.manual_seed(1)
        m.lm_head = torch.nn.Linear(TINY["hidden_size"], TINY["vocab_size"], bias=True)
        models.append(m)
    ref_model, model = models
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ref = cross_entropy_loss(ref_model(**inputs).logits, batch["labels"], 9)
    ref.backward()
    loss = chunked_loss_for_model(model, batch, num_items_in_batch=9, chunk_size=4)
    loss.backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    assert model.lm_head.bias.grad is not None and model.lm_head.bias.grad.abs().sum() > 0
    assert_grads_close(param_grads(model), param_grads(ref_model))


def test_chunked_loss_for_model_goes_through_lora_layers():
    import peft  # a declared dependency (sftlab[lora]) that CI installs: missing is a failure, not a skip

    batch = collate(toy_examples())

    def wrapped():
        cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        return peft.get_peft_model(tiny_llama(), cfg)

    ref_model, model = wrapped(), wrapped()
    plain = tiny_llama()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ref = cross_entropy_loss(ref_model(**inputs).logits, batch["labels"])
    ref.backward()
    loss = chunked_loss_for_model(model, batch, chunk_size=6)
    loss.backward()
    # Non-zero LoRA weights change the loss: equality with the wrapped model proves the adapters ran.
    without_lora = cross_entropy_loss(plain(**inputs).logits, batch["labels"])
    assert abs(without_lora.item() - ref.item()) > 1e-3
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    lora = {n: g for n, g in param_grads(model).items() if "lora_" in n}
    assert lora and all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert_grads_close(lora, param_grads(ref_model))


def test_chunked_refuses_post_processed_logits_and_bad_kind():
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(SftlabError, match="final_logit_softcapping"):
        chunked_loss_for_model(model, collate(toy_examples()[:1]))
    with pytest.raises(SftlabError, match="reference"):
        make_compute_loss("fused")


def test_make_compute_loss_follows_the_trainer_contract():
    """Scaled by the process count like Trainer.compute_loss; eval needing logits gets real logits."""
    from types import SimpleNamespace

    model = tiny_llama()
    batch = collate(toy_examples())
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def fake_trainer(processes, metrics=None):
        args = SimpleNamespace(average_tokens_across_devices=True, n_gpu=1, prediction_loss_only=False)
        return SimpleNamespace(
            args=args,
            accelerator=SimpleNamespace(num_processes=processes),
            compute_metrics=metrics,
            get_tp_size=lambda: 1,
        )

    ref = cross_entropy_loss(
        model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"], n
    )
    chunked = make_compute_loss("chunked", chunk_size=8)
    torch.testing.assert_close(chunked(fake_trainer(1), model, batch, False, torch.tensor(n)), ref)
    torch.testing.assert_close(chunked(fake_trainer(2), model, batch, False, torch.tensor(n)), 2 * ref)
    torch.testing.assert_close(
        chunked(fake_trainer(2), model, batch, False, None), ref
    )  # nothing was gathered
    loss, outputs = chunked(fake_trainer(1), model, batch, True, n)
    assert set(outputs) == {"loss"}
    loss, outputs = chunked(fake_trainer(1, metrics=lambda p: {}), model, batch, True, n)
    assert outputs.logits.shape == (*batch["input_ids"].shape, TINY["vocab_size"])
    torch.testing.assert_close(loss, ref)
    assert "labels" in batch  # the caller's batch is not mutated


# ------------------------------------------------------------------------------------------------
# gradient accumulation through the real HF Trainer
# ------------------------------------------------------------------------------------------------


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def trainer_step_grads(
    tmp_path: Path, kind: str, batch_size: int, accumulation: int
) -> tuple[dict, list[int]]:
    """Gradients the Trainer has accumulated for its first optimizer step (lr 0, no clipping)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    captured: dict = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if not captured:
                captured.update(param_grads(model))

    loss_fn = make_compute_loss("chunked", chunk_size=5)

    class ChunkedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return loss_fn(self, model, inputs, return_outputs, num_items_in_batch)

    model = tiny_llama()
    seen = count_lm_head_positions(model)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"{kind}-{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.0,
        max_grad_norm=0.0,
        optim="sgd",
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    cls = ChunkedTrainer if kind == "chunked" else Trainer
    trainer = cls(
        model=model,
        args=args,
        train_dataset=ListDataset(toy_examples()),
        data_collator=collate,
        compute_loss_func=compute_loss_from_logits,
        callbacks=[Capture()],
    )
    trainer.train()
    assert captured, "the optimizer step was never reached"
    return captured, seen


def manual_grads(per_sequence_mean: bool) -> dict:
    """Oracle gradients, one unpadded sequence at a time: the token mean over all four sequences'
    targets, or (per_sequence_mean) the mean over sequences of each sequence's own mean."""
    model = tiny_llama()
    rows = toy_examples()
    total = sum(sum(t != IGNORE_INDEX for t in r["labels"][1:]) for r in rows)
    for r in rows:
        ids = torch.tensor([r["input_ids"]])
        logits = model(input_ids=ids).logits[0, :-1].double()
        y = torch.tensor(r["labels"][1:])
        s = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
        n = int((y != IGNORE_INDEX).sum())
        (s / (n * len(rows)) if per_sequence_mean else s / total).backward()
    return param_grads(model)


@pytest.mark.parametrize("kind", ["reference", "chunked"])
def test_gradient_accumulation_matches_one_big_batch_through_trainer(tmp_path, kind):
    big, seen_big = trainer_step_grads(tmp_path, kind, batch_size=4, accumulation=1)
    accumulated, seen_acc = trainer_step_grads(tmp_path, kind, batch_size=1, accumulation=4)
    assert_grads_close(accumulated, big, atol=1e-5, rtol=1e-4)
    token_mean = manual_grads(per_sequence_mean=False)
    assert_grads_close(big, token_mean, atol=1e-5, rtol=1e-4)
    # A per-micro-batch mean (averaged over the 4 accumulation steps) gives another gradient entirely.
    naive = manual_grads(per_sequence_mean=True)
    worst = max(float((naive[n] - token_mean[n]).abs().max()) for n in naive)
    assert worst > 1e-2, worst
    if kind == "chunked":
        assert seen_big == [1] and seen_acc == [1] * 4  # lm_head never saw more than the last position
    else:
        assert seen_big == [26] and sorted(seen_acc) == [6, 9, 16, 26]


# ------------------------------------------------------------------------------------------------
# DDP: two real processes (gloo); gradients must be synchronised and equal the global token mean
# ------------------------------------------------------------------------------------------------

DDP_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from safetensors.torch import save_file
    from sftlab.prep.masking_parts import IGNORE_INDEX
    from sftlab.train.loss import chunked_loss_for_model

    rank, world, store, out, cfg, batches, tests_dir = sys.argv[1:8]
    sys.path.insert(0, tests_dir)
    from helpers import tiny_llama
    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model = tiny_llama(seed=0, **json.loads(cfg))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batches = json.loads(batches)
    mine = {k: torch.tensor(v) for k, v in batches[rank].items()}
    total = sum(sum(t != IGNORE_INDEX for row in b["labels"] for t in row[1:]) for b in batches)
    # What the Trainer does: global target count, loss times the number of processes.
    loss = chunked_loss_for_model(ddp, mine, num_items_in_batch=torch.tensor(total), chunk_size=3) * world
    loss.backward()
    save_file({n: p.grad.contiguous() for n, p in model.named_parameters()}, os.path.join(out, f"rank{rank}.safetensors"))
    dist.destroy_process_group()
    """
)


@pytest.mark.integration
def test_chunked_loss_under_ddp_synchronises_to_the_global_token_mean(tmp_path):
    from safetensors.torch import load_file

    rows = toy_examples()
    batches = [collate(rows[:1]), collate(rows[1:])]  # 2 vs 33 targets: unequal on purpose
    payload = json.dumps([{k: v.tolist() for k, v in b.items()} for b in batches])
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(r),
                "2",
                str(tmp_path / "store"),
                str(tmp_path),
                json.dumps(TINY),
                payload,
                str(Path(__file__).parent),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out[-3000:]
    g0, g1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    want = manual_grads(per_sequence_mean=False)
    assert_grads_close(g0, g1, atol=1e-6, rtol=1e-5)  # synchronised: DDP's hooks saw the backward
    assert_grads_close(g0, want, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# per-token weights (message ``weight``): sum(weight * nll) / num_items_in_batch
# ------------------------------------------------------------------------------------------------


def weighted_oracle(h, w, labels, weights, divisor=None):
    """float64: per-token F.cross_entropy times the target's weight, summed, over the target count."""
    logits = h.double() @ w.double().t()
    v = logits.shape[-1]
    y = labels[..., 1:].reshape(-1)
    per = F.cross_entropy(logits[..., :-1, :].reshape(-1, v), y, ignore_index=IGNORE_INDEX, reduction="none")
    n = (y != IGNORE_INDEX).sum() if divisor is None else divisor
    return (per * weights[..., 1:].reshape(-1).double()).sum() / n


def random_weights(labels, seed=3):
    g = torch.Generator().manual_seed(seed)
    wts = torch.rand(labels.shape, generator=g) * 3
    wts[torch.rand(labels.shape, generator=g) < 0.2] = 0.0  # weight 0 on some targets
    return torch.where(labels == IGNORE_INDEX, torch.zeros_like(wts), wts)


@pytest.mark.parametrize("kind", ["reference", "chunked"])
def test_weighted_loss_matches_float64_oracle_and_all_ones_is_the_plain_loss(kind):
    h, w, labels = random_problem(3, 13, seed=9)
    wts = random_weights(labels)
    count = int((labels[:, 1:] != IGNORE_INDEX).sum())

    def fn(weights, n=None):
        if kind == "reference":
            return lambda a, b: cross_entropy_loss(a @ b.t(), labels, n, weights)
        return lambda a, b: chunked_cross_entropy_loss(a, b, labels, n, chunk_size=5, weights=weights)

    for n in (None, 2 * count):
        loss, (gh, gw) = grads(fn(wts, n), h, w)
        ref, (rh, rw) = grads(lambda a, b, n=n: weighted_oracle(a, b, labels, wts, n), h.double(), w.double())
        torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gh.double(), rh, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(gw.double(), rw, atol=1e-5, rtol=1e-4)
    plain, (ph, pw) = grads(fn(None), h, w)
    ones, (oh, ow) = grads(fn(torch.ones_like(wts)), h, w)
    torch.testing.assert_close(ones, plain, atol=0, rtol=0)
    torch.testing.assert_close(oh, ph, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(ow, pw, atol=1e-7, rtol=1e-6)
    weighted, _ = grads(fn(wts), h, w)
    assert abs(float(weighted - plain)) > 1e-3  # the weights change the loss


def weighted_examples() -> list[dict]:
    g = torch.Generator().manual_seed(5)
    rows = []
    for ex in toy_examples():
        wts = [0.0 if lab == IGNORE_INDEX else round(float(torch.rand((), generator=g)) * 3, 3) for lab in ex["labels"]]
        rows.append({**ex, "weights": wts})
    return rows


def weighted_step_grads(tmp_path: Path, kind: str, batch_size: int, accumulation: int) -> dict:
    """Gradients of the first optimizer step through the real Trainer, weights in the batch."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from sftlab.train.collate import SFTDataCollator

    captured: dict = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if not captured:
                captured.update(param_grads(model))

    loss_fn = make_compute_loss(kind, chunk_size=5)

    class WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return loss_fn(self, model, inputs, return_outputs, num_items_in_batch)

    args = TrainingArguments(
        output_dir=str(tmp_path / f"w-{kind}-{batch_size}x{accumulation}"), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.0, max_grad_norm=0.0, optim="sgd",
        lr_scheduler_type="constant", report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
        remove_unused_columns=False,  # else the Trainer drops "weights" (not a forward argument) before collating
    )
    trainer = WeightedTrainer(
        model=tiny_llama(), args=args, train_dataset=ListDataset(weighted_examples()),
        data_collator=SFTDataCollator(pad_token_id=0), compute_loss_func=compute_loss_from_logits,
        callbacks=[Capture()],
    )
    trainer.train()
    assert captured, "the optimizer step was never reached"
    return captured


@pytest.mark.parametrize("kind", ["reference", "chunked"])
def test_weighted_gradient_accumulation_matches_one_big_batch_through_trainer(tmp_path, kind):
    big = weighted_step_grads(tmp_path, kind, batch_size=4, accumulation=1)
    accumulated = weighted_step_grads(tmp_path, kind, batch_size=1, accumulation=4)
    assert_grads_close(accumulated, big, atol=1e-5, rtol=1e-4)
    # Oracle: one unpadded sequence at a time, sum(weight * nll) over all targets / number of targets.
    model = tiny_llama()
    rows = weighted_examples()
    total = sum(sum(t != IGNORE_INDEX for t in r["labels"][1:]) for r in rows)
    for r in rows:
        logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1].double()
        per = F.cross_entropy(logits, torch.tensor(r["labels"][1:]), ignore_index=IGNORE_INDEX, reduction="none")
        ((per * torch.tensor(r["weights"][1:], dtype=torch.float64)).sum() / total).backward()
    assert_grads_close(big, param_grads(model), atol=1e-5, rtol=1e-4)
