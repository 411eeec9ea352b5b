"""The benchmark suite runs end to end on tiny sizes and writes valid JSON.

Speed is never asserted here (timings belong to ``sftlab bench`` runs, not tests); what is
asserted is that every part measures both sides, that ratios are consistent with the absolute
figures they are derived from, and that correctness flags (identical outputs) are reported.
"""

from __future__ import annotations

import json
import math

import pytest

from sftlab.bench import PARTS, run_suite

TINY = {
    "preprocess": {"n": 12},
    "loss": {"seq_len": 96, "vocab": 500, "hidden": 32, "reps": 1},
    "generate": {"n_prompts": 2, "max_new_tokens": 3, "batch_size": 2, "real_prompts": 2, "real_max_new_tokens": 3},
    "train": {"steps": 2, "max_length": 256,
              "shape": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "num_key_value_heads": 1}},
}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.integration
def test_quick_suite_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    res = run_suite(quick=True, parts=["machine", "preprocess", "loss", "generate"], json_path=out, sizes=TINY)
    assert res["errors"] == {}
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    # machine: a measured matmul peak, copied to the top level as the schema asks
    assert _positive(data["machine"]["matmul_gflops_fp32"])
    assert data["matmul_gflops"] == data["machine"]["matmul_gflops_fp32"]
    # preprocess: both paths timed, identical features on the same conversations
    pp = data["preprocess"]
    assert pp["identical"] is True
    assert _positive(pp["fast_conv_per_s"]) and _positive(pp["prefix_conv_per_s"])
    assert math.isclose(pp["speedup_vs_prefix"], pp["fast_conv_per_s"] / pp["prefix_conv_per_s"], rel_tol=0.02)
    assert _positive(pp["fast_one_by_one_conv_per_s"]) and _positive(pp["tokenize_only_conv_per_s"])
    # the reference tokenises every prefix: at least one whole tokenisation, more with several messages
    assert pp["prefix_tokenisations_per_conversation"] > 1.0 and pp["mean_messages"] > 2
    try:
        import trl  # noqa: F401
    except ImportError:
        assert pp["trl"].startswith("skipped")
    else:  # TRL's assistant-mask tokenisation ran on the same data and masked something
        assert _positive(pp["trl_conv_per_s"]) and pp["trl_assistant_tokens"] > 0
        assert math.isclose(pp["speedup_vs_trl"], pp["fast_conv_per_s"] / pp["trl_conv_per_s"], rel_tol=0.02)
    # loss: both sides measured, same loss value
    ls = data["loss"]
    assert _positive(ls["naive_peak_mb"]) and _positive(ls["chunked_peak_mb"])
    assert _positive(ls["memory_ratio_naive_over_chunked"]) and _positive(ls["time_ratio_chunked_over_naive"])
    assert ls["max_abs_loss_diff"] < 1e-4
    # generate: both sides measured; the float32 engine is exact
    gen = data["generate"]
    assert _positive(gen["single_tok_per_s"]) and _positive(gen["batched_tok_per_s"])
    assert gen["identical_share"] == 1.0  # float32 batched answers equal one-prompt-at-a-time answers
    assert _positive(gen["forced_tok_per_s"]) and gen["forced_dtype"] in ("float32", "bfloat16")
    # the real workload (GGUF weights, IFEval prompts, useful tokens/s) beside the static fp32 baseline
    if "real" in gen:
        assert gen["real"].startswith("skipped")
    else:
        assert gen["real_n_prompts"] == 2 and gen["real_max_new_tokens"] == 3
        for k in ("real_static_fp32_b16_tok_per_s", "real_continuous_fp32_tok_per_s", "real_default_tok_per_s"):
            assert _positive(gen[k])
        ratio = gen["real_default_tok_per_s"] / gen["real_static_fp32_b16_tok_per_s"]
        assert math.isclose(gen["real_speedup_vs_static_fp32_b16"], ratio, rel_tol=0.02)
        assert 0.0 <= gen["real_identical_share_default_vs_fp32"] <= 1.0
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            assert gen["real_llamacpp"].startswith("skipped")
        else:
            assert _positive(gen["real_llamacpp_tok_per_s"])
    printed = capsys.readouterr().out
    for part in ("machine", "preprocess", "loss", "generate"):
        assert f"== bench {part}" in printed


