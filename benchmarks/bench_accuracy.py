"""Mask AP against training time: SOLO (cpu preset) vs Mask R-CNN, both from scratch.

Both networks train on the built-in data set's training split, with the same input
(the cpu preset's 256x352, already normalised and padded), the same loader and batch,
the same threads and the same wall-clock budget, and are evaluated on the same
validation images by the same code (`solo_lib.evaluation.MaskEvaluator` at the
original image size). Evaluation pauses the clock: only training time (data loading
included) counts against the budget.

Contenders:

* SOLO: the cpu preset (ResNet-18 FPN), `LitSOLO`'s optimiser (the preset's
  ``optimizer``, AdamW for cpu; lr scaled from ``base_lr``, no weight decay on norms
  and biases, linear warm-up over ``warmup_iters``), gradient clipping at ``grad_clip_norm``.
* Mask R-CNN: torchvision's `MaskRCNN` on a ResNet-18 FPN with the same FPN width
  and trainable BatchNorm (``--maskrcnn-backbone resnet50`` for the usual R50-FPN),
  torchvision's default heads, anchors scaled by input height / 800 as SOLO's scale
  ranges are, no resizing (min/max size = the input size) and identity
  normalisation (the data are normalised already). SGD as in torchvision's
  detection references: lr 0.02 * batch / 16, momentum 0.9, weight decay 1e-4,
  linear warm-up from 0.001 over min(1000, iterations per epoch - 1) steps.

Neither run decays its learning rate: one run per contender is evaluated at every
budget point. Mask R-CNN's masks (probabilities at the input size) go through
SOLO's own `masks_to_original` (the image's geometry back to the original, threshold at 0.5).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import common
import torch
import torchvision
from bench_train import quick_config, solo_optimizer, solo_train_step, tiny_dataset
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from solo_lib.config import REFERENCE_HEIGHT, SOLOConfig
from solo_lib.data import SOLODataModule, collate, ensure_builtin_dataset
from solo_lib.evaluation import MaskEvaluator
from solo_lib.postprocess import masks_to_original
from solo_lib.seeding import seed_everything

SECTION = "bench_accuracy"

Batch = tuple[Tensor, list[dict[str, Tensor]]]

#: torchvision's Mask R-CNN anchor sizes, for 800 px high inputs.
MASKRCNN_ANCHORS = (32, 64, 128, 256, 512)


def build_maskrcnn(cfg: SOLOConfig, backbone: str = "resnet18", **options: int) -> MaskRCNN:
    """A from-scratch Mask R-CNN for `cfg`'s input: no resizing, identity normalisation.

    `backbone` "resnet18" builds a ResNet-18 FPN with ``cfg.fpn_channels`` channels and
    trainable BatchNorm (SOLO's cpu backbone); "resnet50" is torchvision's
    `maskrcnn_resnet50_fpn` without weights. Anchor sizes are torchvision's, scaled by
    input height / 800 like SOLO's scale ranges. `options` go to `MaskRCNN`.
    """
    height, width = cfg.image_size
    factor = height / REFERENCE_HEIGHT
    anchors = AnchorGenerator(
        sizes=tuple((max(4, round(s * factor)),) for s in MASKRCNN_ANCHORS),
        aspect_ratios=((0.5, 1.0, 2.0),) * len(MASKRCNN_ANCHORS),
    )
    common_args = {
        "num_classes": cfg.num_classes + 1,
        "min_size": height,
        "max_size": width,
        "image_mean": [0.0, 0.0, 0.0],
        "image_std": [1.0, 1.0, 1.0],
        "rpn_anchor_generator": anchors,
        **options,
    }
    if backbone == "resnet50":
        return torchvision.models.detection.maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, **common_args
        )
    if backbone != "resnet18":
        raise ValueError(f"backbone must be 'resnet18' or 'resnet50', got {backbone!r}")
    resnet = torchvision.models.resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    in_channels = [64, 128, 256, 512]
    fpn = BackboneWithFPN(
        resnet,
        return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
        in_channels_list=in_channels,
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    return MaskRCNN(fpn, **common_args)


def maskrcnn_targets(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Item-contract targets -> Mask R-CNN targets (boxes, labels, masks), degenerate boxes dropped.

    Both use xyxy boxes and 1..C labels at the input frame; Mask R-CNN refuses boxes
    without width or height, which a one-pixel-wide object could give.
    """
    converted = []
    for t in targets:
        boxes = t["boxes"].float()
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        converted.append(
            {"boxes": boxes[keep], "labels": t["labels"][keep], "masks": t["masks"][keep]}
        )
    return converted


class Contender:
    """A network with its training step and its predictions at the original image size."""

    name: str
    model: nn.Module

    def train_step(self, batch: Batch) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: Batch) -> list[dict[str, Tensor]]:
        raise NotImplementedError


