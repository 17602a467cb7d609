"""COCO-style mask AP for SOLO's predictions, on top of torchmetrics' `MeanAveragePrecision`.

`MaskEvaluator` collects predictions and ground truth image by image and
reports mask AP (IoU 0.50:0.95), AP50, AP75, per-class AP and per-class
precision-recall curves at IoU 0.5, with COCO's 101-point interpolation.
Predictions are compared with the annotations as the data set stores them: the
``target["original"]`` that the evaluation transforms keep (`KeepOriginal`), at
the original image size and never resampled. Crowd regions (``iscrowd`` = 1) are
ignored as pycocotools does: a detection that matches one is neither a true nor a
false positive, and a crowd region is never a missed object.

Two traps of ``MeanAveragePrecision(iou_type="segm")`` (torchmetrics 1.9,
pycocotools backend) that this module avoids:

* An image without ground truth is left out of the COCO data set, and with it
  every prediction on that image: false positives on empty images are ignored
  and AP comes out too high. Evaluating ``("bbox", "segm")``, with boxes taken
  from the masks, keeps every image (torchmetrics drops images only when no
  boxes are given); only the mask results are reported.
* With no predictions at all, every value is -1 ("not computed"). Here the
  images are kept, so AP is 0 when there is ground truth and nothing is found.

Values that COCO cannot define are NaN here (COCO writes -1): the AP of a class
without any ground truth object, or every AP when there is no ground truth at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from solo_lib.postprocess import mask_iou

#: Recall points of COCO's interpolated precision-recall curve.
NUM_RECALL_POINTS = 101
#: COCOeval's own thresholds, in float64 as pycocotools makes them. torchmetrics' defaults
#: come from a float32 `torch.linspace`: 0.55 becomes 0.55000001, and a mask with an IoU of
#: exactly 0.55 (11 of 20 pixels: common for small objects) stopped matching there.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1).tolist()
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1).tolist()


def _undefined_to_nan(value: float) -> float:
    """COCO's -1 ("no ground truth to measure against") as NaN, so it is never averaged in."""
    return math.nan if value < 0 else value


def _boxes_from_masks(masks: Tensor) -> Tensor:
    """Tight xyxy boxes (n, 4) float32 of bool masks (n, H, W); an empty mask gets (0, 0, 0, 0)."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (n, H), (n, W)
    height, width = masks.shape[1:]
    y1 = rows.float().argmax(dim=1)
    y2 = height - rows.flip(1).float().argmax(dim=1)
    x1 = cols.float().argmax(dim=1)
    x2 = width - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes * rows.any(dim=1, keepdim=True)


def _encode(masks: Tensor) -> list[dict]:
    """(n, H, W) masks as pycocotools RLEs (a list of n dicts): small enough to gather."""
    array = masks.bool().cpu().numpy().astype(np.uint8)
    return mask_utils.encode(np.asfortranarray(array.transpose(1, 2, 0))) if len(array) else []


def _decode(rles: list[dict], size: tuple[int, int]) -> Tensor:
    """The bool (n, H, W) masks of `_encode`'s RLEs."""
    if not rles:
        return torch.zeros((0, *size), dtype=torch.bool)
    return torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()


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
        for index, (pred, gt) in enumerate(zip(predictions, ground_truth, strict=True)):
            _check_item(pred, index, "predictions", ("masks", "labels", "scores"))
            _check_item(gt, index, "ground_truth", ("masks", "labels"))
            if pred["masks"].shape[1:] != gt["masks"].shape[1:]:
                raise ValueError(
                    f"MaskEvaluator.update: image {index}: predicted masks are "
                    f"{tuple(pred['masks'].shape[1:])} but ground truth masks are "
                    f"{tuple(gt['masks'].shape[1:])}; compare both at the original image size "
                    '(a data set target\'s "original")'
                )
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

    @staticmethod
    def _metric(records: list[dict]) -> MeanAveragePrecision:
        """A torchmetrics AP (pycocotools backend) fed with `records`, in their order.

        Its own DDP synchronisation is off: the records are already everybody's.
        """
        metric = MeanAveragePrecision(
            iou_type=("bbox", "segm"),
            extended_summary=True,
            sync_on_compute=False,
            iou_thresholds=COCO_IOU_THRESHOLDS,
            rec_thresholds=COCO_RECALL_THRESHOLDS,
        )
        metric.warn_on_many_detections = False
        for record in records:
            pred_masks = _decode(record["pred_masks"], record["size"])
            gt_masks = _decode(record["gt_masks"], record["size"])
            metric.update(
                [
                    {
                        "masks": pred_masks,
                        "boxes": _boxes_from_masks(pred_masks),
                        "labels": record["pred_labels"],
                        "scores": record["pred_scores"],
                    }
                ],
                [
                    {
                        "masks": gt_masks,
                        "boxes": _boxes_from_masks(gt_masks),
                        "labels": record["gt_labels"],
                        "iscrowd": record["iscrowd"],
                    }
                ],
            )
        return metric

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
        summary_keys = {
            "AP": "segm_map",
            "AP50": "segm_map_50",
            "AP75": "segm_map_75",
            "AP_small": "segm_map_small",
            "AP_medium": "segm_map_medium",
            "AP_large": "segm_map_large",
            "AR100": "segm_mar_100",
        }
        if not records:
            result.update(dict.fromkeys(summary_keys, math.nan))
            return result
        raw = self._metric(records).compute()
        for name, key in summary_keys.items():
            result[name] = _undefined_to_nan(float(raw[key]))
        if "segm_precision" not in raw:  # no class at all, neither predicted nor annotated
            return result

        # precision: (T iou thresholds, R recall points, K classes, A areas, M max dets);
        # area 0 is "all", max dets -1 is 100; classes are raw["classes"], in ascending order.
        precision = raw["segm_precision"][:, :, :, 0, -1]  # (T, R, K)
        scores = raw["segm_scores"][:, :, :, 0, -1]
        max_recall = raw["segm_recall"][0, :, 0, -1]  # (K,) at IoU 0.5
        recall_points = torch.linspace(0, 1, NUM_RECALL_POINTS)
        for k, label in enumerate(raw["classes"].reshape(-1).tolist()):
            if not 1 <= label <= len(self.class_names):
                raise ValueError(
                    f"MaskEvaluator: label {label} is not in 1..{len(self.class_names)} "
                    f"({self.class_names})"
                )
            name = self.class_names[label - 1]
            class_precision = precision[:, :, k]
            if (class_precision < 0).all():  # no ground truth of this class
                continue
            result["per_class_AP"][name] = class_precision.mean().item()
            result["per_class_AP50"][name] = class_precision[0].mean().item()
            reached = (recall_points <= max_recall[k] + 1e-6) & (max_recall[k] > 0)
            result["pr_curves"][name] = {
                "recall": recall_points[reached],
                "precision": class_precision[0][reached].float(),
                "scores": scores[0, :, k][reached].float(),
            }
        return result


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
