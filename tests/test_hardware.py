"""The CPU's kind (from /proc/cpuinfo flags), the cached matmul peak and the start line commands print."""

from __future__ import annotations

import json

import pytest

from sftlab.models import hardware
from sftlab.models.hardware import CpuKind, cpu_flags, cpu_kind, isa_of, results_file, save_peak, start_line

EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
XEON_BF16 = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: avx avx2 avx512f avx512_bf16\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"


@pytest.mark.parametrize("text, isa, bf16, name", [
    (EPYC_AVX2, "avx2", False, "x86-avx2"),
    (XEON_BF16, "avx512", True, "x86-avx512-bf16"),
    (SAPPHIRE, "amx", True, "x86-amx-bf16"),
    (GRAVITON, "neon", False, "arm-neon"),
])
def test_kind_from_flags(tmp_path, text, isa, bf16, name):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    kind = cpu_kind(info)
    assert (kind.isa, kind.native_bf16, kind.name) == (isa, bf16, name)
    assert results_file(kind).name == f"{name}.json"


def test_unreadable_cpuinfo_is_generic(tmp_path):
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert isa_of(frozenset()) == "generic"


def test_start_line_names_kind_and_cached_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path))
    kind = CpuKind(model="AMD EPYC", isa="avx2", native_bf16=False, cores=2)
    line = start_line("train", kind)
    assert line.startswith("sftlab train: CPU x86-avx2 (") and "no native bf16" in line and "not measured" in line
    save_peak(kind, 2, 167.04, 0.93)
    line = start_line("eval", kind)
    assert "peak fp32 167, bf16 0.9 GFLOP/s (2 threads" in line and "\n" not in line
    # another CPU model has no peak of its own
    assert "not measured" in start_line("eval", CpuKind(model="other", isa="avx2", native_bf16=False, cores=2))
    # a damaged cache is ignored by the reader and rewritten by the next measurement
    hardware.peak_cache_path().write_text("{not json")
    assert "not measured" in start_line("eval", kind)
    save_peak(kind, 1, 80.0, 0.8)
    assert json.loads(hardware.peak_cache_path().read_text())[f"{kind.name}|AMD EPYC"]["fp32_gflops"] == 80.0


def test_heavy_commands_start_with_the_cpu_line(capsys, tmp_path, monkeypatch):
    from sftlab.cli import main

    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path))
    assert main(["bench", "--only", "nosuchpart"]) == 2  # a user error after the start line
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"sftlab bench: CPU {cpu_kind().name} (")
    assert len(err.strip().splitlines()) == 1 and "nosuchpart" in err
