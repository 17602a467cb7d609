"""SOLO training targets: which grid cell owns which object, on every FPN level.

For each level with an S x S grid, an object is *positive* when the square root of
its box area, sqrt(w * h) in input pixels, lies in that level's scale range
(`cfg.scale_ranges`, bounds included; the ranges overlap, so an object can be
positive on two levels). Its positive cells are:

1. the centre: the centre of mass of the mask, in continuous pixel coordinates
   (pixel (i, j) covers [j, j + 1) x [i, i + 1), so a full image has its centre at
   (W / 2, H / 2));
2. the centre region: centre +- eps * w / 2 horizontally and +- eps * h / 2
   vertically (eps = `cfg.center_epsilon`, w and h the box size), each bound
   mapped to a cell by ``floor(coord * S / size)`` and clamped to [0, S - 1], so an
   object at the image edge never yields cell S;
3. that region intersected with the 3 x 3 cells around the centre cell. It always
   holds the centre cell.

Mask targets: each object mask is resized to `cfg.mask_size(level)` by area
interpolation (the fraction of each target pixel that the mask covers) and
binarised at coverage >= 0.5. Every positive cell k = row * S + col carries the
mask of the object that owns it; its category target is that object's label.
An object whose resized mask is empty on a level (a tiny object, or an empty mask)
is positive nowhere on that level: it would teach an empty mask (as in mmdetection).

Overlap rule: where several objects claim one cell, the object with the smaller
mask area (full-resolution pixels) wins, as if objects were painted in decreasing
area order, the smaller over the larger; on equal areas the object listed later
wins. The result does not depend on the order of objects of different areas.

Everything is vectorised over objects, cells and levels (no Python loop over
cells; the loop over the images of a batch only reduces each image's masks), and
runs on the device of the inputs. `build_batch_targets` is the training path: it
returns the masks of active cells only, (P, h, w), and never materialises the
(B, S^2, h, w) tensor (87 MB per image at level 0 of the paper preset).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig


class LevelTarget(NamedTuple):
    """Targets of one image on one FPN level (dense: one mask channel per cell)."""

    category: Tensor
    """(S, S) int64 in 0..C, 0 = background."""
    masks: Tensor
    """(S * S, h, w) uint8 0/1, (h, w) = cfg.mask_size(level); zeros where inactive."""
    active: Tensor
    """(S * S,) bool: cells k = row * S + col that own an object."""


class BatchLevelTarget(NamedTuple):
    """Targets of a batch on one FPN level (compact: masks of active cells only)."""

    category: Tensor
    """(B, S, S) int64 in 0..C."""
    active: Tensor
    """(B, S * S) bool."""
    masks: Tensor
    """(P, h, w) uint8, P = active.sum(), in the order of active.nonzero():
    image-major, then cell k = row * S + col."""


def build_targets(
    boxes: Tensor, labels: Tensor, masks: Tensor, cfg: SOLOConfig
) -> list[LevelTarget]:
    """Targets of one image, one `LevelTarget` per level.

    boxes: (n, 4) float xyxy in input pixels; labels: (n,) int64 in 1..C;
    masks: (n, H, W) uint8 (or bool) 0/1 with (H, W) = cfg.image_size. n may be 0.
    The dense masks are large (S^2 channels per level); training should use
    `build_batch_targets`, which gives the same values compactly.
    """
    batch = build_batch_targets([{"boxes": boxes, "labels": labels, "masks": masks}], cfg)
    out = []
    for level, target in enumerate(batch):
        active = target.active[0]
        dense = target.masks.new_zeros((active.numel(), *cfg.mask_size(level)))
        dense.index_copy_(0, active.nonzero()[:, 0], target.masks)
        out.append(LevelTarget(category=target.category[0], masks=dense, active=active))
    return out


def build_batch_targets(targets: list[dict], cfg: SOLOConfig) -> list[BatchLevelTarget]:
    """Targets of a batch, one `BatchLevelTarget` per level, on the targets' device.

    `targets` holds one dict per image with keys "boxes", "labels" and "masks", as
    `build_targets` takes them (other keys are ignored).
    """
    owner, labels, binary = _owners(targets, cfg)
    # (N + 1,) labels of the whole batch, then a 0 that owner index -1 picks for empty cells.
    labels_all = torch.cat([labels, labels.new_zeros(1)])

    out = []
    start = 0
    for level, s in enumerate(cfg.num_grids):
        level_owner = owner[:, start : start + s * s]  # (B, S^2)
        start += s * s
        active = level_owner >= 0
        category = labels_all[level_owner]
        # index_select copies whole masks; plain indexing is ~30x slower here on CPU.
        masks = binary[cfg.mask_size(level)].index_select(0, level_owner[active])  # (P, h, w)
        out.append(BatchLevelTarget(category=category.view(-1, s, s), active=active, masks=masks))
    return out


def _owners(
    targets: list[dict], cfg: SOLOConfig
) -> tuple[Tensor, Tensor, dict[tuple[int, int], Tensor]]:
    """Which object owns each cell of a batch: (owner, labels, binary masks).

    owner: (B, total cells) int64, the index of the owning object in the batch (objects
    numbered image by image), -1 where no object; labels: (N,) of all objects;
    binary: {mask size: (N, h, w) uint8}, every object's mask at every level's size.
    """
    if not isinstance(targets, (list, tuple)) or len(targets) == 0:
        raise ValueError("build_batch_targets: targets must be a non-empty list of dicts")
    mask_sizes = sorted({cfg.mask_size(level) for level in range(cfg.num_levels)}, reverse=True)

    boxes, labels, areas, centers, has_mask, image_index = [], [], [], [], [], []
    binary: dict[tuple[int, int], list[Tensor]] = {size: [] for size in mask_sizes}
    for i, target in enumerate(targets):
        b, lab, m = _checked(f"targets[{i}]", target, cfg)
        if boxes and m.device != boxes[0].device:
            raise ValueError(f"targets[{i}] is on {m.device}, targets[0] on {boxes[0].device}")
        area, center, per_size = _mask_statistics(m, mask_sizes)
        nonempty = {size: per_size[size].flatten(1).amax(1) > 0 for size in mask_sizes}
        boxes.append(b)
        labels.append(lab)
        areas.append(area)
        centers.append(center)
        has_mask.append(
            torch.stack([nonempty[cfg.mask_size(lv)] for lv in range(cfg.num_levels)], 1)
        )
        image_index.append(torch.full_like(lab, i))
        for size in mask_sizes:
            binary[size].append(per_size[size])

    owner = _cell_owners(
        torch.cat(boxes),
        torch.cat(areas),
        torch.cat(centers),
        torch.cat(has_mask),
        torch.cat(image_index),
        len(targets),
        cfg,
    )  # (B, total cells) object index into the batch, -1 where none
    binary_all = {size: torch.cat(parts) for size, parts in binary.items()}  # (N, h, w)
    return owner, torch.cat(labels), binary_all


def objects_without_cells(target: dict, cfg: SOLOConfig) -> Tensor:
    """(n,) bool: the objects of one image that own no grid cell on any level.

    Such an object can never be predicted: every cell of its centre region went to a
    smaller object (the overlap rule), or its mask vanished at every level's size.
    `target` is a data set target in the input frame (boxes, labels, masks).
    """
    owner, labels, _ = _owners([target], cfg)
    owned = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    owned[owner[owner >= 0]] = True
    return ~owned


def _checked(where: str, target: dict, cfg: SOLOConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The boxes, labels and masks of one image, after checking their form; ValueError if wrong."""
    if not isinstance(target, dict):
        raise ValueError(
            f"{where}: expected a dict with boxes, labels, masks; got {type(target).__name__}"
        )
    for key in ("boxes", "labels", "masks"):
        if key not in target or not isinstance(target[key], Tensor):
            raise ValueError(f"{where}: missing tensor {key!r} (needs 'boxes', 'labels', 'masks')")
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
    n = labels.shape[0] if labels.dim() == 1 else -1
    h, w = cfg.image_size
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError(
            f"{where}['labels']: expected int64 (n,), got {labels.dtype} {tuple(labels.shape)}"
        )
    if boxes.shape != (n, 4) or not boxes.is_floating_point():
        raise ValueError(
            f"{where}['boxes']: expected float ({n}, 4) xyxy, got {boxes.dtype} {tuple(boxes.shape)}"
        )
    if masks.shape != (n, h, w) or masks.dtype not in (torch.uint8, torch.bool):
        raise ValueError(
            f"{where}['masks']: expected uint8 ({n}, {h}, {w}) (cfg.image_size), "
            f"got {masks.dtype} {tuple(masks.shape)}"
        )
    if n and (int(labels.min()) < 1 or int(labels.max()) > cfg.num_classes):
        raise ValueError(
            f"{where}['labels']: values must be in 1..{cfg.num_classes}, got {labels.tolist()}"
        )
    if not boxes.device == labels.device == masks.device:
        raise ValueError(
            f"{where}: boxes, labels and masks must share a device, got "
            f"{boxes.device}, {labels.device}, {masks.device}"
        )
    return boxes, labels, masks


