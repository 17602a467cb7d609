"""Target building speed: milliseconds per image for `solo_lib.targets`, on one CPU thread.

Each image holds 3 objects (a person-like ellipse, a car-like rectangle and a small
animal-like ellipse, the same shapes scaled to each preset's input size), already at
the input size: the timing covers target building only, not loading or resizing.

Two forms are timed:

* ``build_batch_targets`` (the training path): compact masks of the active cells, for a
  batch of B copies of the image; reported per image (call time / B).
* ``build_targets`` (one image, dense (S^2, h, w) masks per level): at the paper size most
  of its time is filling ~180 MB of zeros, which is why training does not use it.

Run: ``python benchmarks/bench_targets.py`` (``--quick`` only checks that it runs).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import common
import torch

from solo_lib.config import SOLOConfig
from solo_lib.targets import build_batch_targets, build_targets

SECTION = "bench_targets"

#: (label, shape, centre x, centre y, half width, half height), as fractions of the input size.
OBJECTS = (
    (2, "ellipse", 0.30, 0.55, 0.08, 0.30),
    (1, "rectangle", 0.62, 0.62, 0.18, 0.12),
    (3, "ellipse", 0.82, 0.30, 0.05, 0.05),
)


def synthetic_image(cfg: SOLOConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """A target dict (boxes, labels, masks) of the 3 `OBJECTS` at ``cfg.image_size``."""
    height, width = cfg.image_size
    yy = (torch.arange(height, dtype=torch.float32)[:, None] + 0.5) / height
    xx = (torch.arange(width, dtype=torch.float32)[None, :] + 0.5) / width
    masks, boxes, labels = [], [], []
    for label, shape, cx, cy, rx, ry in OBJECTS:
        dx, dy = (xx - cx) / rx, (yy - cy) / ry
        inside = dx**2 + dy**2 <= 1 if shape == "ellipse" else (dx.abs() <= 1) & (dy.abs() <= 1)
        ys, xs = torch.nonzero(inside, as_tuple=True)
        masks.append(inside.to(torch.uint8))
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
        "labels": torch.tensor(labels, dtype=torch.int64, device=device),
        "masks": torch.stack(masks).to(device),
    }


def measure(
    cfg: SOLOConfig, batch_size: int, repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median ms per image of the batched form (batches of `batch_size`) and the dense form."""
    image = synthetic_image(cfg, device)
    batch = [image] * batch_size
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    batched = common.time_ms(lambda: build_batch_targets(batch, cfg), repeats, warmup, sync)
    single = common.time_ms(lambda: build_batch_targets([image], cfg), repeats, warmup, sync)
    dense_repeats = max(1, repeats // 5)  # slow at the paper size, see the module docstring
    dense = common.time_ms(
        lambda: build_targets(image["boxes"], image["labels"], image["masks"], cfg),
        dense_repeats,
        min(warmup, 1),
        sync,
    )
    positives = sum(int(t.active.sum()) for t in build_batch_targets([image], cfg))
    return {
        "batched": common.median(batched) / batch_size,
        "batched_min": min(batched) / batch_size,
        "single": common.median(single),
        "single_min": min(single),
        "dense": common.median(dense),
        "positives": positives,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "cpu"], choices=["paper", "cpu"])
    parser.add_argument(
        "--batch-size", type=int, default=8, help="images per batched call (default: 8)"
    )
    parser.add_argument("--repeats", type=int, default=50, help="timed calls (default: 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    common.add_common_arguments(
        parser, quick_help="smoke test: 3 repeats, 1 warm-up, RESULTS.md untouched", threads=1
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    rows = []
    for preset in args.presets:
        cfg = SOLOConfig.preset(preset)
        result = measure(cfg, args.batch_size, repeats, warmup, device)
        rows.append(
            [
                preset,
                f"{cfg.image_size[0]}x{cfg.image_size[1]}",
                str(len(OBJECTS)),
                str(result["positives"]),
                f"{result['batched']:.2f} ({result['batched_min']:.2f})",
                f"{result['single']:.2f} ({result['single_min']:.2f})",
                f"{result['dense']:.1f}",
            ]
        )
    header = [
        "preset",
        "input",
        "objects",
        "positive cells",
        f"batched, B={args.batch_size}: ms/image (min)",
        "batched, B=1: ms/image (min)",
        "dense per-image form: ms/image",
    ]
    notes = (
        f"Median (and fastest) of {repeats} calls after {warmup} warm-up calls "
        f"({max(1, repeats // 5)} calls for the dense form) on {args.device}, {args.threads} torch "
        "thread(s); inputs already on the device. A median far above the fastest call means "
        "other processes shared the CPU. Run `python benchmarks/bench_targets.py` to refresh."
    )
    common.report(
        common.section_for(SECTION, device),
        "Target building",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
