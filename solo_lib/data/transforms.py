"""Paired image/target transforms: resize to fit, flip, normalise, centred zero padding.

Every transform is a callable `(image, target) -> (image, target)`. Geometry goes
through torchvision's `transforms.v2` functionals on `tv_tensors` (Image, Mask,
BoundingBoxes), so image, masks and boxes move together. Masks are resized
bilinearly and re-thresholded at 0.5 (as the paper's preprocessing does), so they
stay 0/1; an object whose mask vanishes is dropped with its label and box.

Layout: scale = min(H / H0, W / W0) (times a jitter factor in
training), content size floor(H0 * scale) x floor(W0 * scale), placed centred with
left = (W - w) // 2 and top = (H - h) // 2. `target["content_box"]` records where
the content sits and `target["orig_size"]` the source size; `to_original_frame`,
the one way back, undoes the layout for predicted masks and for pictures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from solo_lib.config import SOLOConfig

Target = dict[str, Tensor]
PairTransform = Callable[[Tensor, Target], tuple[Tensor, Target]]


def fit_size(
    orig_size: Sequence[int], image_size: Sequence[int], factor: float = 1.0
) -> tuple[int, int]:
    """(h, w) of a (H0, W0) image resized by factor * min(H / H0, W / W0) for an (H, W) input.

    The result never exceeds (H, W): factors above 1 are clamped, so the content always fits.
    """
    h0, w0 = int(orig_size[0]), int(orig_size[1])
    h, w = int(image_size[0]), int(image_size[1])
    scale = min(h / h0, w / w0) * min(factor, 1.0)
    # the epsilon keeps 300 * (800 / 300) at 800, not 799.999...
    return max(1, min(h, math.floor(h0 * scale + 1e-6))), max(
        1, min(w, math.floor(w0 * scale + 1e-6))
    )


def content_box(
    content_size: Sequence[int], image_size: Sequence[int]
) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of (h, w) content centred in an (H, W) input: left = (W - w) // 2."""
    h, w = int(content_size[0]), int(content_size[1])
    left, top = (int(image_size[1]) - w) // 2, (int(image_size[0]) - h) // 2
    return left, top, left + w, top + h


def to_original_frame(
    maps: Tensor,
    content_box: Sequence[int],
    orig_size: Sequence[int],
    input_size: Sequence[int],
    antialias: bool = False,
) -> Tensor:
    """Undo the layout: float maps (n, h, w) over the whole input frame -> (n, H0, W0).

    The one way back from the network input to the original image, the inverse of
    `ResizeToFit` + `CenterPad`: maps at any resolution (mask predictions at the level-0
    mask size, or the input image itself) are resized (bilinear) to `input_size`
    (H, W), the padding around `content_box` (x1, y1, x2, y2) is cropped away, and the
    content is resized to `orig_size` (H0, W0). Threshold the result for binary masks.
    """
    height, width = int(orig_size[0]), int(orig_size[1])
    if maps.shape[0] == 0:
        return maps.new_zeros((0, height, width))
    x1, y1, x2, y2 = (int(v) for v in content_box)
    full = maps[None].float()
    if tuple(full.shape[-2:]) != tuple(int(v) for v in input_size):
        full = F.resize(full, list(input_size), InterpolationMode.BILINEAR, antialias=False)
    content = full[..., y1:y2, x1:x2]
    return F.resize(content, [height, width], InterpolationMode.BILINEAR, antialias=antialias)[0]


def _wrap(
    image: Tensor, target: Target
) -> tuple[tv_tensors.Image, tv_tensors.Mask, tv_tensors.BoundingBoxes]:
    canvas = tuple(image.shape[-2:])
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=canvas)
    return tv_tensors.Image(image), tv_tensors.Mask(target["masks"]), boxes


def _unwrap(image: Tensor, masks: Tensor, boxes: Tensor, target: Target) -> tuple[Tensor, Target]:
    out = dict(target)
    out["masks"] = masks.as_subclass(Tensor)
    out["boxes"] = boxes.as_subclass(Tensor)
    return image.as_subclass(Tensor), out


