"""COCO-style mask AP for SOLO's predictions: pycocotools' `COCOeval` on run-length encodings.

`MaskEvaluator` collects predictions and ground truth image by image and
reports mask AP (IoU 0.50:0.95), AP50, AP75, per-class AP and per-class
precision-recall curves at IoU 0.5, with COCO's 101-point interpolation.
Predictions are compared with the annotations as the data set stores them: the
``target["original"]`` that the evaluation transforms keep (`KeepOriginal`), at
the original image size and never resampled. Crowd regions (``iscrowd`` = 1) are
ignored as pycocotools does: a detection that matches one is neither a true nor a
false positive, and a crowd region is never a missed object.

Masks are run-length encoded once, in `update`, and `COCOeval(iouType="segm")` reads
those encodings as they are: no mask is decoded again, and no boxes are evaluated.
The COCO data set is built here, not from a file, so that:

* every image seen is in it, those without ground truth too: a prediction on an empty
  image is a false positive. (torchmetrics' ``MeanAveragePrecision(iou_type="segm")``,
  which this module used before, leaves such images out, and AP comes out too high.)
* every class 1..C is a category, so a class that is never predicted still counts.
* with no predictions at all, AP is 0 where there is ground truth (not COCO's -1).

Values that COCO cannot define are NaN here (COCO writes -1): the AP of a class
without any ground truth object, or every AP when there is no ground truth at all.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from solo_lib.postprocess import mask_iou

#: `MaskEvaluator.compute`'s summary values and their index in `COCOeval.stats`.
SUMMARY_STATS = {
    "AP": 0,
    "AP50": 1,
    "AP75": 2,
    "AP_small": 3,
    "AP_medium": 4,
    "AP_large": 5,
    "AR100": 8,
}


def _undefined_to_nan(value: float) -> float:
    """COCO's -1 ("no ground truth to measure against") as NaN, so it is never averaged in."""
    return math.nan if value < 0 else value


def _encode(masks: Tensor) -> list[dict]:
    """(n, H, W) masks as pycocotools RLEs (a list of n dicts): small enough to gather."""
    array = masks.bool().cpu().numpy().astype(np.uint8)
    return mask_utils.encode(np.asfortranarray(array.transpose(1, 2, 0))) if len(array) else []


def _check_item(item: dict, index: int, what: str, keys: tuple[str, ...]) -> None:
    """A clear error when `item` is not a dict of the expected tensors."""
    expected = "{masks: bool (n, H, W), labels: int64 (n,)" + (
        ", scores: float (n,)}" if "scores" in keys else "}"
    )
    if not isinstance(item, dict) or any(key not in item for key in keys):
        found = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"MaskEvaluator.update: {what}[{index}] must be {expected}, got {found}")
    if not all(isinstance(item[key], Tensor) for key in keys):
        types = {key: type(item[key]).__name__ for key in keys}
        raise ValueError(f"MaskEvaluator.update: {what}[{index}] must be {expected}, got {types}")
    masks = item["masks"]
    n = masks.shape[0] if masks.dim() == 3 else -1
    if n < 0 or any(item[key].shape != (n,) for key in keys if key != "masks"):
        shapes = {key: tuple(item[key].shape) for key in keys}
        raise ValueError(f"MaskEvaluator.update: {what}[{index}] must be {expected}, got {shapes}")


