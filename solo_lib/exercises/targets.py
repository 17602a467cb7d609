"""Exercises of notebook 02: the levels of an object (2.2), its centre region on one
level (2.3) and its mask target (2.5).

The references are the per-object functions of `solo_lib.targets_loop`, the readable
loop version of target assignment, which the tests and notebook 02 check to give the
same targets as the vectorised `solo_lib.targets`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import PAPER_SCALE_RANGES, SOLOConfig
from solo_lib.exercises.check import Case, run_check
from solo_lib.targets_loop import center_of_mass, center_region, mask_target, object_levels

#: The cpu preset's input (H, W): the exercises' masks have this size.
_IMAGE_SIZE = SOLOConfig.cpu().image_size


# --- the levels of an object (notebook 02, 2.2) ------------------------------------------
def _square(side: float) -> list[float]:
    return [10.0, 10.0, 10.0 + side, 10.0 + side]


def _levels_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(5)
    hand = torch.tensor([_square(30), _square(48), _square(96), [0.0, 0.0, 25.0, 400.0]])
    sizes = torch.exp(math.log(2) + torch.rand(64, generator=generator) * math.log(400))
    aspect = torch.exp((torch.rand(64, generator=generator) - 0.5) * 2)  # 0.37 to 2.7
    corner = torch.rand(64, 2, generator=generator) * 100
    wh = torch.stack([sizes * aspect.sqrt(), sizes / aspect.sqrt()], 1)
    return [
        Case(
            "hand-made boxes of sqrt(w h) = 30, 48, 96 and 100 (a 25 x 400 box) on the "
            "paper's ranges [1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]: 48 and "
            "96 lie on bounds, which are included (expected levels {0}, {0, 1}, {0, 1, 2}, "
            "{1, 2})",
            (hand, PAPER_SCALE_RANGES),
        ),
        Case(
            "64 seeded random boxes, sqrt(w h) from 2 to 800, aspect 0.4 to 2.7, on the cpu "
            "preset's ranges",
            (torch.cat([corner, corner + wh], 1), SOLOConfig.cpu().scale_ranges),
        ),
    ]


def _levels_written_out(
    boxes: Tensor,
    scale_ranges: Sequence[tuple[float, float]],
    scale: str = "sqrt",
    bounds: str = "closed",
    first_only: bool = False,
) -> Tensor:
    """`object_levels` with switches for the usual mistakes (equal to it with none on)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (n,)
    size = {"sqrt": (w * h).sqrt(), "area": w * h, "longer": torch.maximum(w, h)}[scale][:, None]
    lo = torch.tensor([r[0] for r in scale_ranges])  # (L,)
    hi = torch.tensor([r[1] for r in scale_ranges])
    inside = {
        "closed": (size >= lo) & (size <= hi),
        "upper open": (size >= lo) & (size < hi),
        "lower open": (size > lo) & (size <= hi),
    }[bounds]  # (n, L)
    if first_only:
        first = inside.int().argmax(1, keepdim=True)
        inside = inside & (torch.arange(len(scale_ranges)) == first)
    return inside


def check_object_levels(fn: Callable[[Tensor, Sequence[tuple[float, float]]], Tensor]) -> Callable:
    """Check ``fn(boxes, scale_ranges)``: which levels each object goes to.

    boxes (n, 4) float xyxy; scale_ranges L pairs (lo, hi). Returns (n, L) bool:
    level l takes object i when lo_l <= sqrt(w_i h_i) <= hi_l.
    """
    return run_check(
        "object_levels",
        fn,
        object_levels,
        _levels_cases(),
        {
            "is the range half-open, lo <= s < hi? Both bounds are included": (
                lambda b, r: _levels_written_out(b, r, bounds="upper open")
            ),
            "is the range half-open, lo < s <= hi? Both bounds are included": (
                lambda b, r: _levels_written_out(b, r, bounds="lower open")
            ),
            "is the object sent to its first level only? The ranges overlap, and an object "
            "goes to every level whose range holds it": (
                lambda b, r: _levels_written_out(b, r, first_only=True)
            ),
            "is the area w h compared, not its square root sqrt(w h)?": (
                lambda b, r: _levels_written_out(b, r, scale="area")
            ),
            "is the longer side max(w, h) compared, not sqrt(w h)?": (
                lambda b, r: _levels_written_out(b, r, scale="longer")
            ),
        },
        form="one row per box and one column per level",
    )


