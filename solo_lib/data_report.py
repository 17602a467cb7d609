"""What a data set needs from a SOLO configuration: object sizes, cells, mask pixels.

Users who bring their own data (often small, dense objects) cannot tell from the
annotations which input size and grids their objects need. `analyse_dataset` measures
it with the target rules themselves (`solo_lib.targets`), on targets in the network's
input frame:

* the object sizes, sqrt(w * h) in input pixels, against each level's scale range;
* per level: the objects in its range, and those that own at least one cell there;
* crowding: objects that lose a centre cell to another object of the same class, and
  objects that own no cell at all (`objects_without_cells`), which the network can
  then never predict;
* the mask pixels the objects get at each level's mask size, and the objects whose
  mask vanishes on all of their levels.

`propose_setting` then tries larger inputs and finer grids (finer strides only as a
last resort), cheapest first, and re-runs the same measurement on each, until (nearly)
every object owns a cell and the small objects get enough mask pixels.

With ``progress=True`` (``python -m solo_lib analyse``) both loops show a tqdm bar on
stderr: the images read and measured, then each candidate setting over its images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from solo_lib.config import SOLOConfig
from solo_lib.data.geometry import ImageGeometry
from solo_lib.targets import _owners

#: Candidates for the proposal, tried in this order: factors on `image_size` (rounded to
#: multiples of 32), then on `num_grids`; an input beyond `MAX_INPUT_SIDE` (COCO's usual
#: 1333, to a multiple of 32) is not tried: rarely practical, and slow to measure.
IMAGE_FACTORS = (1.0, 1.25, 1.5, 2.0, 3.0)
GRID_FACTORS = (1.0, 1.5, 2.0, 3.0)
MAX_INPUT_SIDE = 1344

#: The quantiles of the object sizes that the report gives.
QUANTILES = dict(min=0.0, p5=0.05, p25=0.25, median=0.5, p75=0.75, p95=0.95, max=1.0)


class _ObjectStats(NamedTuple):
    """Per-object measurements, objects of all images concatenated (N objects, L levels)."""

    size: Tensor
    """(N,) float64 sqrt(w * h) of the box, input pixels."""
    in_range: Tensor
    """(N, L) bool: size within the level's scale range (bounds included)."""
    pixels: Tensor
    """(N, L) int64: pixels of the mask resized to the level's mask size."""
    owns: Tensor
    """(N, L) bool: owns at least one cell of the level."""
    lost_to_same_class: Tensor
    """(N,) bool: another object of its class owns a cell it claims."""


@dataclass(frozen=True)
class LevelReport:
    """One FPN level: its geometry and what it does with the data set's objects."""

    stride: int
    grid: int
    scale_range: tuple[float, float]
    mask_size: tuple[int, int]
    in_range: int
    """Objects whose size lies in the scale range."""
    with_cells: int
    """Objects that own at least one cell of this level."""
    min_mask_pixels: int | None
    """Fewest mask pixels of an object in range (None: no object in range)."""
    p5_mask_pixels: float | None
    """5th percentile of the mask pixels of the objects in range."""


@dataclass(frozen=True)
class Candidate:
    """One setting tried by `propose_setting`, and its measurement."""

    image_size: tuple[int, int]
    strides: tuple[int, ...]
    num_grids: tuple[int, ...]
    num_objects: int
    without_cells: int
    lost_to_same_class: int
    small_mask_pixels: float
    meets: bool


@dataclass(frozen=True)
class Proposal:
    """The setting proposed for a data set, with every candidate that was measured."""

    chosen: Candidate
    tried: tuple[Candidate, ...]
    num_images: int
    """Images the search measured (a subset of the data set)."""
    min_mask_pixels: float
    max_without_cells: float


