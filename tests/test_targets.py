"""Tests of `solo_lib.targets`: geometry worked out by hand, then a slow reference.

Most hand-made cases use SMALL: a 256 x 256 input with grids (16, 8, 8, 4, 4), so cells
are 16, 32, 32, 64 and 64 pixels wide. Its scale ranges are the paper's times
256 / 800 = 0.32: (0.32, 30.72), (15.36, 61.44), (30.72, 122.88), (61.44, 245.76),
(122.88, 655.36); mask targets are 64 x 64 (levels 0, 1), 32 x 32 and 16 x 16.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solo_lib.config import SOLOConfig
from solo_lib.targets import (
    BatchLevelTarget,
    LevelTarget,
    build_batch_targets,
    build_targets,
    objects_without_cells,
)
from solo_lib.targets_loop import build_targets_loop

SMALL = SOLOConfig.cpu().replace(image_size=(256, 256), num_grids=(16, 8, 8, 4, 4))


def rectangles(cfg: SOLOConfig, *objects: tuple[int, int, int, int, int]):
    """boxes, labels, masks of axis-aligned rectangles (row0, row1, col0, col1, label), ends excluded."""
    height, width = cfg.image_size
    masks = torch.zeros(len(objects), height, width, dtype=torch.uint8)
    boxes, labels = [], []
    for i, (r0, r1, c0, c1, label) in enumerate(objects):
        masks[i, r0:r1, c0:c1] = 1
        boxes.append([c0, r0, c1, r1])
        labels.append(label)
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        masks,
    )


def active_cells(targets: list[LevelTarget]) -> list[list[int]]:
    """The active cell indices k of every level."""
    return [t.active.nonzero()[:, 0].tolist() for t in targets]


def area_resized(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The documented mask resizing: area interpolation, then coverage >= 0.5."""
    coverage = F.interpolate(mask[None, None].float(), size=size, mode="area")[0, 0]
    return (coverage >= 0.5).to(torch.uint8)


# --- geometry worked out by hand ---------------------------------------------------------------


def test_object_at_a_cell_centre_owns_that_cell_only():
    # 10 x 10 at rows 35..44, cols 83..92: centre (88, 40), the centre of cell (2, 5) on level 0.
    # sqrt(10 * 10) = 10 is in level 0's range only; region +-1 px stays in the cell.
    targets = build_targets(*rectangles(SMALL, (35, 45, 83, 93, 2)), SMALL)
    assert active_cells(targets) == [[2 * 16 + 5], [], [], [], []]
    category = targets[0].category
    assert category[2, 5] == 2 and int((category != 0).sum()) == 1
    # 4 x 4 blocks: rows 36..43 and cols 84..91 are fully covered; rows 35, 44 and cols 83, 92
    # cover a quarter of their blocks, under one half.
    expected = torch.zeros(64, 64, dtype=torch.uint8)
    expected[9:11, 21:23] = 1
    assert torch.equal(targets[0].masks[37], expected)
    assert int(targets[0].masks.sum()) == 4  # every other channel is empty


def test_centre_is_the_centre_of_mass_not_the_box_centre():
    # A 16 x 16 block (rows and cols 100..115) with a 1-px tail along row 108 to col 179.
    # Box 80 x 16, sqrt = 35.8: levels 1 and 2 (32-px cells). Box centre x = 140 (cell 4),
    # centre of mass x = (256 * 108 + 64 * 148) / 320 = 116 (cell 3), y = 108.1 (row 3);
    # region +-8 px by +-1.6 px stays in cell (3, 3).
    boxes, labels, masks = rectangles(SMALL, (100, 116, 100, 116, 1))
    masks[0, 108, 116:180] = 1
    boxes[0] = torch.tensor([100.0, 100.0, 180.0, 116.0])
    targets = build_targets(boxes, labels, masks, SMALL)
    assert active_cells(targets) == [[], [27], [27], [], []]


