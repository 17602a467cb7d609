"""Exercises of notebook 05: points NMS (5.2), Matrix NMS (5.4), masks back to the original (5.6)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.data.geometry import ImageGeometry
from solo_lib.exercises.check import Case, run_check
from solo_lib.postprocess import mask_iou, matrix_nms, points_nms


# --- points NMS (notebook 05) ------------------------------------------------------------
def _points_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(2)
    blob = torch.tensor([[0.1, 0.2, 0.1], [0.2, 0.9, 0.3], [0.1, 0.8, 0.7]])[None, None]
    ties = torch.tensor([[0.5, 0.5], [0.5, 0.2]])[None, None]
    return [
        Case("a hand-made 3x3 blob peaking at (1, 1)", (blob,)),
        Case("a hand-made 2x2 grid with three equal values (ties survive)", (ties,)),
        Case("seeded random heat (2, 3, 8, 8)", (torch.rand(2, 3, 8, 8, generator=generator),)),
    ]


def _points_nms_3x3(heat: Tensor) -> Tensor:
    return heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)


def _points_nms_strict(heat: Tensor) -> Tensor:
    window = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    neighbours = torch.stack(
        [
            F.pad(heat, (1, 0, 0, 0))[:, :, :, :-1],
            F.pad(heat, (0, 0, 1, 0))[:, :, :-1, :],
            F.pad(heat, (1, 0, 1, 0))[:, :, :-1, :-1],
        ]
    ).amax(0)
    return heat * (window == heat) * (heat > neighbours)


def check_points_nms(fn: Callable[[Tensor], Tensor]) -> Callable:
    """Check ``fn(heat)``: SOLO's points NMS on category probabilities (B, C, S, S).

    A value survives when it is the maximum of its 2x2 window, cells (i-1..i, j-1..j)
    (a max pool with kernel 2, stride 1, padding 1, top-left S x S part); the others
    become 0. Returns (B, C, S, S).
    """
    return run_check(
        "points_nms",
        fn,
        points_nms,
        _points_cases(),
        {
            "is the window 3x3 around the cell? SOLO's is 2x2, up and to the left": (
                _points_nms_3x3
            ),
            "do ties lose? A value equal to its window's maximum survives": _points_nms_strict,
        },
    )


# --- Matrix NMS (notebook 05) ------------------------------------------------------------
def _matrix_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(3)
    toy = torch.zeros(3, 48, 48, dtype=torch.bool)
    toy[0, 6:38, 6:26] = True  # the best mask
    toy[1, 11:43, 7:27] = True  # a duplicate of it, same class
    toy[2, 16:44, 18:44] = True  # another class over both
    chain = torch.zeros(3, 8, 8, dtype=torch.bool)
    chain[0, :, 2:6] = True  # score 0.5: IoU 0.6 with mask 2, 0.33 with mask 1
    chain[1, :, 0:4] = True  # score 0.9, the best
    chain[2, :, 1:5] = True  # score 0.6: IoU 0.6 with mask 1, so comp = 0.6
    boxes = torch.randint(0, 20, (12, 2), generator=generator)
    random = torch.zeros(12, 32, 32, dtype=torch.bool)
    for k, (row, col) in enumerate(boxes.tolist()):
        random[k, row : row + 12, col : col + 12] = True
    return [
        Case(
            "notebook 05's toy: a person, its duplicate, an animal (gaussian, sigma 2)",
            (toy, torch.tensor([2, 2, 3]), torch.tensor([0.9, 0.8, 0.7]), "gaussian", 2.0),
        ),
        Case(
            "a chain of three same-class masks, scores not sorted (linear kernel): mask 0's "
            "decay by mask 2 (1 - 0.6) is compensated by mask 2's own (1 - 0.6), so mask 1 "
            "decays it most: 0.5 x (1 - 0.33) = 0.333",
            (chain, torch.tensor([1, 1, 1]), torch.tensor([0.5, 0.9, 0.6]), "linear", 2.0),
        ),
        Case(
            "seeded random squares, two classes, random scores (gaussian, sigma 2)",
            (
                random,
                torch.randint(1, 3, (12,), generator=generator),
                torch.rand(12, generator=generator),
                "gaussian",
                2.0,
            ),
        ),
        Case(
            "no masks at all (an image without candidates): the result is empty, not an error",
            (
                torch.zeros(0, 8, 8, dtype=torch.bool),
                torch.zeros(0, dtype=torch.int64),
                torch.zeros(0),
                "gaussian",
                2.0,
            ),
        ),
    ]


def _matrix_nms_decays(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str,
    sigma: float,
    compensate: bool = True,
    across_classes: bool = False,
    sort: bool = True,
) -> Tensor:
    """Matrix NMS written out, with switches for the usual mistakes (the reference when
    all are off equals `matrix_nms`, tests check it)."""
    if len(scores) == 0:
        return scores.clone()
    order = scores.argsort(descending=True, stable=True) if sort else torch.arange(len(scores))
    iou = mask_iou(masks)[order][:, order]
    if not across_classes:
        iou = iou * (labels[order][:, None] == labels[order][None, :])
    iou = iou.triu(diagonal=1)
    comp = iou.max(dim=0).values[:, None] if compensate else torch.zeros(len(scores), 1)
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou.square() - comp.square()))
    else:
        decay = (1 - iou) / (1 - comp).clamp(min=1e-6)
    out = torch.empty_like(scores)
    out[order] = scores[order] * decay.min(dim=0).values
    return out


def check_matrix_nms(fn: Callable[[Tensor, Tensor, Tensor, str, float], Tensor]) -> Callable:
    """Check ``fn(masks, labels, scores, kernel, sigma)``: Matrix NMS's decayed scores.

    masks (N, H, W) bool, labels (N,), scores (N,) in any order; kernel "gaussian"
    (f(x) = exp(-sigma x^2)) or "linear" (f(x) = 1 - x). Returns (N,), in the input
    order: s_j * min over higher-scored i of the same class of f(iou_ij) / f(comp_i).
    """
    return run_check(
        "matrix_nms",
        fn,
        matrix_nms,
        _matrix_cases(),
        {
            "is the compensation f(comp_i) missing (each decay divided by it)?": (
                lambda *a: _matrix_nms_decays(*a, compensate=False)
            ),
            "do masks of other classes decay each other? Only the same class should": (
                lambda *a: _matrix_nms_decays(*a, across_classes=True)
            ),
            "are the masks taken in their given order instead of sorted by score?": (
                lambda *a: _matrix_nms_decays(*a, sort=False)
            ),
        },
    )


# --- masks back to the original image (notebook 05) ---------------------------------------
def _original_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(5)
    # Hand-made: an 8x12 input holding a 16x20 image as 8x10, one column of padding each side.
    small = ImageGeometry(orig_size=(16, 20), input_size=(8, 12), content_size=(8, 10))
    block = torch.zeros(1, 4, 6)
    block[0, 1:3, 1:3] = 1.0  # a 2x2 block near the left border, at half the input size
    landscape = ImageGeometry(orig_size=(300, 400), input_size=(256, 352), content_size=(256, 341))
    portrait = ImageGeometry(
        orig_size=(400, 300), input_size=(256, 352), content_size=(256, 192), flipped=True
    )
    return [
        Case(
            "a hand-made 2x2 block, mask at half the input size, 1 px padding each side",
            (block, small),
        ),
        Case(
            "the same block in a flipped image",
            (block, ImageGeometry((16, 20), (8, 12), (8, 10), flipped=True)),
        ),
        Case(
            "seeded random masks (3, 64, 88) of a 300x400 image in a 256x352 input",
            (torch.rand(3, 64, 88, generator=generator), landscape),
        ),
        Case(
            "seeded random masks (2, 64, 88) of a flipped 400x300 image (80 px padding left and right)",
            (torch.rand(2, 64, 88, generator=generator), portrait),
        ),
        Case(
            "no masks at all (an image without detections): the result is (0, H0, W0)",
            (torch.zeros(0, 64, 88), landscape),
        ),
    ]


def _to_original_reference(maps: Tensor, geometry: ImageGeometry) -> Tensor:
    return geometry.to_original(maps)


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    if maps.shape[0] == 0:
        return maps.new_zeros((0, *size), dtype=torch.float32)
    return F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def _to_original_uncropped(maps: Tensor, geometry: ImageGeometry) -> Tensor:
    full = _resize(maps, geometry.input_size)
    return _resize(full.flip(-1) if geometry.flipped else full, geometry.orig_size)


def _to_original_no_flip(maps: Tensor, geometry: ImageGeometry) -> Tensor:
    return _to_original_reference(
        maps, ImageGeometry(geometry.orig_size, geometry.input_size, geometry.content_size)
    )


def _to_original_top_left(maps: Tensor, geometry: ImageGeometry) -> Tensor:
    h, w = geometry.content_size
    content = _resize(maps, geometry.input_size)[:, :h, :w]
    return _resize(content.flip(-1) if geometry.flipped else content, geometry.orig_size)


def check_masks_to_original(fn: Callable[[Tensor, ImageGeometry], Tensor]) -> Callable:
    """Check ``fn(maps, geometry)``: soft masks (n, h, w) over the input frame -> (n, H0, W0).

    The way back of `ImageGeometry`: resize (bilinear) to ``geometry.input_size``, crop
    ``geometry.content_box`` (the content is centred in the padding), mirror when
    ``geometry.flipped``, resize (bilinear) to ``geometry.orig_size``. Float in, float out:
    thresholding is the caller's.
    """
    return run_check(
        "masks_to_original",
        fn,
        _to_original_reference,
        _original_cases(),
        {
            "is the padding cropped away? Resizing the whole input frame to the original "
            "stretches the image by its padding": _to_original_uncropped,
            "is the flip undone? A flipped image's masks must be mirrored back": _to_original_no_flip,
            "is the content taken from the top-left corner? The padding is centred: "
            "geometry.content_box": _to_original_top_left,
        },
    )