class SOLOContender(Contender):
    """SOLO with `LitSOLO`'s optimiser and warm-up and gradient clipping."""

    def __init__(self, cfg: SOLOConfig) -> None:
        self.cfg = cfg
        self.name = f"SOLO, {cfg.name} preset, ResNet-{cfg.backbone_depth} FPN"
        self.model, self.optimizer, self.warmup = solo_optimizer(cfg)

    def train_step(self, batch: Batch) -> float:
        self.model.train()
        losses = solo_train_step(self.model, self.optimizer, batch, self.cfg)
        self.warmup.step()
        return float(losses["loss"])

    @torch.no_grad()
    def predict(self, batch: Batch) -> list[dict[str, Tensor]]:
        images, targets = batch
        return self.model.predict(images, targets)


class MaskRCNNContender(Contender):
    """torchvision's Mask R-CNN with the detection references' SGD settings."""

    def __init__(
        self, cfg: SOLOConfig, backbone: str, iters_per_epoch: int, **options: int
    ) -> None:
        self.cfg = cfg
        depth = backbone.removeprefix("resnet")
        self.name = f"Mask R-CNN (torchvision), ResNet-{depth} FPN"
        self.model = build_maskrcnn(cfg, backbone, **options)
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = 0.02 * cfg.batch_size / 16
        self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
        warmup_iters = max(1, min(1000, iters_per_epoch - 1))
        self.warmup = torch.optim.lr_scheduler.LinearLR(
            self.optimizer, start_factor=0.001, total_iters=warmup_iters
        )

    def train_step(self, batch: Batch) -> float:
        images, targets = batch
        self.model.train()
        losses = self.model(list(images), maskrcnn_targets(targets))
        loss = sum(losses.values())
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"Mask R-CNN: non-finite loss {value} ({losses})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.warmup.step()
        return value

    @torch.no_grad()
    def predict(self, batch: Batch) -> list[dict[str, Tensor]]:
        images, targets = batch
        self.model.eval()
        outputs = self.model(list(images))
        return [
            {
                # (n, 1, H, W) probabilities at the input size -> bool (n, H0, W0)
                "masks": masks_to_original(out["masks"][:, 0], t["geometry"], self.cfg),
                "labels": out["labels"],
                "scores": out["scores"],
            }
            for out, t in zip(outputs, targets, strict=True)
        ]


def evaluate(contender: Contender, loader: DataLoader, class_names: Sequence[str]) -> dict:
    """Mask AP and AP50 of `contender` on `loader`'s images."""
    evaluator = MaskEvaluator(class_names)
    for batch in loader:
        predictions = contender.predict(batch)
        evaluator.update(predictions, [t["original"] for t in batch[1]])
    result = evaluator.compute()
    return {"AP": result["AP"], "AP50": result["AP50"], "predictions": result["num_predictions"]}


