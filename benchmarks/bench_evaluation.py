"""Mask AP of a validation epoch: `MaskEvaluator` against the torchmetrics path it replaced.

`MaskEvaluator` keeps each image's masks as pycocotools RLEs and, since this benchmark
was written, runs pycocotools' ``COCOeval(iouType="segm")`` on those RLEs directly.
Before, it decoded every RLE again and fed torchmetrics' ``MeanAveragePrecision`` with
``iou_type=("bbox", "segm")`` (the boxes only to keep images without ground truth), which
encoded the masks once more and evaluated boxes as well as masks. Both run here on the
same predictions: the main job's reference model on all 200 validation images, made once
(float32). Measured, each the median of `--repeats` runs:

* ``update`` over the 200 images (the RLE encoding; the same code for both);
* ``compute``: the evaluation itself, the part that changed;

and checked: AP, AP50, AP75 and the per-class AP of both are equal, the
torchmetrics path serving as an external oracle on real predictions (to 1e-6: it returns
float32).

    python benchmarks/bench_evaluation.py           # about a minute on 2 cores
    python benchmarks/bench_evaluation.py --quick   # smoke test: 16 images, one run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import common
import numpy as np
import torch
import yaml
from torchmetrics.detection import MeanAveragePrecision

from solo_lib import course, reference
from solo_lib.data import SOLODataModule
from solo_lib.evaluation import MaskEvaluator
from solo_lib.module import LitSOLO

SECTION = "bench_evaluation"
#: The summary values compared, and their names in torchmetrics' result (``segm_`` + name).
MAIN_KEYS = {"AP": "map", "AP50": "map_50", "AP75": "map_75"}


def reference_predictions(images: int | None) -> tuple[list[dict], list[dict], list[int], tuple]:
    """The reference model's predictions, the ground truth and the ids of the first
    `images` validation images (None: all), and the class names."""
    run = course.reference_run(course.MAIN_JOB)
    lit = LitSOLO.load_from_checkpoint(
        reference.weights_of(run), map_location="cpu", weights_only=True
    ).eval()
    data = SOLODataModule(lit.cfg, **yaml.safe_load((run / "config.yaml").read_text())["data"])
    data.setup("validate")
    predictions, truths, ids = [], [], []
    for images_batch, targets in data.val_dataloader():
        with torch.no_grad():
            predictions += lit.model.predict(images_batch, targets)
        truths += [t["original"] for t in targets]
        ids += [int(t["image_id"]) for t in targets]
        if images is not None and len(ids) >= images:
            break
    n = len(ids) if images is None else images
    return predictions[:n], truths[:n], ids[:n], lit.cfg.class_names


def boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (n, 4) of bool masks (n, H, W); (0, 0, 0, 0) for an empty one."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    height, width = masks.shape[1:]
    y1, x1 = rows.float().argmax(dim=1), cols.float().argmax(dim=1)
    y2 = height - rows.flip(1).float().argmax(dim=1)
    x2 = width - cols.flip(1).float().argmax(dim=1)
    return torch.stack([x1, y1, x2, y2], dim=1).float() * rows.any(dim=1, keepdim=True)


def torchmetrics_ap(predictions: list[dict], truths: list[dict]) -> dict[str, float]:
    """The evaluation as `MaskEvaluator` ran it before: boxes and masks, COCO's float64
    thresholds, every image kept (each has boxes, possibly none)."""
    metric = MeanAveragePrecision(
        iou_type=("bbox", "segm"),
        extended_summary=True,
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
    )
    metric.warn_on_many_detections = False
    for pred, truth in zip(predictions, truths, strict=True):
        metric.update(
            [{**pred, "boxes": boxes_of(pred["masks"])}],
            [{**truth, "boxes": boxes_of(truth["masks"].bool())}],
        )
    raw = metric.compute()
    result = {name: float(raw[f"segm_{key}"]) for name, key in MAIN_KEYS.items()}
    precision = raw["segm_precision"][:, :, :, 0, -1]  # (T, R, K): all areas, 100 dets
    for k, label in enumerate(raw["classes"].reshape(-1).tolist()):
        result[f"class {label}"] = float(precision[:, :, k].mean())
    return result


def ours_ap(
    predictions: list[dict], truths: list[dict], ids: list[int], class_names: tuple
) -> tuple[dict[str, float], float, float]:
    """`MaskEvaluator`'s AP, and the seconds of its `update` (all images) and `compute`."""
    evaluator = MaskEvaluator(class_names)
    start = time.perf_counter()
    evaluator.update(predictions, truths, image_ids=ids)
    updated = time.perf_counter()
    raw = evaluator.compute()
    computed = time.perf_counter()
    result = {name: float(raw[name]) for name in MAIN_KEYS}
    for label, name in enumerate(class_names, start=1):
        result[f"class {label}"] = float(raw["per_class_AP"][name])
    return result, updated - start, computed - updated


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default: 3)")
    common.add_common_arguments(parser, quick_help="smoke test: 16 images, one run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    predictions, truths, ids, class_names = reference_predictions(16 if args.quick else None)
    ours_runs = [ours_ap(predictions, truths, ids, class_names) for _ in range(repeats)]
    theirs_seconds, theirs = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        theirs = torchmetrics_ap(predictions, truths)
        theirs_seconds.append(time.perf_counter() - start)
    ours = ours_runs[0][0]
    if ours.keys() != theirs.keys() or any(abs(ours[k] - theirs[k]) > 1e-6 for k in ours):
        raise AssertionError(f"the two evaluations differ: {ours} against {theirs}")
    update = common.median([run[1] for run in ours_runs])
    compute = common.median([run[2] for run in ours_runs])
    before = common.median(theirs_seconds)
    rows = [
        ["MaskEvaluator.update (RLE encoding, both)", f"{update:.2f}", "-"],
        ["evaluation: torchmetrics (bbox + segm, masks decoded again)", f"{before:.2f}", "1.0x"],
        [
            "evaluation: COCOeval on the stored RLEs (segm)",
            f"{compute:.2f}",
            f"{before / compute:.1f}x",
        ],
    ]
    notes = (
        f"{len(ids)} validation images of the main job's reference model "
        f"({sum(len(p['labels']) for p in predictions)} predicted instances); seconds, the "
        f"median of {repeats} runs. Both give AP {ours['AP']:.4f}, AP50 {ours['AP50']:.4f}, "
        f"AP75 {ours['AP75']:.4f} and the same per-class AP (to 1e-6: torchmetrics returns float32)."
    )
    common.report(
        SECTION,
        "Mask AP of a validation epoch: COCOeval on RLEs against torchmetrics",
        ["step", "seconds", "faster than torchmetrics"],
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