class MaskEvaluator:
    """Mask AP over a data set, fed image by image, correct under DDP.

    ``update(predictions, ground_truth, image_ids)`` takes two lists with one dict per
    image: predictions ``{"masks": bool (n, H, W), "labels": (n,), "scores": (n,)}``
    and ground truth ``{"masks": (m, H, W), "labels": (m,)}`` with an optional
    ``"iscrowd"`` (m,) of 0/1, labels in 1..C and both at the same (original) image
    size, as in a data set target's ``"original"``. Images without predictions or
    without ground truth are fine. ``compute()`` returns the metrics (see there);
    ``reset()`` starts over.

    Each image is kept as a record, masks run-length encoded (a few kB per image): by
    id when ``update`` is given ``image_ids``, otherwise as an unnamed image, never
    merged with another. Under DDP, `compute` gathers every process's records and
    keeps one per id, so an image that the distributed sampler gave to two processes
    (it pads the last batches by repeating images) counts once, and every unnamed
    image of every process. Every process then computes the AP that one process would
    over the same images. Without ids nothing tells a repeated image from a new one,
    so it counts each time it is seen: pass ids under DDP.
    """

    def __init__(self, class_names: tuple[str, ...] | list[str]) -> None:
        self.class_names = tuple(class_names)
        self.records: dict[int, dict] = {}
        """Images given with an id, by id."""
        self.unnamed: list[dict] = []
        """Images given without ids, in the order seen."""

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.records = {}
        self.unnamed = []

    def update(
        self,
        predictions: list[dict],
        ground_truth: list[dict],
        image_ids: list[int] | None = None,
    ) -> None:
        """Add a batch of images: one prediction dict and one ground-truth dict per image.

        `image_ids` name the images; an id seen before replaces that image's record.
        Without them every image is a new one, never merged with another, on this
        process or, under DDP, on any other.
        """
        if len(predictions) != len(ground_truth):
            raise ValueError(
                f"MaskEvaluator.update: {len(predictions)} predictions for "
                f"{len(ground_truth)} ground-truth images"
            )
        if image_ids is not None and len(image_ids) != len(predictions):
            raise ValueError(
                f"MaskEvaluator.update: {len(image_ids)} image ids for {len(predictions)} images"
            )
        pairs = list(zip(predictions, ground_truth, strict=True))
        for index, (pred, gt) in enumerate(pairs):  # every image checked before any is kept
            self._check_image(pred, gt, index)
        for index, (pred, gt) in enumerate(pairs):
            n_gt = gt["masks"].shape[0]
            record = {
                "size": tuple(gt["masks"].shape[1:]),
                "pred_masks": _encode(pred["masks"]),
                "pred_labels": pred["labels"].long().cpu(),
                "pred_scores": pred["scores"].float().cpu(),
                "gt_masks": _encode(gt["masks"]),
                "gt_labels": gt["labels"].long().cpu(),
                "iscrowd": gt.get("iscrowd", torch.zeros(n_gt, dtype=torch.int64)).long().cpu(),
            }
            if image_ids is None:
                self.unnamed.append(record)
            else:
                self.records[int(image_ids[index])] = record

    def _check_image(self, pred: dict, gt: dict, index: int) -> None:
        """A clear error when image `index`'s prediction or ground truth is malformed:
        not dicts of tensors, masks of two sizes, or a label outside 1..C."""
        _check_item(pred, index, "predictions", ("masks", "labels", "scores"))
        _check_item(gt, index, "ground_truth", ("masks", "labels"))
        if pred["masks"].shape[1:] != gt["masks"].shape[1:]:
            raise ValueError(
                f"MaskEvaluator.update: image {index}: predicted masks are "
                f"{tuple(pred['masks'].shape[1:])} but ground truth masks are "
                f"{tuple(gt['masks'].shape[1:])}; compare both at the original image size "
                '(a data set target\'s "original")'
            )
        for what, labels in (("predictions", pred["labels"]), ("ground_truth", gt["labels"])):
            outside = labels[(labels < 1) | (labels > len(self.class_names))]
            if len(outside):
                raise ValueError(
                    f"MaskEvaluator.update: {what}[{index}] has label "
                    f"{int(outside[0])}, not in 1..{len(self.class_names)} ({self.class_names})"
                )

    def _all_records(self) -> list[dict]:
        """Every image's record: named ones in id order (one per id), then unnamed ones.

        Under DDP, every process's: the first record gathered for an id is kept (one
        image that the sampler repeated), and every process's unnamed images are kept,
        by rank and then in the order seen.
        """
        local = (self.records, self.unnamed)
        parts: list = [local]  # one (named records, unnamed records) per process
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        named: dict[int, dict] = {}
        unnamed: list[dict] = []
        for records, images in parts:
            for image_id, record in records.items():
                named.setdefault(image_id, record)
            unnamed.extend(images)
        return [named[image_id] for image_id in sorted(named)] + unnamed

    def _coco_eval(self, records: list[dict]) -> COCOeval:
        """pycocotools' segm evaluation of `records` (image ids 1..n in their order), run.

        Ground truth and predictions become two in-memory COCO data sets of RLE
        ``segmentation``s, with every record as an image and every class as a category.
        pycocotools' progress prints are silenced.
        """
        images, truths, detections = [], [], []
        for image_id, record in enumerate(records, start=1):
            height, width = record["size"]
            images.append({"id": image_id, "height": height, "width": width})
            for rle, label, crowd in zip(
                record["gt_masks"],
                record["gt_labels"].tolist(),
                record["iscrowd"].tolist(),
                strict=True,
            ):
                truths.append(_annotation(image_id, rle, label, iscrowd=crowd))
            for rle, label, score in zip(
                record["pred_masks"],
                record["pred_labels"].tolist(),
                record["pred_scores"].tolist(),
                strict=True,
            ):
                detections.append(_annotation(image_id, rle, label, score=score))
        categories = [{"id": label} for label in range(1, len(self.class_names) + 1)]
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = _coco(
                {"images": images, "annotations": truths, "categories": categories}
            )
            predicted = _coco(
                {"images": images, "annotations": detections, "categories": categories}
            )
            evaluation = COCOeval(ground_truth, predicted, iouType="segm")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return evaluation

    def compute(self) -> dict:
        """The mask metrics of everything seen since the last `reset`.

        Returns a dict with floats ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``,
        ``AP_small``, ``AP_medium``, ``AP_large``, ``AR100``; ``per_class_AP``
        and ``per_class_AP50`` ({class name: float}); ``pr_curves`` ({class name:
        {"recall", "precision", "scores"}}, tensors at IoU 0.5 on COCO's
        recall points up to the highest recall reached; "scores" is the score
        threshold that reaches each point); and the counts ``num_images``,
        ``num_predictions``, ``num_ground_truth``. Undefined values are NaN.
        """
        records = self._all_records()
        empty_curve = {key: torch.zeros(0) for key in ("recall", "precision", "scores")}
        result = {
            "per_class_AP": dict.fromkeys(self.class_names, math.nan),
            "per_class_AP50": dict.fromkeys(self.class_names, math.nan),
            "pr_curves": {name: dict(empty_curve) for name in self.class_names},
            "num_images": len(records),
            "num_predictions": sum(len(r["pred_labels"]) for r in records),
            "num_ground_truth": sum(int((r["iscrowd"] == 0).sum()) for r in records),
        }
        if not records:
            result.update(dict.fromkeys(SUMMARY_STATS, math.nan))
            return result
        evaluation = self._coco_eval(records)
        for name, index in SUMMARY_STATS.items():
            result[name] = _undefined_to_nan(float(evaluation.stats[index]))

        # precision, scores: (T iou thresholds, R recall points, K classes, A areas, M max
        # dets); recall: (T, K, A, M). Area 0 is "all", max dets -1 is 100; class k is label k + 1.
        precision = torch.from_numpy(evaluation.eval["precision"][:, :, :, 0, -1])  # (T, R, K)
        scores = torch.from_numpy(evaluation.eval["scores"][:, :, :, 0, -1])
        max_recall = torch.from_numpy(evaluation.eval["recall"][0, :, 0, -1])  # (K,) at IoU 0.5
        recall_points = torch.from_numpy(evaluation.params.recThrs)
        for k, name in enumerate(self.class_names):
            class_precision = precision[:, :, k]
            if (class_precision < 0).all():  # no ground truth of this class
                continue
            result["per_class_AP"][name] = class_precision.mean().item()
            result["per_class_AP50"][name] = class_precision[0].mean().item()
            reached = (recall_points <= max_recall[k] + 1e-6) & (max_recall[k] > 0)
            result["pr_curves"][name] = {
                "recall": recall_points[reached].float(),
                "precision": class_precision[0][reached].float(),
                "scores": scores[0, :, k][reached].float(),
            }
        return result