def forever(loader: DataLoader) -> Iterator[Batch]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def train_and_evaluate(
    contender: Contender,
    train_loader: DataLoader,
    val_loader: DataLoader,
    points_s: Sequence[float],
    class_names: Sequence[str],
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train until each budget point (seconds of training), evaluating there; clock paused in evaluation."""
    elapsed, steps, rows = 0.0, 0, []
    batches = forever(train_loader)
    loss = math.nan
    for point in sorted(points_s):
        while elapsed < point:
            start = time.perf_counter()
            loss = contender.train_step(next(batches))
            elapsed += time.perf_counter() - start
            steps += 1
        metrics = evaluate(contender, val_loader, class_names)
        rows.append({"budget_s": point, "train_s": elapsed, "steps": steps, **metrics})
        log(
            f"{contender.name}: {elapsed:.0f} s, {steps} steps, loss {loss:.3f}, "
            f"AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}"
        )
    return rows


def ratio(a: float, b: float) -> str:
    """a / b as text; "inf" when only b is 0, "n/a" when both are."""
    if b > 0:
        return f"{a / b:.2f}"
    return "inf" if a > 0 else "n/a"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[5, 10, 20],
        help="budget points (default: 5 10 20)",
    )
    parser.add_argument(
        "--val-images", type=int, default=100, help="validation images evaluated (default: 100)"
    )
    parser.add_argument(
        "--maskrcnn-backbone",
        default="resnet18",
        choices=["resnet18", "resnet50"],
        help="Mask R-CNN backbone (default: resnet18, SOLO's cpu backbone)",
    )
    parser.add_argument("--workers", type=int, help="loader workers (default: the preset's)")
    parser.add_argument("--data-root", help="CIS 680 folder (default: the built-in data set)")
    common.add_common_arguments(
        parser,
        quick_help="smoke test: shrunk cpu preset, 1 and 2 s budgets, 12 images, 2 evaluated",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = SOLOConfig.cpu()
    points_s = [60.0 * m for m in args.minutes]
    maskrcnn_options: dict[str, int] = {}
    val_images = args.val_images
    if args.quick:
        cfg = quick_config(cfg).replace(batch_size=2)
        points_s, val_images = [1.0, 2.0], 2
        # an untrained Mask R-CNN keeps 100 detections: ~45 GFLOPs of mask head per image
        maskrcnn_options = {"rpn_post_nms_top_n_test": 100, "box_detections_per_img": 10}
    if args.workers is not None:
        cfg = cfg.replace(num_workers=args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        root = (
            tiny_dataset(tmp, 12)
            if args.quick
            else Path(args.data_root or ensure_builtin_dataset())
        )
        data = SOLODataModule(cfg, root=str(root))
        data.setup()
        val = Subset(data.val_dataset, range(min(val_images, len(data.val_dataset))))
        val_loader = DataLoader(val, batch_size=cfg.batch_size, collate_fn=collate)
        train_loader = data.train_dataloader()

        results = {}
        for key in ("solo", "maskrcnn"):
            seed_everything(cfg.seed)
            if key == "solo":
                contender: Contender = SOLOContender(cfg)
            else:
                contender = MaskRCNNContender(
                    cfg, args.maskrcnn_backbone, len(train_loader), **maskrcnn_options
                )
            results[key] = (
                contender.name,
                train_and_evaluate(contender, train_loader, val_loader, points_s, data.class_names),
            )

    (solo_name, solo_rows), (mrcnn_name, mrcnn_rows) = results["solo"], results["maskrcnn"]
    rows, wins = [], []
    for s, m in zip(solo_rows, mrcnn_rows, strict=True):
        wins.append(s["AP"] >= m["AP"])
        rows.append(
            [
                f"{s['budget_s'] / 60:.3g}",
                str(s["steps"]),
                f"{s['AP']:.4f}",
                f"{s['AP50']:.4f}",
                str(m["steps"]),
                f"{m['AP']:.4f}",
                f"{m['AP50']:.4f}",
                ratio(s["AP"], m["AP"]),
                ratio(s["AP50"], m["AP50"]),
            ]
        )
    header = [
        "budget (min)",
        "SOLO steps",
        "SOLO AP",
        "SOLO AP50",
        "Mask R-CNN steps",
        "Mask R-CNN AP",
        "Mask R-CNN AP50",
        "AP ratio",
        "AP50 ratio",
    ]
    quick_note = " (--quick: 100 proposals, 10 detections at test time)" if args.quick else ""
    notes = (
        f"Contenders: {solo_name}; {mrcnn_name}, default heads, anchors scaled to the input"
        f"{quick_note}. Both from scratch with trainable BatchNorm and warm-up, no decay; SOLO "
        f"{cfg.optimizer.upper()} as its preset, Mask R-CNN SGD as torchvision's references; "
        f"{cfg.image_size[0]}x{cfg.image_size[1]} input, batch {cfg.batch_size}, "
        f"{cfg.num_workers} loader workers, {args.threads} threads, "
        f"{len(data.train_dataset)} training images; mask AP on {len(val)} validation images at "
        "the original size (MaskEvaluator); budget = training time only (data loading "
        "included, evaluation excluded). Ratios: SOLO / Mask R-CNN. "
        f"Goal (SOLO AP >= Mask R-CNN AP at every point): {'met' if all(wins) else 'NOT met'}."
    )
    common.report(
        SECTION, "Accuracy against training time", header, rows, notes, args.results, args.quick
    )


if __name__ == "__main__":
    main()