@dataclass(frozen=True)
class DatasetReport:
    """What a configuration does with a data set's objects (`analyse_dataset`)."""

    image_size: tuple[int, int]
    num_images: int
    num_objects: int
    sizes: dict[str, float]
    """sqrt(w * h) in input pixels: min, p5, p25, median, p75, p95, max."""
    levels: tuple[LevelReport, ...]
    outside_ranges: int
    """Objects in no level's scale range."""
    masks_vanish: int
    """Objects in some range whose mask is empty at every such level's mask size."""
    crowded_out: int
    """Objects with a positive level that lost every cell they claim to other objects."""
    without_cells: int
    """Objects that own no cell: outside_ranges + masks_vanish + crowded_out."""
    lost_to_same_class: int
    """Objects that lose at least one claimed cell to another object of the same class."""
    small_mask_pixels: float
    """5th percentile over objects of their mask pixels at their best level in range."""
    proposal: Proposal | None


def analyse_dataset(
    dataset: Sequence[tuple[object, dict]],
    cfg: SOLOConfig,
    proposal_images: int = 100,
    min_mask_pixels: float = 16,
    max_without_cells: float = 0.01,
    progress: bool = False,
) -> DatasetReport:
    """Measure `dataset` under `cfg`, and propose a setting from `proposal_images` of it.

    `dataset` yields (image, target) with targets in the input frame of `cfg`: "boxes"
    (n, 4) float xyxy input pixels, "labels" (n,) int64 in 1..C, "masks" (n, H, W)
    uint8 with (H, W) = cfg.image_size (e.g. `SOLODataModule.val_dataset`, or any
    list of such pairs). The proposal (`propose_setting`) reads an evenly spaced
    subset of `proposal_images` images again for each candidate; 0 skips it.
    `progress` shows a tqdm bar (on stderr) over the images read, then over the
    candidates measured.
    """
    h, w = cfg.image_size
    with tqdm(
        total=len(dataset), desc=f"analysing at {h}x{w}", unit="image", disable=not progress
    ) as bar:
        stats = _measure(dataset, range(len(dataset)), cfg, bar=bar)
    if stats.size.numel() == 0:
        raise ValueError("analyse_dataset: the data set has no objects")

    outside = ~stats.in_range.any(1)
    vanish = ~outside & ~(stats.in_range & (stats.pixels > 0)).any(1)
    without = ~stats.owns.any(1)
    levels = []
    for level, (grid, scale_range) in enumerate(zip(cfg.num_grids, cfg.scale_ranges, strict=True)):
        pixels = stats.pixels[stats.in_range[:, level], level].double()  # (objects in range,)
        levels.append(
            LevelReport(
                stride=cfg.strides[level],
                grid=grid,
                scale_range=scale_range,
                mask_size=cfg.mask_size(level),
                in_range=int(stats.in_range[:, level].sum()),
                with_cells=int(stats.owns[:, level].sum()),
                min_mask_pixels=int(pixels.min()) if pixels.numel() else None,
                p5_mask_pixels=float(pixels.quantile(0.05)) if pixels.numel() else None,
            )
        )
    sizes = {name: float(stats.size.quantile(q)) for name, q in QUANTILES.items()}
    proposal = None
    if proposal_images > 0:
        subset = proposal_subset(len(dataset), proposal_images)
        proposal = propose_setting(
            dataset, cfg, min_mask_pixels, max_without_cells, subset, progress=progress
        )
    return DatasetReport(
        image_size=cfg.image_size,
        num_images=len(dataset),
        num_objects=stats.size.numel(),
        sizes=sizes,
        levels=tuple(levels),
        outside_ranges=int(outside.sum()),
        masks_vanish=int(vanish.sum()),
        crowded_out=int((without & ~outside & ~vanish).sum()),
        without_cells=int(without.sum()),
        lost_to_same_class=int(stats.lost_to_same_class.sum()),
        small_mask_pixels=_small_mask_pixels(stats),
        proposal=proposal,
    )


def proposal_subset(num_images: int, proposal_images: int) -> range:
    """The images `analyse_dataset` measures the candidates on: at most `proposal_images`
    of `num_images`, evenly spaced."""
    return range(0, num_images, math.ceil(num_images / proposal_images))