def _annotation(
    image_id: int, rle: dict, label: int, iscrowd: int = 0, score: float | None = None
) -> dict:
    """One COCO annotation (`score` given: one detection) of an RLE mask."""
    annotation = {
        "image_id": image_id,
        "category_id": label,
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "bbox": mask_utils.toBbox(rle).tolist(),
        "iscrowd": iscrowd,
    }
    if score is not None:
        annotation["score"] = score
    return annotation


def _coco(dataset: dict) -> COCO:
    """An in-memory pycocotools `COCO` of `dataset`, annotations numbered 1..n."""
    for number, annotation in enumerate(dataset["annotations"], start=1):
        annotation["id"] = number
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


@dataclass
class ImageMatch:
    """How the predictions of one image match its ground truth (COCO-style, one IoU threshold)."""

    matched_gt: Tensor
    """(n,) int64: the ground-truth index each prediction matches, -1 for none."""
    iou: Tensor
    """(n,) float32: IoU with the matched ground truth, 0 for none."""
    num_ground_truth: int

    @property
    def num_predictions(self) -> int:
        return self.matched_gt.shape[0]

    @property
    def num_matched(self) -> int:
        return int((self.matched_gt >= 0).sum())

    @property
    def found(self) -> Tensor:
        """(m,) bool: the ground-truth objects that a prediction matches."""
        found = torch.zeros(self.num_ground_truth, dtype=torch.bool)
        found[self.matched_gt[self.matched_gt >= 0]] = True
        return found

    def summary(self) -> str:
        """E.g. "2 of 3 predictions match ground truth (2 objects)"."""
        return (
            f"{self.num_matched} of {self.num_predictions} predictions match ground truth "
            f"({self.num_ground_truth} objects)"
        )


