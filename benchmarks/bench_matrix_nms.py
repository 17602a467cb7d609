"""Matrix NMS against classic greedy mask NMS: 500 masks at the paper's level-0 mask size.

The masks imitate SOLO's candidates: clusters of jittered copies of a few objects
(neighbouring grid cells predicting the same instance), three classes, random
scores. Matrix NMS (`solo_lib.postprocess.matrix_nms`) decays every score from one
IoU matrix; greedy NMS keeps the best mask, removes every later same-class mask
with IoU > 0.5 and repeats, one IoU row per kept mask (a Python loop). The table
gives the median milliseconds over ``--repeats`` runs after ``--warmup`` untimed
ones, on masks already on the device; the SOLOv2 paper reports under 1 ms for 500
masks on a GPU.

    python benchmarks/bench_matrix_nms.py                # CPU, 500 masks at 200x272
    python benchmarks/bench_matrix_nms.py --device cuda
    python benchmarks/bench_matrix_nms.py --quick        # smoke test: 100 masks, 2 repeats
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import common
import torch
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.postprocess import matrix_nms

SECTION = "bench_matrix_nms"


def candidate_masks(
    num_masks: int, size: tuple[int, int], num_objects: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Bool masks (N, H, W), labels (N,) in 1..3 and scores (N,): jittered copies of objects."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    centres = torch.rand(num_objects, 2, generator=generator) * torch.tensor([height, width])
    half_sizes = (0.05 + 0.2 * torch.rand(num_objects, 2, generator=generator)) * torch.tensor(
        [height, width]
    )
    object_labels = torch.randint(1, 4, (num_objects,), generator=generator)
    owner = torch.randint(0, num_objects, (num_masks,), generator=generator)
    jitter = 1 + 0.3 * (torch.rand(num_masks, 4, generator=generator) - 0.5)  # (N, 4)
    y1 = (centres[owner, 0] - half_sizes[owner, 0] * jitter[:, 0]).clamp(0, height - 1)
    y2 = (centres[owner, 0] + half_sizes[owner, 0] * jitter[:, 1]).clamp(1, height)
    x1 = (centres[owner, 1] - half_sizes[owner, 1] * jitter[:, 2]).clamp(0, width - 1)
    x2 = (centres[owner, 1] + half_sizes[owner, 1] * jitter[:, 3]).clamp(1, width)
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    masks = (
        (rows >= y1[:, None, None])
        & (rows < y2[:, None, None])
        & (cols >= x1[:, None, None])
        & (cols < x2[:, None, None])
    )
    scores = torch.rand(num_masks, generator=generator)
    return masks.to(device), object_labels[owner].to(device), scores.to(device)


def greedy_mask_nms(masks: Tensor, labels: Tensor, scores: Tensor, iou_threshold: float = 0.5):
    """Classic NMS: indices of the kept masks, best first (one IoU row per kept mask)."""
    order = scores.argsort(descending=True)
    flat = masks[order].flatten(1).float()  # (N, H*W)
    areas = flat.sum(1)
    sorted_labels = labels[order]
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=masks.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, len(order))
        inter = flat[rest] @ flat[i]
        iou = inter / (areas[rest] + areas[i] - inter).clamp(min=1)
        suppressed[rest] |= (iou > iou_threshold) & (sorted_labels[rest] == sorted_labels[i])
    return order[keep]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--num-masks", type=int, default=500, help="masks (default: 500)")
    parser.add_argument("--num-objects", type=int, default=25, help="objects they show (25)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs (default: 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    common.add_common_arguments(
        parser, quick_help="smoke test: 100 masks, 2 repeats, RESULTS.md left unchanged"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    num_masks, repeats, warmup = (
        (100, 2, 1) if args.quick else (args.num_masks, args.repeats, args.warmup)
    )
    size = SOLOConfig.paper().mask_size(0)  # 200x272: masks of all levels are compared here
    masks, labels, scores = candidate_masks(num_masks, size, args.num_objects, args.seed, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    matrix_ms = common.median(
        common.time_ms(lambda: matrix_nms(masks, labels, scores), repeats, warmup, sync)
    )
    greedy_ms = common.median(
        common.time_ms(lambda: greedy_mask_nms(masks, labels, scores), repeats, warmup, sync)
    )
    kept_greedy = len(greedy_mask_nms(masks, labels, scores))
    kept_matrix = int((matrix_nms(masks, labels, scores) >= 0.05).sum())
    shape = f"{num_masks} x {size[0]}x{size[1]}"
    rows = [
        ["Matrix NMS (one IoU matrix)", shape, args.device, f"{matrix_ms:.3g}", kept_matrix, "1.0"],
        [
            "greedy mask NMS (loop)",
            shape,
            args.device,
            f"{greedy_ms:.3g}",
            kept_greedy,
            f"{greedy_ms / matrix_ms:.1f}",
        ],
    ]
    notes = (
        f"Median of {repeats} runs after {warmup} warm-up runs; {args.num_objects} objects, "
        "3 classes, random scores, seed "
        f"{args.seed}. 'kept' is the number of masks with decayed score >= 0.05 (Matrix NMS) "
        "or not suppressed at IoU > 0.5 (greedy). Matrix NMS multiplies the masks in int8 "
        "on the CPU and in float32 on a GPU. Command: "
        f"`python benchmarks/bench_matrix_nms.py --device {args.device} --threads {args.threads}`."
    )
    common.report(
        common.section_for(SECTION, device),
        "Matrix NMS vs greedy mask NMS",
        ["method", "masks", "device", "median ms", "kept", "greedy / matrix"],
        rows,
        notes,
        results=args.results,
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