# --- the centre region (notebook 02, 2.3) ------------------------------------------------
def _describe(what: str, mask: Tensor, box: Tensor, s: int, epsilon: float) -> str:
    """The case, its centre of mass, box centre and expected cells, for the message."""
    cx, cy = center_of_mass(mask)
    rows, cols = center_region(mask, box, s, epsilon).nonzero().unbind(1)
    return (
        f"{what} on an S = {s} grid, epsilon {epsilon}: centre of mass ({cx:.1f}, {cy:.1f}), "
        f"box centre ({(box[0] + box[2]) / 2:.1f}, {(box[1] + box[3]) / 2:.1f}); expected "
        f"cells rows {int(rows.min())}..{int(rows.max())}, cols {int(cols.min())}..{int(cols.max())}"
    )


def _tight_box(mask: Tensor) -> Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _region_case(what: str, mask: Tensor, s: int, epsilon: float) -> Case:
    box = _tight_box(mask)
    return Case(_describe(what, mask, box, s, epsilon), (mask, box, s, epsilon))


def _region_cases() -> list[Case]:
    height, width = _IMAGE_SIZE
    generator = torch.Generator().manual_seed(6)
    yy = torch.arange(height)[:, None] + 0.5  # pixel centres
    xx = torch.arange(width)[None, :] + 0.5

    ell = torch.zeros(height, width, dtype=torch.uint8)
    ell[40:140, 100:120] = 1  # an upright bar ...
    ell[120:140, 100:200] = 1  # ... and a foot to the right: the mass sits low and left
    big = torch.zeros(height, width, dtype=torch.uint8)
    big[30:230, 40:320] = 1
    corner = ((xx + yy) < 40).to(torch.uint8)  # a triangle in the top-left corner
    cases = [
        _region_case("a hand-made L shape, 100 x 100", ell, 12, 0.2),
        _region_case("a hand-made 280 x 200 rectangle (the 3 x 3 cut matters)", big, 16, 1.0),
        _region_case("a hand-made triangle in the top-left corner", corner, 8, 1.0),
    ]
    for k in range(5):  # an ellipse and a bar that overlap: the mass is off the box centre
        u = torch.rand(8, generator=generator).tolist()
        cx, cy, rx, ry = 30 + 290 * u[0], 30 + 200 * u[1], 8 + 60 * u[2], 8 + 60 * u[3]
        mask = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8)
        bar_x, bar_y = int(cx + rx * (u[4] - 0.5)), int(cy)
        mask[bar_y : bar_y + 6 + int(30 * u[5]), bar_x : bar_x + 40 + int(60 * u[6])] = 1
        s, epsilon = (16, 12)[k % 2], (0.2, 0.5)[int(2 * u[7])]
        cases.append(
            _region_case(f"seeded random object {k} (an ellipse and a bar)", mask, s, epsilon)
        )
    return cases


def _region_written_out(
    mask: Tensor,
    box: Tensor,
    num_grid: int,
    epsilon: float,
    centre: str = "mass",
    cut: bool = True,
    half: bool = True,
    clamp: bool = True,
) -> Tensor:
    """`center_region` with switches for the usual mistakes (equal to it with none on)."""
    height, width = mask.shape
    s = num_grid
    x1, y1, x2, y2 = box.tolist()
    w, h = x2 - x1, y2 - y1
    cx, cy = center_of_mass(mask) if centre == "mass" else ((x1 + x2) / 2, (y1 + y2) / 2)
    reach = epsilon / 2 if half else epsilon

    def cell(coord: float, extent: int) -> int:
        index = math.floor(coord * s / extent)
        return min(max(index, 0), s - 1) if clamp else index

    row, col = cell(cy, height), cell(cx, width)
    top, bottom = cell(cy - reach * h, height), cell(cy + reach * h, height)
    left, right = cell(cx - reach * w, width), cell(cx + reach * w, width)
    if cut:
        top, bottom = max(top, row - 1), min(bottom, row + 1)
        left, right = max(left, col - 1), min(right, col + 1)
    region = torch.zeros(s, s, dtype=torch.bool)
    region[top : bottom + 1, left : right + 1] = True  # a negative start leaves it empty
    return region