def test_unknown_part_is_a_user_error(cli):
    proc = cli("bench", "--only", "machine,warp-drive")
    assert proc.returncode == 2
    assert "unknown bench part" in proc.stderr and "warp-drive" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_machine_part_json(cli, tmp_path):
    out = tmp_path / "m.json"
    proc = cli("bench", "--quick", "--only", "machine", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["quick"] is True and _positive(data["matmul_gflops"])
    prov = data["provenance"]  # the code that produced the figures
    assert prov["sftlab_version"] and (prov["commit"] is None or len(prov["commit"].split("-")[0]) == 40)
    assert set(PARTS) >= {"machine", "preprocess", "loss", "generate", "train"}


@pytest.mark.integration
def test_train_part_measures_all_three_paths_on_the_same_tokens(tmp_path):
    out = tmp_path / "bench.json"
    res = run_suite(quick=True, parts=["train"], json_path=out, sizes=TINY)
    assert res["errors"] == {}
    tr = json.loads(out.read_text())["train"]
    for mix in ("first_round", "whole"):
        for path in ("padmax", "dynamic", "packed"):
            assert _positive(tr[f"{mix}_tokens_per_s_{path}"])
            assert 0 < tr[f"{mix}_padding_efficiency_{path}"] <= 1
            assert _positive(tr[f"{mix}_mfu_{path}"])
        # padding to max length computes at least as many positions as padding to the longest
        assert tr[f"{mix}_padding_efficiency_dynamic"] >= tr[f"{mix}_padding_efficiency_padmax"]
        ratio = tr[f"{mix}_tokens_per_s_dynamic"] / tr[f"{mix}_tokens_per_s_padmax"]
        assert math.isclose(tr[f"{mix}_speedup"], ratio, rel_tol=0.01)
        predicted = tr[f"{mix}_padding_efficiency_dynamic"] / tr[f"{mix}_padding_efficiency_padmax"]
        assert math.isclose(tr[f"{mix}_speedup_predicted"], predicted, rel_tol=0.01)
    assert tr["max_length"] == 256 and tr["hidden_size"] == 32
    assert tr["speedup_dynamic_vs_padmax"] == tr["first_round_speedup"]
    assert tr["speedup_dynamic_vs_padmax_long"] == tr["whole_speedup"]
    assert _positive(tr["mfu"])


def test_eval_only_options_reach_the_generate_part(monkeypatch):
    """--eval-prompts/--eval-only size the real workload and skip the random-init half."""
    import argparse

    import sftlab.bench as bench_mod
    import sftlab.bench.generate as gen_bench
    from sftlab.cli import bench as bench_cli

    seen: dict = {}
    monkeypatch.setattr(gen_bench, "_run_synthetic", lambda *a: seen.setdefault("synthetic", a) and {})
    monkeypatch.setattr(gen_bench, "run_real",
                        lambda n, m, benchmark: seen.update(real=(n, m), benchmark=benchmark) or {"real_n_prompts": n})
    p = argparse.ArgumentParser()
    bench_cli.add_arguments(p)
    args = p.parse_args(["--only", "generate", "--eval-prompts", "100", "--eval-only"])
    monkeypatch.setattr(bench_mod, "provenance", lambda: {})
    assert bench_cli.run(args) == 0
    assert seen == {"real": (100, 256), "benchmark": "ifeval"}  # no synthetic part, 100 real prompts, 256 tokens
    seen.clear()
    assert bench_cli.run(p.parse_args(["--only", "generate"])) == 0
    assert seen["real"] == (32, 256) and "synthetic" in seen  # the defaults: both halves
    seen.clear()
    assert bench_cli.run(p.parse_args(["--only", "generate", "--eval-only", "--eval-benchmark", "ifbench"])) == 0
    assert seen == {"real": (32, 256), "benchmark": "ifbench"}
    assert len(gen_bench.load_prompts(3, benchmark="ifbench")) == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--eval-prompts", "0"])