def test_region_spreads_over_cells_and_is_cut_to_3x3():
    # 250 x 2 line at rows 128..129, cols 3..252: centre (128, 129), sqrt(500) = 22.4 (levels 0, 1).
    # Level 0 (16-px cells): x in [103, 153] -> cells 6..9, cut to 7..9 around the centre cell 8;
    # y in [128.8, 129.2] -> row 8. Level 1 (32-px cells): cols 3..4, row 4.
    targets = build_targets(*rectangles(SMALL, (128, 130, 3, 253, 3)), SMALL)
    assert active_cells(targets) == [
        [8 * 16 + 7, 8 * 16 + 8, 8 * 16 + 9],
        [4 * 8 + 3, 4 * 8 + 4],
        [],
        [],
        [],
    ]
    assert targets[0].category[8, 7:10].tolist() == [3, 3, 3]
    # The 2-px line fills half of one row of 4 x 4 blocks: that row is kept.
    expected = torch.zeros(64, 64, dtype=torch.uint8)
    expected[32, 1:63] = 1
    assert torch.equal(targets[0].masks[8 * 16 + 7], expected)


def test_objects_at_the_image_corners_clamp_to_the_edge_cells():
    # 6 x 6 squares in the four corners: cells 0, 15, 240 and 255 of level 0, never 16 or 256.
    objects = [(0, 6, 0, 6, 1), (0, 6, 250, 256, 2), (250, 256, 0, 6, 3), (250, 256, 250, 256, 1)]
    targets = build_targets(*rectangles(SMALL, *objects), SMALL)
    assert active_cells(targets)[0] == [0, 15, 240, 255]
    assert targets[0].category[15, 15] == 1 and targets[0].category[0, 15] == 2
    # With epsilon 2 the regions reach past the image: [-5, 15] and [241, 261] map to cells
    # -1..0 and 15..16 before clamping; clamped, each corner still owns its corner cell only.
    wide = SMALL.replace(center_epsilon=2.0)
    corners = build_targets(*rectangles(wide, (0, 10, 0, 10, 1), (246, 256, 246, 256, 2)), wide)
    assert active_cells(corners)[0] == [0, 255]
    assert all(t.category.shape == (s, s) for t, s in zip(corners, wide.num_grids, strict=True))


def test_object_in_the_overlap_of_two_scale_ranges_is_positive_on_both():
    # 20 x 20 at rows 120..139, cols 40..59: centre (50, 130); 20 is in (0.32, 30.72) and in
    # (15.36, 61.44). Level 0: cell (8, 3); level 1: cell (4, 1).
    targets = build_targets(*rectangles(SMALL, (120, 140, 40, 60, 2)), SMALL)
    assert active_cells(targets) == [[8 * 16 + 3], [4 * 8 + 1], [], [], []]
    assert targets[0].category[8, 3] == 2 and targets[1].category[4, 1] == 2


def test_scale_range_bounds_are_inclusive():
    # Paper preset: sqrt(96 * 96) = 96 is the top of level 0, inside level 1 and the bottom of level 2.
    cfg = SOLOConfig.paper()
    targets = build_targets(*rectangles(cfg, (352, 448, 496, 592, 1)), cfg)
    assert [len(cells) > 0 for cells in active_cells(targets)] == [True, True, True, False, False]


def test_overlapping_objects_smaller_one_wins_whatever_the_order():
    # Big 24 x 24 centred at (128, 128): level 0 cells rows/cols 7..8 (region +-2.4 px across
    # the 128 boundary). Small 12 x 12 centred at (132, 132) inside it: cell (8, 8) only.
    big, small = (116, 140, 116, 140, 1), (126, 138, 126, 138, 3)
    for order in ((big, small), (small, big)):
        boxes, labels, masks = rectangles(SMALL, *order)
        targets = build_targets(boxes, labels, masks, SMALL)
        level0 = targets[0]
        assert active_cells(targets)[0] == [119, 120, 135, 136]
        assert level0.category[7:9, 7:9].tolist() == [[1, 1], [1, 3]]
        small_mask = masks[[o[4] for o in order].index(3)]
        big_mask = masks[[o[4] for o in order].index(1)]
        assert torch.equal(level0.masks[136], area_resized(small_mask, (64, 64)))
        for k in (119, 120, 135):
            assert torch.equal(level0.masks[k], area_resized(big_mask, (64, 64)))
        # Level 1 (sqrt = 24 only fits the big one): rows/cols 3..4, all big.
        assert active_cells(targets)[1] == [27, 28, 35, 36]
        assert set(targets[1].category.unique().tolist()) == {0, 1}


