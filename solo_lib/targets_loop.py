"""SOLO's target assignment written as plain loops: the readable reference.

`solo_lib.targets` builds the same targets without a Python loop over objects or
cells, which makes it fast and hard to read. This module states each rule once, as a
small function over one object, and `build_targets_loop` puts them together, one
object and one cell at a time. The tests (`tests/test_targets.py`) and notebook 02
check that both give identical targets; the exercises of notebook 02 are checked
against the functions here.

The rules (SOLO, arXiv 1912.04488, §3.1 and §3.3):

1. an object goes to every level whose scale range holds sqrt(w * h) of its box,
   bounds included (`object_levels`);
2. on such a level its cells are the centre region, centre of mass +- eps * w / 2
   and +- eps * h / 2, cut to the 3 x 3 cells around the centre cell
   (`center_region`);
3. each of those cells gets the object's label and its mask, resized to the level's
   mask size by area interpolation and kept where it covers at least half a target
   pixel (`mask_target`); an object whose resized mask is empty is positive nowhere
   on that level;
4. where objects claim the same cell, the smaller mask wins: objects are painted in
   decreasing area order, and on equal areas the later one is painted last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.targets import LevelTarget


def center_of_mass(mask: Tensor) -> tuple[float, float]:
    """(x, y) centre of mass of a non-empty (H, W) 0/1 mask, in continuous pixels.

    Pixel (i, j) covers [j, j + 1) x [i, i + 1), so its centre is (j + 0.5, i + 0.5).
    """
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.sum()) / len(xs) + 0.5, int(ys.sum()) / len(ys) + 0.5


def object_levels(boxes: Tensor, scale_ranges: Sequence[tuple[float, float]]) -> Tensor:
    """(n, L) bool: whether object i goes to level l, for boxes (n, 4) xyxy.

    The scale of an object is sqrt(w * h) of its box; level l takes it when
    lo_l <= sqrt(w * h) <= hi_l. The ranges overlap, so an object can go to two levels.
    """
    out = torch.zeros(len(boxes), len(scale_ranges), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        scale = math.sqrt((x2 - x1) * (y2 - y1))
        for level, (lo, hi) in enumerate(scale_ranges):
            out[i, level] = lo <= scale <= hi
    return out


def center_region(mask: Tensor, box: Tensor, num_grid: int, epsilon: float) -> Tensor:
    """(S, S) bool: the cells of an S x S grid that one object owns.

    mask (H, W) 0/1, non-empty; box (4,) xyxy in the same pixels. The grid covers the
    whole H x W input, so point (x, y) falls in cell (floor(y S / H), floor(x S / W)),
    clamped to [0, S - 1]. The region is centre of mass +- epsilon * w / 2
    horizontally and +- epsilon * h / 2 vertically, cut to the 3 x 3 cells around the
    centre cell.
    """
    height, width = mask.shape
    s = num_grid

    def cell(coord: float, extent: int) -> int:
        return min(max(math.floor(coord * s / extent), 0), s - 1)

    x1, y1, x2, y2 = box.tolist()
    w, h = x2 - x1, y2 - y1
    cx, cy = center_of_mass(mask)
    row, col = cell(cy, height), cell(cx, width)
    top = max(cell(cy - epsilon * h / 2, height), row - 1)
    bottom = min(cell(cy + epsilon * h / 2, height), row + 1)
    left = max(cell(cx - epsilon * w / 2, width), col - 1)
    right = min(cell(cx + epsilon * w / 2, width), col + 1)
    region = torch.zeros(s, s, dtype=torch.bool)
    region[top : bottom + 1, left : right + 1] = True
    return region


def mask_target(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(h, w) uint8: an (H, W) 0/1 mask resized to `size` by area, kept at coverage >= 0.5.

    Each target pixel averages its whole block of input pixels, so a thin part survives
    where it fills half a block, whatever the pixels the block's centre falls on.
    """
    coverage = F.interpolate(mask[None, None].float(), size=size, mode="area")[0, 0]  # (h, w)
    return (coverage >= 0.5).to(torch.uint8)


def build_targets_loop(
    boxes: Tensor, labels: Tensor, masks: Tensor, cfg: SOLOConfig
) -> list[LevelTarget]:
    """The targets of one image, one `LevelTarget` per level, by loops over objects and cells.

    Same inputs and result as `solo_lib.targets.build_targets`: boxes (n, 4) xyxy,
    labels (n,) in 1..C, masks (n, H, W) 0/1 with (H, W) = cfg.image_size.
    """
    levels = object_levels(boxes, cfg.scale_ranges)  # (n, L)
    areas = [int(m.sum()) for m in masks]
    painting_order = sorted(range(len(labels)), key=lambda i: -areas[i])  # stable: later last
    out = []
    for level, s in enumerate(cfg.num_grids):
        category = torch.zeros(s, s, dtype=torch.int64)
        dense = torch.zeros(s * s, *cfg.mask_size(level), dtype=torch.uint8)
        for i in painting_order:
            small = mask_target(masks[i], cfg.mask_size(level))
            if not levels[i, level] or not small.any():
                continue
            region = center_region(masks[i], boxes[i], s, cfg.center_epsilon)
            for row, col in region.nonzero().tolist():
                category[row, col] = int(labels[i])  # a later (smaller) object paints over
                dense[row * s + col] = small
        out.append(LevelTarget(category=category, masks=dense, active=category.flatten() > 0))
    return out
