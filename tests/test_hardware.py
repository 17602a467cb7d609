"""Which precision the machine computes fastest: read from the CPU flags, never assumed."""

from __future__ import annotations

import pytest
import torch

from solo_lib import hardware

EPYC_ZEN3 = "flags : fpu vme sse sse2 avx avx2 fma bmi2 sha_ni"
EPYC_ZEN4 = "flags : fpu sse2 avx2 avx512f avx512bw avx512vl avx512_bf16 avx512_vnni"
XEON_SPR = "flags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
AVX512_ONLY = "flags : fpu avx2 avx512f avx512bw avx512_vnni"  # emulates bf16: slow


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [(EPYC_ZEN3, False), (EPYC_ZEN4, True), (XEON_SPR, True), (AVX512_ONLY, False)],
)
def test_bf16_instructions_are_read_from_the_cpu_flags(cpuinfo, expected):
    assert hardware.cpu_has_bf16(cpuinfo) is expected


def test_amx_tile_alone_or_a_flag_inside_another_word_is_not_bf16():
    assert not hardware.cpu_has_bf16("flags : amx_tile xavx512_bf16x")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_cpu_precision_follows_the_flags(monkeypatch, bf16, expected):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: bf16)
    assert hardware.fastest_precision("cpu") == expected


def test_gpu_precision_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert hardware.fastest_precision("gpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert hardware.fastest_precision("cuda") == "32-true"