def test_overlapping_objects_of_equal_area_the_later_one_wins():
    first, second = (126, 138, 126, 138, 1), (127, 139, 127, 139, 2)  # both own cell (8, 8)
    assert build_targets(*rectangles(SMALL, first, second), SMALL)[0].category[8, 8] == 2
    assert build_targets(*rectangles(SMALL, second, first), SMALL)[0].category[8, 8] == 1


def test_tiny_objects_keep_a_mask_or_are_dropped():
    # 3 x 3 at rows/cols 4..6 covers 9/16 of 4 x 4 block (1, 1): one mask pixel, cell 0.
    targets = build_targets(*rectangles(SMALL, (4, 7, 4, 7, 2)), SMALL)
    assert active_cells(targets) == [[0], [], [], [], []]
    expected = torch.zeros(64, 64, dtype=torch.uint8)
    expected[1, 1] = 1
    assert torch.equal(targets[0].masks[0], expected)
    # 1 x 1 vanishes at 64 x 64 (coverage 1/16): positive nowhere, like an empty mask.
    assert active_cells(build_targets(*rectangles(SMALL, (50, 51, 50, 51, 2)), SMALL)) == [[]] * 5
    boxes, labels, masks = rectangles(SMALL, (50, 70, 50, 70, 1))
    masks.zero_()
    assert active_cells(build_targets(boxes, labels, masks, SMALL)) == [[]] * 5


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_empty_image_is_all_background(preset):
    cfg = SOLOConfig.preset(preset)
    height, width = cfg.image_size
    empty = (
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, height, width, dtype=torch.uint8),
    )
    targets = build_targets(*empty, cfg)
    for level, t in enumerate(targets):
        s = cfg.num_grids[level]
        assert t.category.shape == (s, s) and not t.category.any()
        assert t.active.shape == (s * s,) and not t.active.any()
        assert t.masks.shape == (s * s, *cfg.mask_size(level)) and not t.masks.any()
    batch = build_batch_targets(
        [dict(zip(("boxes", "labels", "masks"), empty, strict=True))] * 2, cfg
    )
    assert all(t.masks.shape == (0, *cfg.mask_size(lv)) for lv, t in enumerate(batch))


# --- the slow, readable reference: plain loops over objects and cells (solo_lib.targets_loop)


def random_image(cfg: SOLOConfig, generator: torch.Generator, max_objects: int):
    """Seeded ellipses and rectangles of all sizes, often overlapping, often at the edges.

    Boxes are the masks' tight boxes with up to 3 px of jitter; some masks are empty.
    """
    height, width = cfg.image_size

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    n = int(torch.randint(0, max_objects + 1, (), generator=generator))
    yy = torch.arange(height)[:, None] + 0.5
    xx = torch.arange(width)[None, :] + 0.5
    cluster = (uniform(0, width), uniform(0, height))
    masks = torch.zeros(n, height, width, dtype=torch.uint8)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        size = math.exp(uniform(math.log(2), math.log(height)))
        ry, rx = size * uniform(0.3, 1.0), size * uniform(0.3, 1.0)
        if uniform(0, 1) < 0.5:  # around a shared point, to make overlaps
            cx, cy = cluster[0] + uniform(-20, 20), cluster[1] + uniform(-20, 20)
        else:  # anywhere, edges and beyond included
            cx, cy = uniform(-0.1 * width, 1.1 * width), uniform(-0.1 * height, 1.1 * height)
        if uniform(0, 1) < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            inside = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        if uniform(0, 1) < 0.1:
            inside[:] = False
        masks[i] = inside
        ys, xs = torch.nonzero(inside, as_tuple=True)
        if len(xs):
            tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            boxes[i] = (
                torch.tensor([float(v) for v in tight])
                + torch.rand(4, generator=generator) * 3
                - 1.5
            )
            boxes[i, 2:] = torch.maximum(boxes[i, 2:], boxes[i, :2] + 1)
        else:
            boxes[i] = torch.tensor([10.0, 10.0, 10.0 + size, 10.0 + size])
    labels = torch.randint(1, cfg.num_classes + 1, (n,), generator=generator)
    return boxes, labels, masks


