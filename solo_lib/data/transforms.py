"""Paired image/target transforms: keep the annotations, normalise, place in the input.

Every transform is a callable `(image, target) -> (image, target)`. The geometry, a
resize to fit (jittered in training), a random flip (training) and centred zero
padding, is one `ImageGeometry` per image (`solo_lib.data.geometry`), drawn and applied
by `PlaceInInput` and recorded as ``target["geometry"]``: the way back to the original
image for predicted masks and pictures. An object whose mask vanishes when resized is
dropped with its label and box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from solo_lib.config import SOLOConfig
from solo_lib.data.geometry import ImageGeometry

Target = dict  # labels, masks, boxes (tensors), image_id, geometry, original, ...
PairTransform = Callable[[Tensor, Target], tuple[Tensor, Target]]


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
    """uint8 (3, H0, W0) image -> float32 in [0, 1]."""

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        return F.to_dtype(image, torch.float32, scale=True), target

    def __repr__(self) -> str:
        return "ToFloatImage()"


class PlaceInInput:
    """Resize to fit `image_size` (jittered), flip (randomly), pad centred: one `ImageGeometry`.

    With `jitter=(lo, hi)` the fit scale is multiplied by a factor drawn uniformly from
    [lo, hi], and the image is flipped with probability `flip_prob` (torch's global
    RNG, seeded per worker). Image, masks and boxes go through the same geometry, which
    is recorded as ``target["geometry"]``; objects whose mask vanishes are dropped.
    """

    def __init__(
        self,
        image_size: Sequence[int],
        jitter: Sequence[float] | None = None,
        flip_prob: float = 0.0,
    ) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.jitter = None if jitter is None else (float(jitter[0]), float(jitter[1]))
        self.flip_prob = float(flip_prob)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        factor = 1.0
        if self.jitter is not None:
            lo, hi = self.jitter
            factor = lo + (hi - lo) * torch.rand(()).item()
        flipped = self.flip_prob > 0 and torch.rand(()).item() < self.flip_prob
        geometry = ImageGeometry.fit(image.shape[-2:], self.image_size, factor, flipped)
        target = dict(target)
        target["masks"] = geometry.masks_to_input(target["masks"])
        target["boxes"] = geometry.boxes_to_input(target["boxes"])
        target["geometry"] = geometry
        return drop_empty(geometry.image_to_input(image), target)

    def __repr__(self) -> str:
        return (
            f"PlaceInInput(image_size={self.image_size}, jitter={self.jitter}, "
            f"flip_prob={self.flip_prob})"
        )


def drop_empty(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Remove objects whose mask has no pixel left (labels, masks and boxes together)."""
    keep = target["masks"].flatten(1).bool().any(dim=1)
    if bool(keep.all()):
        return image, target
    target = dict(target)
    for key in ("labels", "masks", "boxes"):
        target[key] = target[key][keep]
    return image, target


class Normalize:
    """(image - mean) / std per channel, on a float image in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        return F.normalize(image, self.mean, self.std), target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def build_transforms(cfg: SOLOConfig, train: bool) -> Compose:
    """The input pipeline: keep the original annotations (evaluation only), drop crowd
    regions, to float, normalise with cfg.pixel_mean / pixel_std, and place in the
    cfg.image_size input (resize to fit, jittered and flipped when training, pad).

    Normalising before the padding makes the padding 0, the mean colour.
    """
    steps: list[PairTransform] = [] if train else [KeepOriginal()]
    steps += [
        DropCrowd(),
        ToFloatImage(),
        Normalize(cfg.pixel_mean, cfg.pixel_std),
        PlaceInInput(
            cfg.image_size,
            jitter=cfg.scale_jitter if train else None,
            flip_prob=cfg.hflip_prob if train else 0.0,
        ),
    ]
    return Compose(steps)