class Compose:
    """Apply paired transforms in order."""

    def __init__(self, transforms: Sequence[PairTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class KeepOriginal:
    """Record the annotations as stored, for evaluation: ``target["original"]``.

    ``{"masks": bool (n, H0, W0), "labels": int64 (n,), "iscrowd": int64 (n,)}``, taken
    before any resampling, so that mask AP compares predictions with the data set's
    own masks at their own resolution (CIS 680 masks as in the file, COCO masks as
    ``annToMask`` decodes them), crowd regions included so they can be ignored.
    """

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        target = dict(target)
        n = target["labels"].shape[0]
        target["original"] = {
            "masks": target["masks"].bool(),
            "labels": target["labels"],
            "iscrowd": target.get("iscrowd", torch.zeros(n, dtype=torch.int64)),
        }
        return image, target

    def __repr__(self) -> str:
        return "KeepOriginal()"


class DropCrowd:
    """Remove crowd regions (``iscrowd`` = 1) from the objects that SOLO learns and draws.

    SOLO has no use for a mask of many objects at once; evaluation still sees them
    (`KeepOriginal`) and ignores detections on them, as pycocotools does.
    """

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        target = dict(target)
        iscrowd = target.pop("iscrowd", None)
        if iscrowd is not None and bool(iscrowd.any()):
            keep = iscrowd == 0
            for key in ("labels", "masks", "boxes"):
                target[key] = target[key][keep]
        return image, target

    def __repr__(self) -> str:
        return "DropCrowd()"


class ToFloatImage:
    """uint8 (3, H0, W0) image -> float32 in [0, 1]; records `orig_size` = (H0, W0)."""

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        target = dict(target)
        target["orig_size"] = torch.tensor(image.shape[-2:], dtype=torch.int64)
        return F.to_dtype(image, torch.float32, scale=True), target

    def __repr__(self) -> str:
        return "ToFloatImage()"


class ResizeToFit:
    """Resize so the image fits `image_size` (keeping the aspect ratio), optionally jittered.

    With `jitter=(lo, hi)` the fit scale is multiplied by a factor drawn uniformly from
    [lo, hi] (torch's global RNG, seeded per worker); factors above 1 are clamped to 1.
    Image: bilinear with antialiasing. Masks: bilinear, then >= 0.5. Boxes: scaled.
    Objects whose mask becomes empty are dropped.
    """

    def __init__(self, image_size: Sequence[int], jitter: Sequence[float] | None = None) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.jitter = None if jitter is None else (float(jitter[0]), float(jitter[1]))

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        factor = 1.0
        if self.jitter is not None:
            lo, hi = self.jitter
            factor = lo + (hi - lo) * torch.rand(()).item()
        size = list(fit_size(image.shape[-2:], self.image_size, factor))
        img, masks, boxes = _wrap(image, target)
        img = F.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        boxes = F.resize(boxes, size)
        if masks.shape[0]:
            soft = F.resize(
                masks.as_subclass(Tensor).float(),
                size,
                interpolation=InterpolationMode.BILINEAR,
                antialias=False,
            )
            masks = tv_tensors.Mask((soft >= 0.5).to(torch.uint8))
        else:
            masks = tv_tensors.Mask(torch.zeros((0, *size), dtype=torch.uint8))
        image, target = _unwrap(img, masks, boxes, target)
        return drop_empty(image, target)

    def __repr__(self) -> str:
        return f"ResizeToFit(image_size={self.image_size}, jitter={self.jitter})"


def drop_empty(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Remove objects whose mask has no pixel left (labels, masks and boxes together)."""
    keep = target["masks"].flatten(1).bool().any(dim=1)
    if bool(keep.all()):
        return image, target
    target = dict(target)
    for key in ("labels", "masks", "boxes"):
        target[key] = target[key][keep]
    return image, target


class RandomHorizontalFlip:
    """Mirror image, masks and boxes left-right with probability `p` (torch's global RNG)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        if self.p <= 0 or torch.rand(()).item() >= self.p:
            return image, target
        img, masks, boxes = _wrap(image, target)
        return _unwrap(
            F.horizontal_flip(img), F.horizontal_flip(masks), F.horizontal_flip(boxes), target
        )

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """(image - mean) / std per channel, on a float image in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        return F.normalize(image, self.mean, self.std), target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class CenterPad:
    """Zero-pad the content to `image_size`, centred; records `content_box` (x1, y1, x2, y2).

    Applied after normalisation, so the padding is 0 in normalised units (the mean colour).
    """

    def __init__(self, image_size: Sequence[int]) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        h, w = image.shape[-2:]
        big_h, big_w = self.image_size
        if h > big_h or w > big_w:
            raise ValueError(f"content {h}x{w} is larger than the input size {big_h}x{big_w}")
        x1, y1, x2, y2 = content_box((h, w), self.image_size)
        padding = [x1, y1, big_w - x2, big_h - y2]  # left, top, right, bottom
        img, masks, boxes = _wrap(image, target)
        image, target = _unwrap(
            F.pad(img, padding, fill=0),
            F.pad(masks, padding, fill=0),
            F.pad(boxes, padding),
            target,
        )
        target["content_box"] = torch.tensor([x1, y1, x2, y2], dtype=torch.int64)
        return image, target

    def __repr__(self) -> str:
        return f"CenterPad(image_size={self.image_size})"


def build_transforms(cfg: SOLOConfig, train: bool) -> Compose:
    """The input pipeline: keep the original annotations (evaluation only), drop crowd
    regions, to float, resize to fit (jittered when training), flip (training), normalise
    with cfg.pixel_mean / pixel_std, pad to cfg.image_size.

    The flip comes before the padding, so the content stays centred when W - w is odd.
    """
    steps: list[PairTransform] = [] if train else [KeepOriginal()]
    steps += [
        DropCrowd(),
        ToFloatImage(),
        ResizeToFit(cfg.image_size, jitter=cfg.scale_jitter if train else None),
    ]
    if train and cfg.hflip_prob > 0:
        steps.append(RandomHorizontalFlip(cfg.hflip_prob))
    steps += [Normalize(cfg.pixel_mean, cfg.pixel_std), CenterPad(cfg.image_size)]
    return Compose(steps)