CROSS_CHECK = {
    "cpu": (SOLOConfig.cpu(), 12, 8),
    "small": (SMALL, 10, 8),
    "small-eps1": (SMALL.replace(center_epsilon=1.0), 6, 8),
    "paper": (SOLOConfig.paper(), 3, 4),
    # 1056 / 4 = 264 bands: counts per row offset no longer fit in uint8
    "tall": (SMALL.replace(image_size=(1056, 256)), 2, 4),
    # mask sizes that do not divide the input: the area-interpolation paths
    "odd-finest": (SMALL.replace(strides=(12, 12, 16, 32, 32)), 4, 6),
    "odd-coarse": (SMALL.replace(strides=(8, 8, 16, 32, 96)), 4, 6),
}


@pytest.mark.parametrize("name", list(CROSS_CHECK))
def test_matches_the_slow_reference_on_random_images(name):
    cfg, num_images, max_objects = CROSS_CHECK[name]
    generator = torch.Generator().manual_seed(list(CROSS_CHECK).index(name))
    positives = 0
    for _ in range(num_images):
        image = random_image(cfg, generator, max_objects)
        got = build_targets(*image, cfg)
        for level, (target, expected) in enumerate(
            zip(got, build_targets_loop(*image, cfg), strict=True)
        ):
            assert torch.equal(target.category, expected.category), f"level {level}"
            assert torch.equal(target.active, expected.active), f"level {level}"
            assert torch.equal(target.masks, expected.masks), f"level {level}"
            positives += int(expected.active.sum())
    assert positives >= 2 * num_images  # the images did exercise the rules


# --- forms, shapes and dtypes ------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_batched_form_equals_the_per_image_form(preset):
    cfg = SOLOConfig.preset(preset)
    generator = torch.Generator().manual_seed(7)
    images = [random_image(cfg, generator, 4) for _ in range(3)]
    batch = build_batch_targets(
        [dict(zip(("boxes", "labels", "masks"), im, strict=True)) for im in images], cfg
    )
    singles = [build_targets(*im, cfg) for im in images]
    assert len(batch) == cfg.num_levels
    for level, t in enumerate(batch):
        s, (h, w) = cfg.num_grids[level], cfg.mask_size(level)
        assert isinstance(t, BatchLevelTarget)
        assert t.category.dtype == torch.int64 and t.category.shape == (3, s, s)
        assert t.active.dtype == torch.bool and t.active.shape == (3, s * s)
        assert t.masks.dtype == torch.uint8 and t.masks.shape == (int(t.active.sum()), h, w)
        assert torch.equal(t.category, torch.stack([one[level].category for one in singles]))
        assert torch.equal(t.active, torch.stack([one[level].active for one in singles]))
        # image-major, then cell k: the order of active.nonzero()
        expected = torch.cat([one[level].masks[one[level].active] for one in singles])
        assert torch.equal(t.masks, expected)
        assert t.masks.flatten(1).any(1).all()  # every active cell has a non-empty mask
    assert sum(int(t.active.sum()) for t in batch) > 0