def search_order(cfg: SOLOConfig) -> list[tuple[tuple[int, ...], tuple[int, int]]]:
    """The (strides, input size) pairs `propose_setting` tries, in order, each with the
    grids of every factor in `GRID_FACTORS`: at most ``len(search_order(cfg)) *
    len(GRID_FACTORS)`` candidates (the search stops at the first that meets the needs)."""
    finest = min(cfg.strides)
    finer = tuple(s // 2 if s == finest else s for s in cfg.strides)
    sizes = [_scaled_input(cfg.image_size, factor) for factor in IMAGE_FACTORS]
    sizes = [cfg.image_size] + [s for s in sizes if max(s) <= MAX_INPUT_SIDE]
    return [
        (strides, size)
        for strides in ((cfg.strides, finer) if finest > 1 else (cfg.strides,))
        for size in dict.fromkeys(sizes)  # in order, without repeats
    ]


def propose_setting(
    dataset: Sequence[tuple[object, dict]],
    cfg: SOLOConfig,
    min_mask_pixels: float = 16,
    max_without_cells: float = 0.01,
    indices: Sequence[int] | None = None,
    progress: bool = False,
) -> Proposal:
    """The cheapest input size and grids under which the objects of `dataset` fit SOLO.

    A setting meets the needs when at most `max_without_cells` of the objects own no
    cell and the 5th percentile of the objects' mask pixels (at their best level) is
    at least `min_mask_pixels`. Each candidate is measured as the data set was, on the
    images `indices` (default: all): every target is placed in the candidate input as
    the input pipeline places an image (`ImageGeometry`: scaled to fit, padded), then
    the cell rules run again. The order, cheapest first: the input sizes of
    `IMAGE_FACTORS` (the aspect kept), for each the grids of `GRID_FACTORS`; the strides
    as they are, and only if nothing meets the needs, with the finest levels at half
    their stride (twice as fine masks for the small objects). Mask sizes do not depend
    on the grids, so an input whose masks are too small skips its finer grids. If no
    candidate meets the needs: the one with the fewest objects without cells among
    those with enough mask pixels (else among all).

    `progress` shows one tqdm bar (on stderr): the candidate being measured (its number,
    of at most `search_order`'s count), over its images.
    """
    indices = range(len(dataset)) if indices is None else indices
    order = search_order(cfg)
    most = len(order) * len(GRID_FACTORS)
    tried: list[Candidate] = []
    with tqdm(total=len(indices), desc="proposal", unit="image", disable=not progress) as bar:
        for strides, size in order:
            for grid_factor in GRID_FACTORS:
                grids = tuple(max(1, int(s * grid_factor + 0.5)) for s in cfg.num_grids)
                candidate = cfg.replace(image_size=size, strides=strides, num_grids=grids)
                setting = _in_words(size, strides, grids, cfg)
                bar.set_description(f"proposal {len(tried) + 1}/{most}: {setting}", refresh=False)
                bar.reset()  # and shown, with the new description
                stats = _measure(dataset, indices, cfg, candidate, bar=bar)
                n = stats.size.numel()
                without = int((~stats.owns.any(1)).sum())
                small = _small_mask_pixels(stats)
                enough_pixels = small >= min_mask_pixels
                meets = enough_pixels and without <= max_without_cells * n
                lost = int(stats.lost_to_same_class.sum())
                tried.append(Candidate(size, strides, grids, n, without, lost, small, meets))
                if meets:
                    return Proposal(
                        tried[-1], tuple(tried), len(indices), min_mask_pixels, max_without_cells
                    )
                if not enough_pixels:
                    break  # finer grids leave the mask pixels as they are
    best = min(tried, key=lambda c: (c.small_mask_pixels < min_mask_pixels, c.without_cells))
    return Proposal(best, tuple(tried), len(indices), min_mask_pixels, max_without_cells)


def _in_words(
    size: tuple[int, int], strides: tuple[int, ...], grids: tuple[int, ...], cfg: SOLOConfig
) -> str:
    """A candidate setting for the progress bar: input, grids, and strides if not `cfg`'s."""
    words = f"{size[0]}x{size[1]}, grids {' '.join(map(str, grids))}"
    return words if strides == cfg.strides else f"{words}, strides {' '.join(map(str, strides))}"


def format_report(report: DatasetReport) -> str:
    """`report` as a plain-text table, for the command line."""
    h, w = report.image_size
    n = report.num_objects

    def share(count: int) -> str:
        return f"{count} ({100 * count / n:.1f} %)"

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    lines = [
        f"{report.num_images} images, {n} objects, input {h}x{w} (H x W)",
        "object size sqrt(w*h), input px: "
        + "  ".join(f"{name} {value:.1f}" for name, value in report.sizes.items()),
        "",
        f"{'level':>5} {'stride':>6} {'grid':>4} {'scale range':>13} {'mask size':>9} "
        f"{'in range':>8} {'own cells':>9} {'mask px min':>11} {'mask px p5':>10}",
    ]
    for level, lv in enumerate(report.levels):
        lo, hi = lv.scale_range
        lines.append(
            f"{level:>5} {lv.stride:>6} {lv.grid:>4} {f'{lo:.1f}-{hi:.1f}':>13} "
            f"{f'{lv.mask_size[0]}x{lv.mask_size[1]}':>9} {lv.in_range:>8} {lv.with_cells:>9} "
            f"{number(lv.min_mask_pixels):>11} {number(lv.p5_mask_pixels):>10}"
        )
    lines += [
        "",
        f"objects in no scale range:                          {share(report.outside_ranges)}",
        f"objects whose mask vanishes on all their levels:    {share(report.masks_vanish)}",
        f"objects that lose a cell to one of their class:     {share(report.lost_to_same_class)}",
        f"objects whose every cell goes to other objects:     {share(report.crowded_out)}",
        f"objects that own no cell (objects_without_cells):   {share(report.without_cells)}",
        f"mask pixels of the small objects (p5, best level):  {report.small_mask_pixels:g}",
    ]
    if report.proposal is not None:
        lines += ["", *_format_proposal(report.proposal)]
    return "\n".join(lines)


def _format_proposal(proposal: Proposal) -> list[str]:
    """The candidates measured, and the setting proposed with its command-line options."""
    lines = [
        f"proposal, measured on {proposal.num_images} images: at most "
        f"{100 * proposal.max_without_cells:g} % of objects without cells, small objects "
        f">= {proposal.min_mask_pixels:g} mask px",
        f"{'input':>9} {'strides':<14} {'grids':<18} {'no cell':>7} {'lose to class':>13} "
        f"{'small px':>8}  meets",
    ]
    for c in proposal.tried:
        size = f"{c.image_size[0]}x{c.image_size[1]}"
        strides, grids = " ".join(map(str, c.strides)), " ".join(map(str, c.num_grids))
        lines.append(
            f"{size:>9} {strides:<14} {grids:<18} {c.without_cells:>7} "
            f"{c.lost_to_same_class:>13} {c.small_mask_pixels:>8g}  {'yes' if c.meets else 'no'}"
        )
    chosen = proposal.chosen
    verdict = "proposed" if chosen.meets else "no candidate meets the needs; the closest"
    lines.append(
        f"{verdict}: --model.config.image_size '{list(chosen.image_size)}' "
        f"--model.config.strides '{list(chosen.strides)}' "
        f"--model.config.num_grids '{list(chosen.num_grids)}'"
    )
    return lines


def box_sizes(boxes: Tensor) -> Tensor:
    """The size SOLO assigns levels by: sqrt(w * h) of each xyxy box (n, 4), float64 (n,)."""
    b = boxes.double()
    return torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


def object_sizes(dataset: Sequence[tuple[object, dict]]) -> Tensor:
    """The size of every object of `dataset`, as `analyse_dataset` measures it: (N,) float64.

    sqrt(w * h) of each target box (input pixels for items in the network's input frame),
    objects of all images concatenated in data set order; for a histogram of sizes against
    the levels' scale ranges. Reads only the boxes: no cell rules are run.
    """
    sizes = [box_sizes(dataset[i][1]["boxes"]) for i in range(len(dataset))]
    return torch.cat(sizes) if sizes else torch.zeros(0, dtype=torch.float64)


def _image_stats(target: dict, cfg: SOLOConfig) -> _ObjectStats:
    """Measure the objects of one image (n objects) with the target rules of `cfg`.

    The image is run through `_owners` with each object also alone in an image of its
    own: the cells an object owns alone are the cells it claims (its centre region on
    its positive levels); a claimed cell that the object does not own in the full
    image went to another object, by the overlap rule.
    """
    boxes, labels = target["boxes"], target["labels"]
    n, num_levels = labels.shape[0], len(cfg.num_grids)
    size = box_sizes(boxes)  # (n,), as targets.py
    ranges = torch.tensor(cfg.scale_ranges, dtype=torch.float64)  # (L, 2)
    in_range = (size[:, None] >= ranges[:, 0]) & (size[:, None] <= ranges[:, 1])  # (n, L)
    if n == 0:
        empty = torch.zeros(0, num_levels, dtype=torch.bool)
        return _ObjectStats(size, in_range, empty.long(), empty, empty[:, 0])

    masks = target["masks"]  # (n, H, W)
    alone = [
        {"boxes": boxes[i : i + 1], "labels": labels[i : i + 1], "masks": masks[i : i + 1]}
        for i in range(n)
    ]
    owner, _, binary = _owners([target, *alone], cfg)  # (1 + n, cells of all levels)
    together = owner[0]  # (T,) object 0..n-1 owning each cell, -1 none
    claimed = owner[1:] >= 0  # (n, T)
    own = together[None, :] == torch.arange(n, device=together.device)[:, None]  # (n, T)
    winner_label = torch.cat([labels, labels.new_zeros(1)])[together]  # (T,), 0 where no owner
    lost = claimed & ~own & (winner_label[None, :] == labels[:, None])  # (n, T)

    per_level = [s * s for s in cfg.num_grids]
    owns = torch.stack([part.any(1) for part in own.split(per_level, dim=1)], 1)  # (n, L)
    pixels = torch.stack(
        [binary[cfg.mask_size(level)][:n].flatten(1).sum(1) for level in range(num_levels)], 1
    )  # (n, L); binary holds the n image objects first, then the n alone
    return _ObjectStats(size, in_range, pixels, owns, lost.any(1))


def _measure(
    dataset: Sequence[tuple[object, dict]],
    indices: Sequence[int],
    cfg: SOLOConfig,
    candidate: SOLOConfig | None = None,
    bar: tqdm | None = None,
) -> _ObjectStats:
    """The objects of images `indices`, measured under `cfg` or, placed in its input, under
    `candidate`. One image at a time: only its masks are held at once. `bar` (a tqdm
    bar) advances by one per image."""
    per_image = []
    for i in indices:
        _, target = dataset[i]
        target = {key: target[key] for key in ("boxes", "labels", "masks")}
        if candidate is not None:
            target = _placed(target, cfg.image_size, candidate.image_size)
        per_image.append(_image_stats(target, candidate or cfg))
        if bar is not None:
            bar.update()
    if not per_image:  # no images: no objects
        nothing = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        per_image.append(_image_stats(nothing, cfg))
    return _ObjectStats(*(torch.cat(parts) for parts in zip(*per_image, strict=True)))


def _scaled_input(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H, W) times `factor`, each rounded to the nearest multiple of 32 (at least 32)."""
    return tuple(max(32, 32 * int(x * factor / 32 + 0.5)) for x in size)


def _small_mask_pixels(stats: _ObjectStats) -> float:
    """5th percentile, over objects in some range, of their mask pixels at their best level."""
    best = torch.where(stats.in_range, stats.pixels, -1).amax(1)  # (N,), -1: in no range
    best = best[best >= 0].double()
    return float(best.quantile(0.05)) if best.numel() else 0.0


def _placed(target: dict, frame: tuple[int, int], size: tuple[int, int]) -> dict:
    """`target` (in the `frame` input) placed in a `size` input as the pipeline places images:
    scaled to fit, aspect kept, padded centred (`ImageGeometry`)."""
    if tuple(size) == tuple(frame):
        return target
    geometry = ImageGeometry.fit(frame, size)
    return {
        "boxes": geometry.boxes_to_input(target["boxes"]),
        "labels": target["labels"],
        "masks": geometry.masks_to_input(target["masks"]),
    }