def check_center_region(fn: Callable[[Tensor, Tensor, int, float], Tensor]) -> Callable:
    """Check ``fn(mask, box, num_grid, epsilon)``: the cells one object owns on one level.

    mask (H, W) uint8 0/1; box (4,) float xyxy; returns (S, S) bool, S = num_grid:
    centre of mass +- epsilon * w / 2 and +- epsilon * h / 2, mapped to cells
    (floor(x S / W), floor(y S / H), clamped to [0, S - 1]) and cut to the 3 x 3 cells
    around the centre cell.
    """
    return run_check(
        "center_region",
        fn,
        center_region,
        _region_cases(),
        {
            "is the centre the box centre? SOLO uses the mask's centre of mass": (
                lambda *a: _region_written_out(*a, centre="box")
            ),
            "is the region missing its cut to the 3 x 3 cells around the centre cell?": (
                lambda *a: _region_written_out(*a, cut=False)
            ),
            "is the region centre +- epsilon * w instead of +- epsilon * w / 2? epsilon "
            "scales the whole box, so each side gets half": (
                lambda *a: _region_written_out(*a, half=False)
            ),
            "are the cell indices clamped to [0, S - 1]? A region that reaches past the "
            "image edge gives cell -1 (or S)": (lambda *a: _region_written_out(*a, clamp=False)),
            "are rows and columns swapped? The result is indexed [row, col], the row from "
            "y and the height": (lambda *a: center_region(*a).T),
        },
        form="one entry per cell of the S x S grid, indexed [row, col]",
    )


# --- the mask target (notebook 02, 2.5) --------------------------------------------------
def _mask_cases() -> list[Case]:
    height, width = _IMAGE_SIZE
    generator = torch.Generator().manual_seed(7)
    blocks = torch.zeros(8, 8, dtype=torch.uint8)
    blocks[0:4, 0:4] = 1  # block (0, 0): full
    blocks[0:2, 4:8] = 1  # block (0, 1): exactly half covered
    blocks[4, 0] = 1  # block (1, 0): one pixel, its top-left
    blocks[4:8, 4:8] = 1  # block (1, 1): all but its top-left pixel
    blocks[4, 4] = 0
    yy = torch.arange(height)[:, None] + 0.5
    xx = torch.arange(width)[None, :] + 0.5
    cases = [
        Case(
            "a hand-made 8 x 8 mask to 2 x 2, blocks of 4 x 4 covered 16, 8, 1 and 15 times "
            "(expected [[1, 1], [0, 1]]: half a block is kept)",
            (blocks, (2, 2)),
        )
    ]
    for size in ((64, 88), (32, 44), (16, 22)):
        u = torch.rand(5, generator=generator).tolist()
        cx, cy, rx, ry = width * u[0], height * u[1], 3 + 60 * u[2], 3 + 60 * u[3]
        mask = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8)
        mask[:, int(width * u[4]) : int(width * u[4]) + 3] = 1  # a thin vertical line
        cases.append(
            Case(
                f"a seeded random ellipse and a 3 px line, {height} x {width} to "
                f"{size[0]} x {size[1]} (the cpu preset's mask sizes)",
                (mask, size),
            )
        )
    return cases


def _mask_by(mode: str) -> Callable[[Tensor, tuple[int, int]], Tensor]:
    """Resizing by `mode` ("nearest" or "bilinear") then >= 0.5: a common mistake."""

    def resize(mask: Tensor, size: tuple[int, int]) -> Tensor:
        resized = F.interpolate(mask[None, None].float(), size=size, mode=mode)[0, 0]
        return (resized >= 0.5).to(torch.uint8)

    return resize


def _mask_strict(mask: Tensor, size: tuple[int, int]) -> Tensor:
    coverage = F.interpolate(mask[None, None].float(), size=size, mode="area")[0, 0]
    return (coverage > 0.5).to(torch.uint8)


def check_mask_target(fn: Callable[[Tensor, tuple[int, int]], Tensor]) -> Callable:
    """Check ``fn(mask, size)``: one object's mask target at a level's mask size.

    mask (H, W) uint8 0/1; size (h, w), dividing (H, W). Returns (h, w) uint8: each
    target pixel is 1 where the mask covers at least half of its block of input pixels.
    """
    return run_check(
        "mask_target",
        fn,
        mask_target,
        _mask_cases(),
        {
            "is it nearest-neighbour sampling? It reads one pixel per block; area "
            "interpolation averages the whole block": _mask_by("nearest"),
            "is it bilinear sampling? It reads the 4 pixels nearest to the block's centre, "
            "not the whole block": _mask_by("bilinear"),
            "is the threshold coverage > 0.5? A pixel covered exactly half is kept (>= 0.5)": (
                _mask_strict
            ),
        },
        form="the level's mask size",
    )
