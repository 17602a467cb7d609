"""Training throughput of SOLO in images per second, optionally with bf16 mixed precision.

One training step is what `LitSOLO` does per batch: forward, targets (built on the
device), focal + dice loss, backward, gradient clipping and an SGD step. The batches
are taken from the built-in data set (training transforms) and moved to the device
before timing, so the numbers are the model's, not the data loader's
(`bench_data.py` measures the loader). Reported: the median step time after a
warm-up and images/s = batch / median step time.

GPU run (paper preset, bf16-mixed as Lightning's ``precision="bf16-mixed"``):
``python benchmarks/bench_train.py --device cuda --amp``. On CUDA an out-of-memory
batch is halved until it fits, and the table says which batch ran.

The helpers here (`solo_train_step`, `solo_optimizer`, `device_batches`) are also
used by `bench_data.py` (peak memory of a step) and `bench_accuracy.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import common
import torch
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule, ensure_builtin_dataset, write_dataset
from solo_lib.model import SOLO
from solo_lib.module import batch_losses, build_optimizer, build_schedule

SECTION = "bench_train"

Batch = tuple[Tensor, list[dict[str, Tensor]]]


def solo_optimizer(cfg: SOLOConfig) -> tuple[SOLO, torch.optim.Optimizer, object]:
    """A fresh SOLO, `LitSOLO`'s optimiser, and its per-step warm-up without any decay.

    The learning rate follows ``cfg.batch_size`` (linear scaling). The decay is left
    out: benchmarks run for a fixed time or a few steps, not a planned number of epochs.
    """
    model = SOLO(cfg)
    optimizer = build_optimizer(model, cfg, cfg.batch_size)
    warmup_only = cfg.replace(lr_schedule="step", lr_milestones=())
    return model, optimizer, build_schedule(optimizer, warmup_only, steps_per_epoch=1, epochs=1)


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `amp` (Lightning's "bf16-mixed"), else nothing."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def solo_train_step(
    model: SOLO,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    cfg: SOLOConfig,
    amp: bool = False,
) -> dict[str, Tensor]:
    """One SOLO training step on `batch` (already on the model's device); returns the losses.

    The loss is computed in float32 from the (possibly bf16) logits, as `LitSOLO` does.
    """
    images, targets = batch
    with autocast(images.device, amp):
        losses, _ = batch_losses(model, images, targets, cfg)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
    optimizer.step()
    return {k: v.detach() for k, v in losses.items()}


def to_device(batch: Batch, device: torch.device) -> Batch:
    """A collated batch with the images and every target tensor on `device`."""
    images, targets = batch
    moved = [
        {k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
    ]
    return images.to(device), moved


def device_batches(
    cfg: SOLOConfig, root: str | Path, count: int, device: torch.device
) -> list[Batch]:
    """`count` training batches (training transforms, seeded) from the data set in `root`, on `device`."""
    data = SOLODataModule(cfg.replace(num_workers=0), root=str(root))
    loader = data.train_dataloader()
    return [to_device(b, device) for b in itertools.islice(itertools.cycle(loader), count)]


def tiny_dataset(folder: str | Path, num_images: int = 8) -> Path:
    """A small built-in-style data set in `folder` (for quick runs that must not wait for 1,000 images)."""
    return write_dataset(Path(folder) / "data", num_images=num_images, seed=0)


def measure(
    cfg: SOLOConfig, root: Path, device: torch.device, amp: bool, steps: int, warmup: int
) -> dict:
    """Median step time of `steps` timed steps after `warmup` steps, at ``cfg.batch_size``."""
    torch.manual_seed(cfg.seed)
    model, optimizer, _ = solo_optimizer(cfg)
    model.to(device).train()
    batches = itertools.cycle(device_batches(cfg, root, min(steps + warmup, 4), device))
    last: dict[str, Tensor] = {}

    def step() -> None:
        last.update(solo_train_step(model, optimizer, next(batches), cfg, amp))

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    times = [t / 1000 for t in common.time_ms(step, steps, warmup, sync)]
    if not torch.isfinite(last["loss"]):
        raise FloatingPointError(f"{cfg.name}: non-finite training loss {last['loss'].item()}")
    median = common.median(times)
    return {"step_s": median, "images_per_s": cfg.batch_size / median, "loss": float(last["loss"])}


def measure_fitting(
    cfg: SOLOConfig, root: Path, device: torch.device, amp: bool, steps: int, warmup: int
) -> tuple[SOLOConfig, dict]:
    """`measure`, halving the batch on a CUDA out-of-memory error until it fits."""
    while True:
        try:
            return cfg, measure(cfg, root, device, amp, steps, warmup)
        except torch.cuda.OutOfMemoryError:
            if cfg.batch_size == 1:
                raise
        # outside the except block: the failed attempt's tensors are garbage by now
        torch.cuda.empty_cache()
        cfg = cfg.replace(batch_size=cfg.batch_size // 2)
        print(f"{cfg.name}: out of memory, retrying at batch {cfg.batch_size}")


def quick_config(cfg: SOLOConfig) -> SOLOConfig:
    """`cfg` shrunk for a smoke test: 96x128 input, grids / 4, two stacked convs, batch 1.

    The backbone depth stays. The category branch runs at S x S whatever the input
    size, so the paper's grids (3,872 cells) would keep even a tiny input slow.
    """
    return cfg.replace(
        name=f"{cfg.name}, shrunk",
        image_size=(96, 128),
        num_grids=tuple(max(2, s // 4) for s in cfg.num_grids),
        num_stacked_convs=2,
        batch_size=1,
        num_workers=0,
        warmup_iters=2,
    )


def default_batch(preset: str, device: torch.device) -> int:
    """Default batch of a step: the preset's own `batch_size` (cpu 4, gpu 16), but for the
    paper preset 8 on a GPU (its 16 per device may not fit) and 2 on a CPU (several GB per
    image)."""
    if preset == "paper":
        return 8 if device.type == "cuda" else 2
    return SOLOConfig.preset(preset).batch_size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets", nargs="+", default=["cpu", "paper"], choices=["cpu", "gpu", "paper"]
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (bf16-mixed)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="images per step (default: the preset's; paper: 8 on a GPU, 2 on a CPU)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--data-root", help="CIS 680 folder (default: the built-in data set)")
    common.add_common_arguments(
        parser, quick_help="smoke test: paper preset shrunk (see quick_config), 1 timed step"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    presets, steps, warmup = args.presets, args.steps, args.warmup
    if args.quick:
        presets, steps, warmup = ["paper"], 1, 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            root = tiny_dataset(tmp)
        elif args.data_root:
            root = Path(args.data_root)
        else:
            root = ensure_builtin_dataset()
        for preset in presets:
            cfg = SOLOConfig.preset(preset)
            batch = args.batch_size or default_batch(preset, device)
            cfg = cfg.replace(batch_size=batch)
            if args.quick:
                cfg = quick_config(cfg)
            cfg, result = measure_fitting(cfg, root, device, args.amp, steps, warmup)
            rows.append(
                [
                    cfg.name,
                    f"{cfg.image_size[0]}x{cfg.image_size[1]}",
                    f"ResNet-{cfg.backbone_depth}",
                    str(cfg.batch_size),
                    "bf16-mixed" if args.amp else "fp32",
                    f"{1000 * result['step_s']:.0f}",
                    f"{result['images_per_s']:.2f}",
                ]
            )
    header = ["preset", "input", "backbone", "batch", "precision", "step ms (median)", "images/s"]
    notes = (
        f"Training throughput on {args.device}, {args.threads} threads: forward, targets, loss, "
        f"backward, clipping and SGD step; median of {steps} steps after {warmup} warm-up steps, "
        "batches already on the device."
    )
    title = f"Training throughput ({device.type})"
    common.report(
        common.section_for(SECTION, device), title, header, rows, notes, args.results, args.quick
    )


if __name__ == "__main__":
    main()