def _coordinate_dtype(device: torch.device) -> torch.dtype:
    """float64 for centre and cell arithmetic where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _mask_statistics(
    masks: Tensor, sizes: list[tuple[int, int]]
) -> tuple[Tensor, Tensor, dict[tuple[int, int], Tensor]]:
    """Area (n,) int64, centre of mass (n, 2) as (x, y), and the masks binarised at each size.

    `sizes` is sorted from the largest, (h0, w0), down. Seen as h0 bands of fh = H / h0
    rows, the masks are read twice at full resolution, each time summing over an axis
    that is not the innermost (fast, and in uint8 where the counts fit, so no
    full-size temporary is made): once per band and column, which gives the pixel
    count of every block and so every mask size exactly; once per row offset inside
    the bands and column, which gives the column sums and, with the band totals, the
    sum of row indices without per-row sums.
    """
    n, height, width = masks.shape
    h0, w0 = sizes[0]
    if height % h0 or width % w0:
        return _mask_statistics_by_interpolation(masks, sizes)
    fh, fw = height // h0, width // w0
    grid = masks.reshape(n, h0, fh, width)  # row = band * fh + offset
    per_band = grid.sum(2, dtype=_count_dtype(fh))  # (n, h0, W)
    per_offset = grid.sum(1, dtype=_count_dtype(h0))  # (n, fh, W)
    counts = per_band.view(n, h0, w0, fw).sum(-1, dtype=torch.int32)  # (n, h0, w0) per block
    band_totals = counts.sum(2, dtype=torch.int64)  # (n, h0)
    offset_totals = per_offset.sum(2, dtype=torch.int64)  # (n, fh)
    cols = per_offset.sum(1, dtype=torch.int64)  # (n, W)
    area = band_totals.sum(1)
    row_moment = fh * _moment(band_totals) + _moment(offset_totals)

    binary = {}
    for h, w in sizes:
        if h0 % h or w0 % w:
            binary[(h, w)] = _area_resize(masks, (h, w))
            continue
        # Two single-axis sums: much faster than one sum over two strided axes.
        block = counts.view(n, h, h0 // h, w0).sum(2).view(n, h, w, w0 // w).sum(-1)
        binary[(h, w)] = (2 * block >= (height // h) * (width // w)).to(torch.uint8)
    return area, _centers(area, _moment(cols), row_moment), binary


def _mask_statistics_by_interpolation(
    masks: Tensor, sizes: list[tuple[int, int]]
) -> tuple[Tensor, Tensor, dict[tuple[int, int], Tensor]]:
    """`_mask_statistics` for mask sizes that do not divide the image size (slower, general)."""
    rows = masks.sum(2, dtype=torch.int64)  # (n, H)
    cols = masks.sum(1, dtype=torch.int64)  # (n, W)
    area = rows.sum(1)
    binary = {size: _area_resize(masks, size) for size in sizes}
    return area, _centers(area, _moment(cols), _moment(rows)), binary


def _moment(counts: Tensor) -> Tensor:
    """(n, L) int64 counts per index -> (n,) sum of index * count (exact; no int matmul on CUDA)."""
    return (counts * torch.arange(counts.shape[1], device=counts.device)).sum(1)


def _centers(area: Tensor, col_moment: Tensor, row_moment: Tensor) -> Tensor:
    """(n, 2) centres of mass (x, y) from pixel counts and index sums.

    Pixel (i, j) sits at (j + 0.5, i + 0.5); an empty mask gets (0.5, 0.5), unused.
    """
    dtype = _coordinate_dtype(area.device)
    safe = area.clamp(min=1).to(dtype)
    return torch.stack(
        [col_moment.to(dtype) / safe + 0.5, row_moment.to(dtype) / safe + 0.5], dim=1
    )


def _count_dtype(max_count: int) -> torch.dtype:
    """The smallest cheap integer dtype that holds counts up to `max_count`."""
    return torch.uint8 if max_count <= 255 else torch.int32


def _area_resize(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(n, H, W) 0/1 masks -> (n, h, w) uint8 by area interpolation then coverage >= 0.5."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.uint8)
    coverage = F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]
    return (coverage >= 0.5).to(torch.uint8)


def _cell_owners(
    boxes: Tensor,
    areas: Tensor,
    centers: Tensor,
    has_mask: Tensor,
    image_index: Tensor,
    num_images: int,
    cfg: SOLOConfig,
) -> Tensor:
    """(B, sum of S^2) int64: the object (index into the batch) that owns each cell, -1 if none.

    boxes (N, 4), areas (N,) mask pixels, centers (N, 2) as (x, y), has_mask (N, L)
    whether the mask target of each level is non-empty, image_index (N,).

    Cells of all levels are laid out one level after another, each as k = row * S + col.
    All objects and levels are handled at once: each object proposes the 3 x 3 cells
    around its centre cell on every level, invalid proposals are masked out, and a
    scatter-max of the painting rank picks the winner of each cell.
    """
    device = boxes.device
    dtype = _coordinate_dtype(device)
    height, width = cfg.image_size
    grids = torch.tensor(cfg.num_grids, device=device)  # (L,)
    ranges = torch.tensor(cfg.scale_ranges, dtype=dtype, device=device)  # (L, 2)
    level_start = torch.cumsum(grids * grids, 0) - grids * grids  # (L,)
    total = int((grids * grids).sum())

    b = boxes.to(dtype)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]  # (N,)
    scale = torch.sqrt(bw * bh)[:, None]
    positive = (scale >= ranges[:, 0]) & (scale <= ranges[:, 1]) & has_mask  # (N, L)

    def cell(coord: Tensor, size: int) -> Tensor:  # (N,) pixels -> (N, L) clamped cell index
        idx = torch.floor(coord[:, None] * grids.to(dtype) / size).long()
        return torch.minimum(idx.clamp(min=0), grids - 1)

    cx, cy = centers[:, 0], centers[:, 1]
    half_w = cfg.center_epsilon * bw / 2
    half_h = cfg.center_epsilon * bh / 2
    col, row = cell(cx, width), cell(cy, height)  # (N, L) centre cell
    # The centre region's cell bounds; only the 3 x 3 cells around the centre cell are
    # proposed below, which is the intersection with that neighbourhood.
    left, right = cell(cx - half_w, width), cell(cx + half_w, width)
    top, bottom = cell(cy - half_h, height), cell(cy + half_h, height)
    offsets = torch.arange(-1, 2, device=device)
    rows = row[..., None] + offsets  # (N, L, 3)
    cols = col[..., None] + offsets
    row_ok = (rows >= top[..., None]) & (rows <= bottom[..., None])
    col_ok = (cols >= left[..., None]) & (cols <= right[..., None])
    valid = positive[..., None, None] & row_ok[..., :, None] & col_ok[..., None, :]  # (N, L, 3, 3)
    flat = (
        image_index[:, None, None, None] * total
        + level_start[None, :, None, None]
        + rows[..., :, None] * grids[None, :, None, None]
        + cols[..., None, :]
    )

    # Painting order: decreasing area, stable, so the smaller (or, on ties, later) object
    # has the higher rank and wins the scatter-max.
    order = torch.sort(areas, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    winner = torch.full((num_images * total,), -1, dtype=torch.int64, device=device)
    winner.scatter_reduce_(0, flat[valid], rank[:, None, None, None].expand_as(flat)[valid], "amax")
    order = torch.cat([order, order.new_full((1,), -1)])  # rank -1 (no owner) -> object -1
    return order[winner].view(num_images, total)
