"""Reference solutions of notebook 02's exercises: an object's levels, its centre region
on one level and its mask target."""

import math

import torch


def my_object_levels(boxes: torch.Tensor, scale_ranges: list[tuple[float, float]]) -> torch.Tensor:
    """Boxes (n, 4) xyxy -> (n, L) bool: level l takes box i when lo_l <= sqrt(w h) <= hi_l."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    scale = (w * h).sqrt()[:, None]  # (n, 1)
    lo = torch.tensor([r[0] for r in scale_ranges])  # (L,)
    hi = torch.tensor([r[1] for r in scale_ranges])
    return (scale >= lo) & (scale <= hi)  # both bounds included


def my_center_region(
    mask: torch.Tensor, box: torch.Tensor, num_grid: int, epsilon: float
) -> torch.Tensor:
    """The (S, S) bool cells that one object, mask (H, W) and box (4,) xyxy, owns."""
    height, width = mask.shape
    s = num_grid
    ys, xs = torch.nonzero(mask, as_tuple=True)
    cx = xs.double().mean().item() + 0.5  # pixel (i, j) has its centre at (j + 0.5, i + 0.5)
    cy = ys.double().mean().item() + 0.5
    x1, y1, x2, y2 = box.tolist()
    half_w, half_h = epsilon * (x2 - x1) / 2, epsilon * (y2 - y1) / 2

    def cell(coord: float, extent: int) -> int:  # clamped to the grid
        return min(max(math.floor(coord * s / extent), 0), s - 1)

    row, col = cell(cy, height), cell(cx, width)  # the centre cell
    top = max(cell(cy - half_h, height), row - 1)  # the region, cut to 3 x 3
    bottom = min(cell(cy + half_h, height), row + 1)
    left = max(cell(cx - half_w, width), col - 1)
    right = min(cell(cx + half_w, width), col + 1)
    region = torch.zeros(s, s, dtype=torch.bool)
    region[top : bottom + 1, left : right + 1] = True
    return region


def my_mask_target(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (H, W) 0/1 mask -> (h, w) uint8, 1 where it covers at least half of a block."""
    height, width = mask.shape
    h, w = size
    blocks = mask.float().reshape(h, height // h, w, width // w)  # block (r, c) at [r, :, c, :]
    coverage = blocks.mean(dim=(1, 3))  # (h, w) fraction of each block that the mask covers
    return (coverage >= 0.5).to(torch.uint8)