def match_predictions(pred: dict, gt: dict, iou: float = 0.5) -> ImageMatch:
    """Match one image's predictions to its ground truth, as COCO does at one IoU threshold.

    Predictions are taken by decreasing score; each takes the still unmatched
    ground-truth object of the same label with the highest IoU, if that IoU is
    at least `iou`. Each ground-truth object is matched at most once.
    """
    pred_masks, gt_masks = pred["masks"].bool(), gt["masks"].bool().to(pred["masks"].device)
    n, m = pred_masks.shape[0], gt_masks.shape[0]
    matched_gt = torch.full((n,), -1, dtype=torch.int64)
    matched_iou = torch.zeros(n, dtype=torch.float32)
    if n and m:
        same_label = pred["labels"].cpu()[:, None] == gt["labels"].cpu()[None, :]
        ious = torch.where(same_label, mask_iou(pred_masks, gt_masks).cpu(), -1.0).tolist()
        taken = [False] * m
        for i in pred["scores"].cpu().argsort(descending=True, stable=True).tolist():
            candidates = [(ious[i][j], j) for j in range(m) if not taken[j] and ious[i][j] >= iou]
            if candidates:
                best_iou, j = max(candidates)
                taken[j] = True
                matched_gt[i], matched_iou[i] = j, best_iou
    return ImageMatch(matched_gt=matched_gt, iou=matched_iou, num_ground_truth=m)


def above_score(prediction: dict, threshold: float) -> dict:
    """The instances of one image's `prediction` with score >= `threshold`: every field
    (masks, labels, scores) filtered alike. For pictures, which show the confident
    predictions; the AP uses them all."""
    keep = prediction["scores"] >= threshold
    return {key: value[keep] for key, value in prediction.items()}


def image_f1(prediction: dict, ground_truth: dict, iou: float = 0.5) -> float:
    """How well one image is solved: 2 x matches / (predictions + objects), in [0, 1].

    1 when every object is found exactly once and nothing else is predicted; 0 when
    nothing matches. An image with neither predictions nor objects scores 1. Used to
    rank images, so that the pictures a reader sees are chosen by a rule.
    """
    match = match_predictions(prediction, ground_truth, iou=iou)
    total = match.num_predictions + match.num_ground_truth
    return 1.0 if total == 0 else 2 * match.num_matched / total


def typical_indices(values: list[float], k: int) -> list[int]:
    """The indices of the `k` values around the median of `values`: neither best nor worst.

    Values are ranked (ties by index) and the `k` middle ranks are returned in rank
    order; all indices when there are at most `k`.
    """
    ranked = sorted(range(len(values)), key=lambda i: (values[i], i))
    start = max(0, (len(ranked) - k) // 2)
    return ranked[start : start + k]


def recall_by_size(
    sizes: Tensor, found: Tensor, edges: list[float]
) -> tuple[list[float], list[int]]:
    """Share of objects found, per size bin: (recall per bin, objects per bin).

    `sizes` (m,) are object sizes (e.g. the square root of the mask area, in pixels),
    `found` (m,) bool whether each was matched; bin k holds edges[k] <= size <
    edges[k + 1]. An empty bin has recall NaN.
    """
    recalls, counts = [], []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (sizes >= low) & (sizes < high)
        count = int(in_bin.sum())
        counts.append(count)
        recalls.append(float(found[in_bin].float().mean()) if count else math.nan)
    return recalls, counts
