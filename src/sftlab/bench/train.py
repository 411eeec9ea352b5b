"""Training throughput: pad-to-max-length (the reference pipeline) vs pad-to-longest with length
grouping, and packing.

All paths train a SmolLM2-135M-shaped random-init Llama (``--quick``: a narrower, shallower one with
the same vocabulary and context) for the same number of optimizer steps on the *same* conversations,
with the same batch size, optimizer and loss; only how the batches are formed differs:

- ``padmax``: the conversations in their own order, every batch padded to ``max_length`` (2048);
- ``dynamic``: sftlab's seeded length-grouped order, each batch padded to its longest member;
- ``packed``: the same conversations packed into rows of up to 2048 tokens (``packing: true``),
  position ids restarting per conversation so none attends to another; fewer, fuller steps.

Two data mixes from the bundled ShareGPT: first rounds only (``max_rounds=1``, short) and whole
conversations (long, many truncated at 2048). For each mix and path we report real (non-pad) tokens
per second, the padding efficiency (real tokens / computed positions), the measured speedup, and the
ratio of that speedup to the one the efficiencies predict (>1: padding cost more than its share of
positions, e.g. attention is quadratic; <1: per-batch overheads the padding hid). A second prediction,
``*_predicted_flops``, divides the FLOPs each path's kernels compute (every position, attention over
the full padded width) instead of the positions, so it accounts for the quadratic attention.

MFU is the useful model FLOPs (real tokens only: ``6 * N * n`` for the matmuls with ``N`` the
non-embedding parameters plus the output projection, and ``6 * layers * hidden * n^2`` for causal
attention score and value products, per sequence of ``n`` tokens, forward + backward) divided by the
measured fp32 matmul peak of this machine (:mod:`sftlab.bench.machine`), sampled between the steps so
that it sees the same load from other processes as the steps do (the CPU may be shared).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

MAX_LENGTH = 2048


def _tokenizer():
    from sftlab.models.loading import load_tokenizer

    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "tokenizers" / "SmolLM2-135M"
        if cand.is_dir():
            return load_tokenizer(str(cand), chat_template="chatml"), cand
    return load_tokenizer("HuggingFaceTB/SmolLM2-135M", chat_template="chatml"), None


def _model_config(tok, tok_dir: Path | None, quick: bool, max_length: int = MAX_LENGTH,
                  shape: dict[str, int] | None = None):
    import json

    from transformers import LlamaConfig

    base: dict[str, Any] = {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    }
    if tok_dir is not None and (tok_dir / "config.json").is_file():
        cfg = json.loads((tok_dir / "config.json").read_text())
        base.update({k: cfg[k] for k in base if k in cfg})
    if quick:  # same vocabulary and context, a fraction of the width and depth
        base.update({"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4,
                     "num_attention_heads": 3, "num_key_value_heads": 1})
    base.update(shape or {})
    return LlamaConfig(vocab_size=len(tok), max_position_embeddings=max_length, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **base)


def _features(tok, n: int, max_rounds: int | None, max_length: int = MAX_LENGTH) -> list[dict[str, list[int]]]:
    """The first ``n`` usable ShareGPT conversations, masked (assistant tokens) and cut at 2048."""
    from sftlab.data import load_conversations
    from sftlab.prep.masking import encode_conversation
    from sftlab.prep.masking_parts import IGNORE_INDEX

    res = load_conversations("sharegpt", max_samples=n * 2, max_rounds=max_rounds)
    feats = []
    for conv in res.conversations:
        f = encode_conversation(conv, tok, max_length=max_length)
        if any(x != IGNORE_INDEX for x in f["labels"][1:]):
            feats.append(f)
        if len(feats) == n:
            break
    return feats


def useful_flops(cfg, lengths: list[int]) -> float:
    """Model FLOPs of forward + backward on sequences of these real lengths (no padding)."""
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = h // cfg.num_attention_heads * cfg.num_key_value_heads
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o; k, v; gate, up, down
    n_params = layers * per_layer + cfg.vocab_size * h  # + output projection (tied or not, it is a matmul)
    return sum(6.0 * n_params * n + 6.0 * layers * h * n * n for n in lengths)


def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _Path:
    """One training path: its own copy of the model and optimizer, its batches and collator."""

    def __init__(self, model_cfg, init_state, feats, batches, collator):
        import torch
        from transformers import LlamaForCausalLM

        self.model = LlamaForCausalLM(model_cfg)
        self.model.load_state_dict(init_state)
        self.model.config.use_cache = False
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.feats, self.batches, self.collator = feats, batches, collator
        self.seconds = 0.0
        self.real = self.positions = 0
        self.computed_flops = 0.0  # what the kernels compute: every position, attention over the full width
        self.losses: list[float] = []

    def _forward_backward(self, batch: dict) -> tuple[Any, int]:
        """Loss (backpropagated) and real-token count of one collated batch, padded or packed."""
        from sftlab.train.loss import compute_loss_from_logits

        if "position_ids" in batch:  # packed rows: position resets define the attention
            real = int(batch.pop("num_real_tokens"))
            out = self.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
        else:
            real = int(batch["attention_mask"].sum())
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = compute_loss_from_logits(out, batch["labels"])
        loss.backward()
        return loss, real

    def warm_up(self) -> None:
        """Thread pools, kernel selection and the allocator, on a short batch (not timed)."""
        self._forward_backward(self.collator([{k: v[:64] for k, v in self.feats[0].items()}]))
        self.opt.zero_grad(set_to_none=True)

    def step(self, i: int) -> None:
        t0 = time.perf_counter()
        batch = self.collator([self.feats[j] for j in self.batches[i]])
        loss, real = self._forward_backward(batch)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.seconds += time.perf_counter() - t0
        rows, width = batch["input_ids"].shape
        positions = rows * width
        self.computed_flops += useful_flops(self.model.config, [width] * rows)
        self.real += real
        self.positions += positions
        self.losses.append(loss.detach().item())

    @property
    def tokens_per_s(self) -> float:
        return self.real / self.seconds

    @property
    def padding_efficiency(self) -> float:
        return self.real / self.positions


def _mix(name: str, tok, model_cfg, init_state, feats, batch_size: int,
         max_length: int = MAX_LENGTH) -> dict[str, Any]:
    """Train the paths on one mix, alternating their steps so all see the same machine load."""
    from sftlab.bench.machine import matmul_gflops
    from sftlab.train.collate import PackedCollator, SFTDataCollator, length_grouped_indices, pack_examples

    lengths = [len(f["input_ids"]) for f in feats]
    pad_id = tok.pad_token_id
    padmax = _Path(model_cfg, init_state, feats, _batches(list(range(len(feats))), batch_size),
                   SFTDataCollator(pad_token_id=pad_id, padding="max_length", max_length=max_length))
    dynamic = _Path(model_cfg, init_state, feats,
                    _batches(length_grouped_indices(lengths, batch_size, seed=0, epoch=0), batch_size),
                    SFTDataCollator(pad_token_id=pad_id, padding="longest"))
    # Packing: the same conversations filled into rows of up to max_length tokens, fewer steps.
    rows = pack_examples(feats, max_length)
    packed = _Path(model_cfg, init_state, rows, _batches(list(range(len(rows))), batch_size),
                   PackedCollator(pad_token_id=pad_id))
    paths = {"padmax": padmax, "dynamic": dynamic, "packed": packed}
    for p in paths.values():
        p.warm_up()
    peaks = []
    for i in range(len(padmax.batches)):
        for p in paths.values():
            if i < len(p.batches):
                p.step(i)
        # the peak is sampled between steps, under the same machine load as the steps themselves
        peaks.append(matmul_gflops(1024, "float32", reps=3))
    peak = max(statistics.median(peaks), 1e-9)
    assert padmax.real == dynamic.real == packed.real == sum(lengths)  # the same real tokens on every path
    flops = useful_flops(model_cfg, lengths)
    res: dict[str, Any] = {
        f"{name}_conversations": len(feats),
        f"{name}_mean_length": round(sum(lengths) / len(lengths), 1),
        f"{name}_steps": len(padmax.batches),
        f"{name}_steps_packed": len(packed.batches),
        f"{name}_matmul_peak_gflops_fp32": round(peak, 1),
    }
    for key, p in paths.items():
        res[f"{name}_tokens_per_s_{key}"] = round(p.tokens_per_s, 2)
        res[f"{name}_padding_efficiency_{key}"] = round(p.padding_efficiency, 4)
        res[f"{name}_mfu_{key}"] = round(flops / p.seconds / (peak * 1e9), 4)
    for key, p in (("", dynamic), ("_packed", packed)):
        speedup = p.tokens_per_s / padmax.tokens_per_s
        predicted = p.padding_efficiency / padmax.padding_efficiency
        # The same prediction with attention's cost growing with the padded width (quadratic):
        # padding a 400-token conversation to 2048 wastes more than its share of positions.
        predicted_flops = padmax.computed_flops / p.computed_flops
        res[f"{name}_speedup{key}"] = round(speedup, 3)
        res[f"{name}_speedup{key}_predicted"] = round(predicted, 3)
        res[f"{name}_speedup{key}_vs_predicted"] = round(speedup / predicted, 3)
        res[f"{name}_speedup{key}_predicted_flops"] = round(predicted_flops, 3)
        res[f"{name}_speedup{key}_vs_predicted_flops"] = round(speedup / predicted_flops, 3)
    return res


def run(quick: bool = False, *, steps: int | None = None, max_length: int = MAX_LENGTH,
        shape: dict[str, int] | None = None) -> dict[str, Any]:
    """Both mixes, three paths each. ``steps``, ``max_length`` and ``shape`` (LlamaConfig fields)
    shrink the work for tests; the figures of record use the defaults."""
    import torch
    from transformers import LlamaForCausalLM

    tok, tok_dir = _tokenizer()
    model_cfg = _model_config(tok, tok_dir, quick, max_length, shape)
    torch.manual_seed(0)
    init_state = {k: v.clone() for k, v in LlamaForCausalLM(model_cfg).state_dict().items()}
    # Three models with AdamW state live side by side (interleaved steps); at 2048 tokens a batch of 2
    # keeps the full-size run within 24 GB (a batch of 4 does not fit with full logits). First rounds
    # get twice the steps: packing needs enough short conversations to fill its rows.
    batch_size = 2
    steps = steps or (3 if quick else 4)
    n = batch_size * steps
    n_first = n if quick else 2 * n

    results: dict[str, Any] = {
        "model": "SmolLM2-135M-shaped" if not quick else "SmolLM2-135M vocab/context, narrow (quick)",
        "hidden_size": model_cfg.hidden_size,
        "layers": model_cfg.num_hidden_layers,
        "max_length": max_length,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
    }
    first = _features(tok, n_first, max_rounds=1, max_length=max_length)
    whole = _features(tok, n, max_rounds=None, max_length=max_length)
    results.update(_mix("first_round", tok, model_cfg, init_state, first, batch_size, max_length))
    results.update(_mix("whole", tok, model_cfg, init_state, whole, batch_size, max_length))
    # headline figures under the names the suite and report read
    results["speedup_dynamic_vs_padmax"] = results["first_round_speedup"]
    results["speedup_dynamic_vs_padmax_long"] = results["whole_speedup"]
    results["padding_efficiency_padmax"] = results["first_round_padding_efficiency_padmax"]
    results["padding_efficiency_dynamic"] = results["first_round_padding_efficiency_dynamic"]
    results["padding_efficiency_padmax_long"] = results["whole_padding_efficiency_padmax"]
    results["padding_efficiency_dynamic_long"] = results["whole_padding_efficiency_dynamic"]
    results["speedup_vs_predicted"] = results["first_round_speedup_vs_predicted"]
    results["speedup_vs_predicted_long"] = results["whole_speedup_vs_predicted"]
    results["speedup_packed_vs_padmax"] = results["first_round_speedup_packed"]
    results["speedup_packed_vs_padmax_long"] = results["whole_speedup_packed"]
    results["tokens_per_s_dynamic"] = results["first_round_tokens_per_s_dynamic"]
    results["tokens_per_s_padmax"] = results["first_round_tokens_per_s_padmax"]
    results["mfu"] = results["whole_mfu_dynamic"]
    results["mfu_first_round"] = results["first_round_mfu_dynamic"]
    return results