def test_per_image_form_shapes_and_dtypes():
    cfg = SOLOConfig.cpu()
    targets = build_targets(*random_image(cfg, torch.Generator().manual_seed(3), 5), cfg)
    assert len(targets) == cfg.num_levels
    for level, t in enumerate(targets):
        s = cfg.num_grids[level]
        assert isinstance(t, LevelTarget)
        assert t.category.dtype == torch.int64 and t.category.shape == (s, s)
        assert int(t.category.min()) >= 0 and int(t.category.max()) <= cfg.num_classes
        assert t.active.dtype == torch.bool and t.active.shape == (s * s,)
        assert torch.equal(t.active, t.category.flatten() > 0)
        assert t.masks.dtype == torch.uint8 and t.masks.shape == (s * s, *cfg.mask_size(level))
        assert not t.masks[~t.active].any()


def test_bool_masks_give_the_same_targets():
    image = random_image(SMALL, torch.Generator().manual_seed(11), 6)
    as_uint8 = build_targets(*image, SMALL)
    as_bool = build_targets(image[0], image[1], image[2].bool(), SMALL)
    for a, b in zip(as_uint8, as_bool, strict=True):
        assert torch.equal(a.category, b.category) and torch.equal(a.masks, b.masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_inputs_device():
    image = random_image(SMALL, torch.Generator().manual_seed(5), 6)
    on_cpu = build_batch_targets(
        [dict(zip(("boxes", "labels", "masks"), image, strict=True))], SMALL
    )
    on_gpu = build_batch_targets(
        [dict(zip(("boxes", "labels", "masks"), (x.cuda() for x in image), strict=True))], SMALL
    )
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert b.masks.device.type == "cuda" and b.category.device.type == "cuda"
        assert torch.equal(a.category, b.category.cpu()) and torch.equal(a.masks, b.masks.cpu())


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_names_the_field_and_the_expected_form():
    boxes, labels, masks = rectangles(SMALL, (10, 20, 10, 20, 1))
    good = {"boxes": boxes, "labels": labels, "masks": masks}
    with pytest.raises(ValueError, match=r"targets\[1\]\['masks'\].*\(1, 256, 256\)"):
        build_batch_targets([good, {**good, "masks": masks[:, :100]}], SMALL)
    with pytest.raises(ValueError, match=r"\['labels'\].*1\.\.3"):
        build_batch_targets([{**good, "labels": torch.tensor([4])}], SMALL)
    with pytest.raises(ValueError, match=r"\['labels'\].*int64"):
        build_batch_targets([{**good, "labels": labels.int()}], SMALL)
    with pytest.raises(ValueError, match=r"\['boxes'\].*\(1, 4\)"):
        build_batch_targets([{**good, "boxes": boxes[:, :2]}], SMALL)
    with pytest.raises(ValueError, match="missing tensor 'masks'"):
        build_batch_targets([{"boxes": boxes, "labels": labels}], SMALL)
    with pytest.raises(ValueError, match="non-empty list"):
        build_batch_targets([], SMALL)


def test_an_object_whose_cells_all_go_to_a_smaller_one_owns_none(tiny_config):
    """Concentric squares of 40 and 30 px share their one centre cell on every level they
    are positive on (2 and 3 at 96 x 128); the smaller wins it, the larger owns nothing."""
    cfg = tiny_config
    h, w = cfg.image_size
    masks = torch.zeros((3, h, w), dtype=torch.uint8)
    masks[0, 28:68, 44:84] = 1  # 40 x 40 around (64, 48)
    masks[1, 33:63, 49:79] = 1  # 30 x 30, same centre
    masks[2, 0:30, 0:30] = 1  # 30 x 30 elsewhere, alone
    target = {
        "boxes": torch.tensor([[44.0, 28, 84, 68], [49, 33, 79, 63], [0, 0, 30, 30]]),
        "labels": torch.tensor([2, 2, 1]),
        "masks": masks,
    }
    assert objects_without_cells(target, cfg).tolist() == [True, False, False]
    apart = {
        **target,
        "masks": masks[1:],
        "boxes": target["boxes"][1:],
        "labels": target["labels"][1:],
    }
    assert objects_without_cells(apart, cfg).tolist() == [False, False]
