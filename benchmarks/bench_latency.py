"""Inference latency per image at batch 1: SOLO (paper and cpu presets) vs Mask R-CNN R50-FPN.

Every network is timed on the same input: an image of the built-in data set through
the evaluation transforms (resized to fit, normalised, padded to the preset's size),
already on the device. Median of ``--repeats`` runs after ``--warmup`` untimed runs,
eval mode, ``torch.no_grad``. Three timings where they exist:

* backbone + FPN: the feature pyramid only (the same kind of work in both networks);
* network: SOLO's network as inference runs it (`SOLO.mask_makers`: backbone, FPN,
  category branch, and the mask branch up to the tensors masks are made from; no mask
  is made yet).
  Mask R-CNN has no such split: its RPN and RoI heads each end in their own
  post-processing (proposal NMS, box decoding and NMS) before the next stage runs;
* end to end: the input tensor in, instances at the original image size out. SOLO:
  the network, `postprocess_parts` (points NMS, selection, the candidates' masks,
  maskness, Matrix NMS, masks resized to the original frame). Mask R-CNN: its full eval-mode forward (RPN, RoI
  heads, mask head, masks pasted into the image) then the same crop-and-resize to
  the original frame as SOLO's.

Untrained networks are used (no weights are downloaded), with the default thresholds.
Their outputs differ from trained ones: SOLO's category prior (0.01) keeps almost every
cell below the 0.1 score threshold, while an untrained Mask R-CNN scores every class
near 1 / (C + 1) and keeps its maximum of 100 detections. The table therefore reports
how many candidates reached post-processing: SOLO's cells above the score threshold
after points NMS, Mask R-CNN's detections.

Efficiency: SOLO's network FLOPs (`torch.utils.flop_counter.FlopCounterMode`, one
multiply-add = 2 FLOPs, counted on a float32 forward: under autocast it misses some ops) divided by its median network time, as a fraction of the
dense matmul peak measured in the same run with the same threads (median of 2048 x
2048 matmuls; bf16 with ``--amp``).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import common
import torch
import torchvision
from bench_train import autocast, quick_config, tiny_dataset
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from solo_lib.config import SOLOConfig
from solo_lib.data import CIS680Dataset
from solo_lib.model import SOLO
from solo_lib.postprocess import masks_to_original, points_nms, postprocess_parts

SECTION = "bench_latency"

#: Side of the square matmul that measures the dense peak.
PEAK_MATMUL_SIZE = 2048


def sample_input(cfg: SOLOConfig, root: Path, device: torch.device) -> tuple[Tensor, dict]:
    """Image 0 of the data set in `root` for `cfg`: (1, 3, H, W) on `device`, and its target."""
    image, target = CIS680Dataset(root, cfg, train=False)[0]
    return image[None].to(device), target


def matmul_peak_gflops(
    device: torch.device, dtype: torch.dtype, repeats: int, sync: Callable[[], None] | None
) -> float:
    """Achieved GFLOP/s of a dense square matmul (median time), the machine's practical peak."""
    n = PEAK_MATMUL_SIZE
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = common.time_ms(lambda: a @ b, max(repeats, 5), 2, sync)
    return 2 * n**3 / (common.median(times) / 1000) / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn`, as `FlopCounterMode` counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def time_solo(
    cfg: SOLOConfig, root: Path, device: torch.device, amp: bool, repeats: int, warmup: int
) -> dict:
    """Backbone, network and end-to-end medians (ms) of SOLO for `cfg`, candidates, FLOPs."""
    torch.manual_seed(cfg.seed)
    model = SOLO(cfg).to(device).eval()
    images, target = sample_input(cfg, root, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def network():
        with autocast(device, amp):
            return model.mask_makers(images)

    def backbone():
        with autocast(device, amp):
            return model.backbone(images)

    def end_to_end():  # the network under autocast, post-processing outside it
        return postprocess_parts(network(), [target], cfg)

    with torch.no_grad():
        result = {
            "backbone_ms": common.median(common.time_ms(backbone, repeats, warmup, sync)),
            "network_ms": common.median(common.time_ms(network, repeats, warmup, sync)),
            "end_to_end_ms": common.median(common.time_ms(end_to_end, repeats, warmup, sync)),
            # counted without autocast: the algorithm's FLOPs, whatever the precision
            "flops": count_flops(lambda: model.mask_makers(images)),
        }
        peaks = [points_nms(c) for c in network().category_probabilities()]
        result["candidates"] = sum(int((p.amax(dim=1) > cfg.score_threshold).sum()) for p in peaks)
    return result


def build_maskrcnn_r50(cfg: SOLOConfig, **options: int) -> torch.nn.Module:
    """torchvision's Mask R-CNN R50-FPN, no weights, seeing exactly `cfg`'s input size.

    min/max size = the input's height/width, so its transform does not resize; mean 0
    and std 1, since the input is normalised already. `options` go to `MaskRCNN`.
    """
    height, width = cfg.image_size
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=cfg.num_classes + 1,
        min_size=height,
        max_size=width,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        **options,
    )


def time_maskrcnn(
    cfg: SOLOConfig,
    root: Path,
    device: torch.device,
    amp: bool,
    repeats: int,
    warmup: int,
    quick: bool = False,
) -> dict:
    """Backbone and end-to-end medians (ms) of Mask R-CNN R50-FPN at `cfg`'s input size.

    `quick` keeps 100 proposals and 10 detections instead of 1,000 and 100: its box and
    mask heads cost about 25 and 45 GFLOPs per image at the defaults, whatever the input size.
    """
    torch.manual_seed(cfg.seed)
    options = {"rpn_post_nms_top_n_test": 100, "box_detections_per_img": 10} if quick else {}
    model = build_maskrcnn_r50(cfg, **options).to(device).eval()
    images, target = sample_input(cfg, root, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    geometry = target["geometry"]

    def backbone():
        with autocast(device, amp):
            return model.backbone(images)

    def end_to_end():
        with autocast(device, amp):
            out = model(list(images))[0]
        masks = masks_to_original(out["masks"][:, 0].float(), geometry, cfg)
        return {"masks": masks, "labels": out["labels"], "scores": out["scores"]}

    last: dict[str, int] = {}

    def timed_end_to_end():
        last["candidates"] = len(end_to_end()["scores"])

    with torch.no_grad():
        return {
            "backbone_ms": common.median(common.time_ms(backbone, repeats, warmup, sync)),
            "network_ms": None,
            "end_to_end_ms": common.median(common.time_ms(timed_end_to_end, repeats, warmup, sync)),
            "candidates": last["candidates"],
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "cpu"], choices=["cpu", "paper"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPU mixed precision)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--no-maskrcnn", action="store_true", help="time SOLO only")
    common.add_common_arguments(
        parser, quick_help="smoke test: cpu preset shrunk (96x128), 1 timed run"
    )
    return parser.parse_args(argv)


def fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    presets, repeats, warmup = args.presets, args.repeats, args.warmup
    if args.quick:
        presets, repeats, warmup = ["cpu"], 1, 1
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    peak_dtype = torch.bfloat16 if args.amp else torch.float32
    peak = matmul_peak_gflops(device, peak_dtype, repeats, sync)

    rows, efficiency = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_dataset(tmp, 2)
        for preset in presets:
            cfg = SOLOConfig.preset(preset)
            if args.quick:
                cfg = quick_config(cfg)
            size = f"{cfg.image_size[0]}x{cfg.image_size[1]}"
            contenders: list[tuple[str, Callable[..., dict]]] = [
                (f"SOLO {cfg.name} (ResNet-{cfg.backbone_depth})", time_solo)
            ]
            if not args.no_maskrcnn:
                maskrcnn = functools.partial(time_maskrcnn, quick=args.quick)
                contenders.append(("Mask R-CNN R50-FPN (torchvision)", maskrcnn))
            solo_e2e = None
            for name, timer in contenders:
                r = timer(cfg, root, device, args.amp, repeats, warmup)
                solo_e2e = solo_e2e or r["end_to_end_ms"]
                rows.append(
                    [
                        name,
                        size,
                        fmt(r["backbone_ms"]),
                        fmt(r["network_ms"]),
                        fmt(r["end_to_end_ms"]),
                        f"{r['end_to_end_ms'] / solo_e2e:.2f}",
                        str(r["candidates"]),
                    ]
                )
                if "flops" in r:
                    achieved = r["flops"] / (r["network_ms"] / 1000) / 1e9
                    efficiency.append(
                        [
                            name,
                            size,
                            f"{r['flops'] / 1e9:.1f}",
                            f"{r['network_ms']:.1f}",
                            f"{achieved:.1f}",
                            f"{peak:.1f}",
                            f"{achieved / peak:.2g}",
                        ]
                    )
    precision = "bf16 autocast" if args.amp else "fp32"
    header = [
        "network",
        "input",
        "backbone + FPN ms",
        "network ms",
        "end to end ms",
        "end to end / SOLO",
        "candidates",
    ]
    efficiency_header = [
        "network",
        "input",
        "GFLOPs / image",
        "network ms",
        "achieved GFLOP/s",
        f"{PEAK_MATMUL_SIZE}² matmul GFLOP/s",
        "fraction of peak",
    ]
    notes = (
        f"Batch 1 on {args.device}, {precision}, {args.threads} threads, eval mode, no_grad; "
        f"median of {repeats} runs after {warmup} warm-up runs, input already on the device, "
        "untrained networks, default thresholds"
        + (" (--quick: Mask R-CNN keeps 100 proposals, 10 detections)" if args.quick else "")
        + ". Network ms: SOLO's network up to its category logits and mask makers "
        "(`SOLO.mask_makers`; the candidates' masks are made in post-processing); "
        "Mask R-CNN has no post-processing-free split past its FPN (RPN and RoI heads each "
        "run their own NMS), so its full forward is reported as end to end only. "
        "End to end: instances at the original image size. Candidates: SOLO cells above the "
        "score threshold after points NMS / Mask R-CNN detections (at most 100) that "
        "post-processing had to handle; untrained SOLO passes few, untrained Mask R-CNN many."
        "\n\n### Efficiency of the SOLO network\n\n"
        f"{common.markdown_table(efficiency_header, efficiency)}\n\n"
        "FLOPs from torch.utils.flop_counter.FlopCounterMode (multiply-add = 2); peak: the "
        f"median of {PEAK_MATMUL_SIZE}x{PEAK_MATMUL_SIZE} {peak_dtype} matmuls measured in "
        "this run with the same threads."
    )
    title = f"Inference latency ({device.type})"
    common.report(
        common.section_for(SECTION, device), title, header, rows, notes, args.results, args.quick
    )


if __name__ == "__main__":
    main()
