"""Training throughput: pad-to-max-length (the reference pipeline) vs pad-to-longest with length grouping.

Both paths train a SmolLM2-135M-shaped random-init Llama (``--quick``: a narrower, shallower one with
the same vocabulary and context) for the same number of optimizer steps on the *same* conversations,
with the same batch size, optimizer and loss; only how the batches are formed differs:

- ``padmax``: the conversations in their own order, every batch padded to ``max_length`` (2048);
- ``dynamic``: sftlab's seeded length-grouped order, each batch padded to its longest member.

Two data mixes from the bundled ShareGPT: first rounds only (``max_rounds=1``, short) and whole
conversations (long, many truncated at 2048). For each mix and path we report real (non-pad) tokens
per second, the padding efficiency (real tokens / computed positions), the measured speedup, and the
ratio of that speedup to the one the efficiencies predict (>1: padding cost more than its share of
positions, e.g. attention is quadratic; <1: per-batch overheads the padding hid).

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
    from sftlab.models import load_tokenizer

    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "tokenizers" / "SmolLM2-135M"
        if cand.is_dir():
            return load_tokenizer(str(cand), chat_template="chatml"), cand
    return load_tokenizer("HuggingFaceTB/SmolLM2-135M", chat_template="chatml"), None


def _model_config(tok, tok_dir: Path | None, quick: bool):
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
    return LlamaConfig(vocab_size=len(tok), max_position_embeddings=MAX_LENGTH, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **base)


def _features(tok, n: int, max_rounds: int | None) -> list[dict[str, list[int]]]:
    """The first ``n`` usable ShareGPT conversations, masked (assistant tokens) and cut at 2048."""
    from sftlab.data import load_conversations
    from sftlab.masking import encode_conversation

    res = load_conversations("sharegpt", max_samples=n * 2, max_rounds=max_rounds)
    feats = []
    for conv in res.conversations:
        f = encode_conversation(conv, tok, max_length=MAX_LENGTH)
        if any(x != -100 for x in f["labels"][1:]):
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
        self.losses: list[float] = []

    def warm_up(self) -> None:
        """Thread pools, kernel selection and the allocator, on a short batch (not timed)."""
        from sftlab.loss import compute_loss_from_logits

        warm = self.collator([{k: v[:64] for k, v in self.feats[0].items()}])
        out = self.model(input_ids=warm["input_ids"], attention_mask=warm["attention_mask"])
        compute_loss_from_logits(out, warm["labels"]).backward()
        self.opt.zero_grad(set_to_none=True)

    def step(self, i: int) -> None:
        from sftlab.loss import compute_loss_from_logits

        t0 = time.perf_counter()
        batch = self.collator([self.feats[j] for j in self.batches[i]])
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = compute_loss_from_logits(out, batch["labels"])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.seconds += time.perf_counter() - t0
        self.real += int(batch["attention_mask"].sum())
        self.positions += batch["input_ids"].numel()
        self.losses.append(loss.detach().item())

    @property
    def tokens_per_s(self) -> float:
        return self.real / self.seconds

    @property
    def padding_efficiency(self) -> float:
        return self.real / self.positions


def _mix(name: str, tok, model_cfg, init_state, feats, batch_size: int) -> dict[str, Any]:
    """Train both paths on one mix, alternating their steps so both see the same machine load."""
    from sftlab.bench.machine import matmul_gflops
    from sftlab.collate import SFTDataCollator
    from sftlab.train import length_grouped_indices

    lengths = [len(f["input_ids"]) for f in feats]
    pad_id = tok.pad_token_id
    padmax = _Path(model_cfg, init_state, feats, _batches(list(range(len(feats))), batch_size),
                   SFTDataCollator(pad_token_id=pad_id, padding="max_length", max_length=MAX_LENGTH))
    dynamic = _Path(model_cfg, init_state, feats,
                    _batches(length_grouped_indices(lengths, batch_size, seed=0, epoch=0), batch_size),
                    SFTDataCollator(pad_token_id=pad_id, padding="longest"))
    padmax.warm_up()
    dynamic.warm_up()
    peaks = []
    for i in range(len(padmax.batches)):
        padmax.step(i)
        dynamic.step(i)
        # the peak is sampled between steps, under the same machine load as the steps themselves
        peaks.append(matmul_gflops(1024, "float32", reps=3))
    peak = max(statistics.median(peaks), 1e-9)
    assert padmax.real == dynamic.real  # the same conversations, the same real tokens
    speedup = dynamic.tokens_per_s / padmax.tokens_per_s
    predicted = dynamic.padding_efficiency / padmax.padding_efficiency
    flops = useful_flops(model_cfg, lengths)
    return {
        f"{name}_conversations": len(feats),
        f"{name}_mean_length": round(sum(lengths) / len(lengths), 1),
        f"{name}_steps": len(padmax.batches),
        f"{name}_tokens_per_s_padmax": round(padmax.tokens_per_s, 2),
        f"{name}_tokens_per_s_dynamic": round(dynamic.tokens_per_s, 2),
        f"{name}_padding_efficiency_padmax": round(padmax.padding_efficiency, 4),
        f"{name}_padding_efficiency_dynamic": round(dynamic.padding_efficiency, 4),
        f"{name}_speedup": round(speedup, 3),
        f"{name}_speedup_predicted": round(predicted, 3),
        f"{name}_speedup_vs_predicted": round(speedup / predicted, 3),
        f"{name}_matmul_peak_gflops_fp32": round(peak, 1),
        f"{name}_mfu_dynamic": round(flops / dynamic.seconds / (peak * 1e9), 4),
        f"{name}_mfu_padmax": round(flops / padmax.seconds / (peak * 1e9), 4),
    }


def run(quick: bool = False) -> dict[str, Any]:
    import torch
    from transformers import LlamaForCausalLM

    tok, tok_dir = _tokenizer()
    model_cfg = _model_config(tok, tok_dir, quick)
    torch.manual_seed(0)
    init_state = {k: v.clone() for k, v in LlamaForCausalLM(model_cfg).state_dict().items()}
    # Two models with AdamW state live side by side (interleaved steps); at 2048 tokens a batch of 2
    # keeps the full-size run near 12 GB (a batch of 4 does not fit in 24 GB with full logits).
    batch_size = 2
    steps = 3 if quick else 4
    n = batch_size * steps

    results: dict[str, Any] = {
        "model": "SmolLM2-135M-shaped" if not quick else "SmolLM2-135M vocab/context, narrow (quick)",
        "hidden_size": model_cfg.hidden_size,
        "layers": model_cfg.num_hidden_layers,
        "max_length": MAX_LENGTH,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
    }
    first = _features(tok, n, max_rounds=1)
    whole = _features(tok, n, max_rounds=None)
    results.update(_mix("first_round", tok, model_cfg, init_state, first, batch_size))
    results.update(_mix("whole", tok, model_cfg, init_state, whole, batch_size))
    # headline figures under the names the suite and report read
    results["speedup_dynamic_vs_padmax"] = results["first_round_speedup"]
    results["speedup_dynamic_vs_padmax_long"] = results["whole_speedup"]
    results["padding_efficiency_padmax"] = results["first_round_padding_efficiency_padmax"]
    results["padding_efficiency_dynamic"] = results["first_round_padding_efficiency_dynamic"]
    results["padding_efficiency_padmax_long"] = results["whole_padding_efficiency_padmax"]
    results["padding_efficiency_dynamic_long"] = results["whole_padding_efficiency_dynamic"]
    results["speedup_vs_predicted"] = results["first_round_speedup_vs_predicted"]
    results["speedup_vs_predicted_long"] = results["whole_speedup_vs_predicted"]
    results["tokens_per_s_dynamic"] = results["first_round_tokens_per_s_dynamic"]
    results["tokens_per_s_padmax"] = results["first_round_tokens_per_s_padmax"]
    results["mfu"] = results["whole_mfu_dynamic"]
    results["mfu_first_round"] = results["first_round_mfu_dynamic"]
    return results
