"""Step time of the `cpu` preset under the throughput levers of a 20-minute CPU run.

Each lever changes one thing against the preset and times the same training step
as `bench_train.py` (forward, targets, loss, backward, clipping, optimiser step) on
the same batches:

- ``fp32``: the preset as it is;
- ``channels_last``: model and images in channels-last memory format;
- ``bf16``: bf16 autocast (Lightning's ``bf16-mixed``); fast only where the CPU has
  bf16 instructions (avx512_bf16, AMX), emulated and slow elsewhere;
- ``resnet18``: the ResNet-18 trunk instead of ResNet-10;
- ``strides4``: strides (4, 4, 8, 16, 16), masks at twice the resolution.

Reported: median step time, its ratio to ``fp32`` (measured in the same run), and
whether this CPU has bf16 instructions. Slow levers (bf16 without bf16 instructions)
get fewer timed steps: ``--slow-steps``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections.abc import Sequence

import common
import torch
from bench_train import device_batches, quick_config, solo_optimizer, solo_train_step, tiny_dataset

from solo_lib.config import SOLOConfig
from solo_lib.data import ensure_builtin_dataset
from solo_lib.hardware import cpu_has_bf16

SECTION = "bench_levers"
LEVERS = ("fp32", "channels_last", "bf16", "resnet18", "strides4")


def lever_config(cfg: SOLOConfig, lever: str) -> SOLOConfig:
    """The preset with `lever`'s change to the model (precision and layout are not config)."""
    if lever == "channels_last":
        return cfg.replace(channels_last=True)
    if lever == "resnet18":
        return cfg.replace(backbone_depth=18)
    if lever == "strides4":
        return cfg.replace(strides=(4, 4, 8, 16, 16))
    return cfg


def measure(cfg: SOLOConfig, lever: str, batches: list, steps: int, warmup: int) -> float:
    """Median seconds of one training step of `cfg` under `lever`."""
    torch.manual_seed(cfg.seed)
    model, optimizer, _ = solo_optimizer(cfg)
    model.train()
    cycle = itertools.cycle(batches)

    def step() -> None:
        solo_train_step(model, optimizer, next(cycle), cfg, amp=lever == "bf16")

    return common.median([t / 1000 for t in common.time_ms(step, steps, warmup)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument(
        "--slow-steps", type=int, default=2, help="timed steps of bf16 without bf16 instructions"
    )
    common.add_common_arguments(parser, quick_help="smoke test: shrunk preset, 1 timed step")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, warmup, slow_steps = args.steps, args.warmup, args.slow_steps
    base = SOLOConfig.cpu().replace(channels_last=False)  # each lever changes one thing
    if args.quick:
        base, steps, warmup, slow_steps = quick_config(base), 1, 1, 1
    bf16 = cpu_has_bf16()
    rows, baseline = [], None
    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_dataset(tmp) if args.quick else ensure_builtin_dataset()
        for lever in args.levers:
            cfg = lever_config(base, lever)
            batches = device_batches(cfg, root, 3, torch.device("cpu"))
            slow = lever == "bf16" and not bf16
            seconds = measure(
                cfg, lever, batches, slow_steps if slow else steps, 1 if slow else warmup
            )
            baseline = seconds if lever == "fp32" else baseline
            ratio = f"{seconds / baseline:.2f}" if baseline else "-"
            rows.append(
                [lever, f"ResNet-{cfg.backbone_depth}", str(cfg.strides), f"{seconds:.2f}", ratio]
            )
    header = ["lever", "trunk", "strides", "step s (median)", "/ fp32"]
    notes = (
        f"cpu preset ({base.image_size[0]}x{base.image_size[1]}, batch {base.batch_size}), "
        f"{args.threads} threads; median of {steps} steps after {warmup} warm-up steps "
        f"({slow_steps} after 1 for bf16 without bf16 instructions); batches already in memory. "
        f"bf16 instructions (avx512_bf16 or AMX) on this CPU: {'yes' if bf16 else 'no'}. "
        "Command: `python benchmarks/bench_levers.py`."
    )
    common.report(
        SECTION,
        "Throughput levers of the cpu preset",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
