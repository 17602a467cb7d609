"""What this machine computes fast: bf16 instructions on the CPU, bf16 on the GPU.

The main job's precision follows from it (`fastest_precision`): bf16 mixed precision
was 1.6x faster per training step on a 2-core Xeon with AMX at about the same AP per
epoch (measured for issue 12, quoted in benchmarks/RESULTS.md), but is 12.5x SLOWER on
a CPU without bf16 instructions, where PyTorch emulates it (`bench_levers.py`). So it is chosen per machine, never assumed.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: /proc/cpuinfo flags of CPUs with native bf16 arithmetic (AVX-512 BF16, Intel AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 instructions, from the flags in /proc/cpuinfo.

    False where /proc/cpuinfo cannot be read (macOS, Windows): there bf16 is not assumed.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def fastest_precision(accelerator: str = "auto") -> str:
    """Lightning's precision for training on `accelerator` ("auto", "cpu", "gpu", "cuda").

    "bf16-mixed" on a CUDA GPU that supports bf16 or a CPU with bf16 instructions;
    "32-true" elsewhere. The losses stay in float32 either way (`batch_losses`).
    """
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"
