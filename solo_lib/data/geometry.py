"""Where an image sits in the network input, and the way there and back: `ImageGeometry`.

An (H0, W0) image is resized by s = min(H / H0, W / W0) (times a jitter factor in
training) to (h, w) = (floor(H0 s), floor(W0 s)), flipped left-right or not, and
zero-padded, centred, to the (H, W) input: left = (W - w) // 2, top = (H - h) // 2.
One `ImageGeometry` per image records this, and keeps both directions together, as
torchvision's `GeneralizedRCNNTransform` keeps a resize with its inverse:

- to the input: `image_to_input`, `masks_to_input`, `boxes_to_input`, used by the
  data sets' transforms (`solo_lib.data.transforms.PlaceInInput`);
- back to the original image: `to_original`, used for predicted masks
  (`solo_lib.postprocess`) and for the pictures of the course (`solo_lib.viz`).

Geometry goes through torchvision's ``transforms.v2`` functionals on ``tv_tensors``,
so image, masks and boxes move together. Masks are resized bilinearly and
re-thresholded at 0.5, as the paper's preprocessing does, so they stay 0/1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F


@dataclass
class ImageGeometry:
    """How one image was placed in the network input (see the module docstring).

    Plain ints and a bool, so that it travels through data loaders, Lightning's
    device transfer and pickling unchanged.
    """

    orig_size: tuple[int, int]
    """(H0, W0) of the original image."""
    input_size: tuple[int, int]
    """(H, W) of the padded network input."""
    content_size: tuple[int, int]
    """(h, w) of the resized image inside the input."""
    flipped: bool = False
    """Whether the image was mirrored left-right (training augmentation)."""

    def __post_init__(self) -> None:
        self.orig_size = (int(self.orig_size[0]), int(self.orig_size[1]))
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.content_size = (int(self.content_size[0]), int(self.content_size[1]))
        self.flipped = bool(self.flipped)
        h, w = self.content_size
        if not (0 < h <= self.input_size[0] and 0 < w <= self.input_size[1]):
            raise ValueError(
                f"ImageGeometry: content {h}x{w} does not fit the input "
                f"{self.input_size[0]}x{self.input_size[1]}"
            )

    @classmethod
    def fit(
        cls,
        orig_size: Sequence[int],
        input_size: Sequence[int],
        factor: float = 1.0,
        flipped: bool = False,
    ) -> ImageGeometry:
        """Resize (H0, W0) to fit (H, W), times `factor` (at most 1: the content always fits)."""
        h0, w0 = int(orig_size[0]), int(orig_size[1])
        h, w = int(input_size[0]), int(input_size[1])
        scale = min(h / h0, w / w0) * min(factor, 1.0)
        # the epsilon keeps 300 * (800 / 300) at 800, not 799.999...
        content = (
            max(1, min(h, math.floor(h0 * scale + 1e-6))),
            max(1, min(w, math.floor(w0 * scale + 1e-6))),
        )
        return cls((h0, w0), (h, w), content, flipped)

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) of the content in the input: centred, left = (W - w) // 2."""
        (h, w), (big_h, big_w) = self.content_size, self.input_size
        left, top = (big_w - w) // 2, (big_h - h) // 2
        return left, top, left + w, top + h

    # --- to the input ----------------------------------------------------------------
    def _padding(self) -> list[int]:
        x1, y1, x2, y2 = self.content_box
        return [x1, y1, self.input_size[1] - x2, self.input_size[0] - y2]  # l, t, r, b

    def image_to_input(self, image: Tensor) -> Tensor:
        """Float image (3, H0, W0) -> (3, H, W): bilinear with antialiasing, flip, pad 0.

        Normalise first: the padding is then 0 in normalised units, the mean colour.
        """
        out = F.resize(
            tv_tensors.Image(image),
            list(self.content_size),
            interpolation=InterpolationMode.BILINEAR,
            antialias=True,
        )
        if self.flipped:
            out = F.horizontal_flip(out)
        return F.pad(out, self._padding(), fill=0).as_subclass(Tensor)

    def masks_to_input(self, masks: Tensor) -> Tensor:
        """uint8 0/1 masks (n, H0, W0) -> (n, H, W): bilinear, >= 0.5, flip, pad 0."""
        if masks.shape[0] == 0:
            return torch.zeros((0, *self.input_size), dtype=torch.uint8)
        soft = F.resize(
            masks.float(),
            list(self.content_size),
            interpolation=InterpolationMode.BILINEAR,
            antialias=False,
        )
        out = tv_tensors.Mask((soft >= 0.5).to(torch.uint8))
        if self.flipped:
            out = F.horizontal_flip(out)
        return F.pad(out, self._padding(), fill=0).as_subclass(Tensor)

    def boxes_to_input(self, boxes: Tensor) -> Tensor:
        """xyxy boxes (n, 4) in original pixels -> the same boxes in input pixels."""
        out = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=self.orig_size)
        out = F.resize(out, list(self.content_size))
        if self.flipped:
            out = F.horizontal_flip(out)
        return F.pad(out, self._padding()).as_subclass(Tensor)

    # --- back to the original image ----------------------------------------------------
    def to_original(self, maps: Tensor, antialias: bool = False) -> Tensor:
        """Float maps (n, h, w) over the whole input frame -> (n, H0, W0) in the original image.

        Maps at any resolution (mask probabilities at the level-0 mask size, or the
        input image itself) are resized (bilinear) to the input size, the padding is
        cropped away, the flip undone and the content resized to (H0, W0). Threshold the
        result for binary masks; `antialias` for pictures that shrink.
        """
        if maps.shape[0] == 0:
            return maps.new_zeros((0, *self.orig_size), dtype=torch.float32)
        full = maps[None].float()
        if tuple(full.shape[-2:]) != self.input_size:
            full = F.resize(
                full, list(self.input_size), InterpolationMode.BILINEAR, antialias=False
            )
        x1, y1, x2, y2 = self.content_box
        content = full[..., y1:y2, x1:x2]
        if self.flipped:
            content = content.flip(-1)
        resized = F.resize(
            content, list(self.orig_size), InterpolationMode.BILINEAR, antialias=antialias
        )
        return resized[0]
