"""Post-processing: points NMS, Matrix NMS against a plain loop, and the whole chain."""

import math

import pytest
import torch

from solo_lib import postprocess as postprocess_module
from solo_lib.config import SOLOConfig
from solo_lib.data import ImageGeometry
from solo_lib.postprocess import (
    mask_iou,
    masks_to_original,
    matrix_nms,
    points_nms,
    postprocess,
    rescore_by_maskness,
    select_cells,
    suppress,
)


def reference_matrix_nms(masks, labels, scores, kernel, sigma):
    """Matrix NMS written as the SOLOv2 paper states it, one pair at a time."""
    masks, labels, scores = masks.tolist(), labels.tolist(), scores.tolist()

    def iou(i, j):
        a = [p for row in masks[i] for p in row]
        b = [p for row in masks[j] for p in row]
        inter = sum(x and y for x, y in zip(a, b, strict=True))
        union = sum(x or y for x, y in zip(a, b, strict=True))
        return inter / union if union else 0.0

    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    decayed = [0.0] * len(scores)
    for pos_j, j in enumerate(order):
        decay = 1.0
        for pos_i in range(pos_j):
            i = order[pos_i]
            if labels[i] != labels[j]:
                continue
            higher = [k for k in order[:pos_i] if labels[k] == labels[i]]
            comp = max((iou(k, i) for k in higher), default=0.0)
            if kernel == "gaussian":
                value = math.exp(-sigma * (iou(i, j) ** 2 - comp**2))
            else:
                value = (1 - iou(i, j)) / (1 - comp)
            decay = min(decay, value)
        decayed[j] = scores[j] * decay
    return torch.tensor(decayed)


def random_rectangles(n, height, width, generator):
    """`n` bool masks (n, H, W), each a random rectangle: many partial overlaps."""
    masks = torch.zeros((n, height, width), dtype=torch.bool)
    for k in range(n):
        y1 = int(torch.randint(0, height - 4, (1,), generator=generator))
        x1 = int(torch.randint(0, width - 4, (1,), generator=generator))
        y2 = y1 + int(torch.randint(3, height - y1 + 1, (1,), generator=generator))
        x2 = x1 + int(torch.randint(3, width - x1 + 1, (1,), generator=generator))
        masks[k, y1:y2, x1:x2] = True
    return masks


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_nms_matches_plain_loop(kernel, seed):
    generator = torch.Generator().manual_seed(seed)
    n = 14
    masks = random_rectangles(n, 12, 16, generator)
    labels = torch.randint(1, 4, (n,), generator=generator)
    scores = torch.rand(n, generator=generator)  # arbitrary input order, not sorted
    got = matrix_nms(masks, labels, scores, kernel=kernel, sigma=2.0)
    expected = reference_matrix_nms(masks, labels, scores, kernel, 2.0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got <= scores + 1e-7).all()


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_duplicate_of_best_and_other_classes(kernel):
    best = torch.zeros(10, 10, dtype=torch.bool)
    best[2:8, 2:8] = True
    other = torch.zeros(10, 10, dtype=torch.bool)
    other[3:9, 3:9] = True
    # Input order is not the score order: the duplicate comes first.
    masks = torch.stack([best, other, best, best])
    labels = torch.tensor([1, 2, 1, 3])
    scores = torch.tensor([0.7, 0.6, 0.9, 0.5])
    got = matrix_nms(masks, labels, scores, kernel=kernel, sigma=2.0)
    duplicate = 0.7 * math.exp(-2.0) if kernel == "gaussian" else 0.0
    torch.testing.assert_close(got, torch.tensor([duplicate, 0.6, 0.9, 0.5]))


def test_matrix_nms_empty_single_and_bad_input():
    empty = matrix_nms(
        torch.zeros((0, 5, 5), dtype=torch.bool), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    )
    assert empty.shape == (0,)
    single = matrix_nms(
        torch.ones((1, 5, 5), dtype=torch.bool), torch.tensor([2]), torch.tensor([0.3])
    )
    torch.testing.assert_close(single, torch.tensor([0.3]))
    with pytest.raises(ValueError, match="bool tensor"):
        matrix_nms(torch.rand(2, 5, 5), torch.tensor([1, 1]), torch.tensor([0.5, 0.4]))
    with pytest.raises(ValueError, match="one N"):
        matrix_nms(torch.ones((2, 5, 5), dtype=torch.bool), torch.tensor([1]), torch.tensor([0.5]))


def test_pairwise_intersection_int8_path_and_float_fallback_agree(monkeypatch):
    """The private torch._int_mm path (when this torch has it) and the fallback give one answer."""
    from solo_lib import postprocess as module

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(7, 300, generator=generator) > 0.5
    b = torch.rand(5, 300, generator=generator) > 0.3
    expected = torch.tensor([[float((x & y).sum()) for y in b] for x in a])
    fast = module.pairwise_intersection(a, b)
    monkeypatch.setattr(module, "_cpu_int8_matmul_available", lambda: False)
    fallback = module.pairwise_intersection(a, b)
    assert torch.equal(fast, expected) and torch.equal(fallback, expected)


def test_pairwise_intersection_counts_exactly_under_bf16_autocast(monkeypatch):
    """Validation runs under bf16 autocast: the float matmul (the GPU's path, forced here)
    must still count 1001 shared pixels, which bf16's 8-bit significand rounds to 1000."""
    from solo_lib import postprocess as module

    monkeypatch.setattr(module, "_cpu_int8_matmul_available", lambda: False)
    a = torch.zeros(1, 2000, dtype=torch.bool)
    a[0, :1001] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inter = module.pairwise_intersection(a, a)
    assert inter.dtype == torch.float32 and inter.item() == 1001


def test_mask_iou_known_values():
    a = torch.zeros((2, 4, 4), dtype=torch.bool)
    a[0, :2] = True  # 8 pixels
    a[1, :, :1] = True  # 4 pixels
    b = torch.zeros((1, 4, 4), dtype=torch.bool)
    b[0, :1] = True  # 4 pixels, inside a[0]; shares 1 pixel with a[1]
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([[0.5], [1 / 7]]))
    none = torch.zeros((0, 4, 4), dtype=torch.bool)  # no masks: an image without detections
    assert mask_iou(none).shape == (0, 0)
    assert mask_iou(none, b).shape == (0, 1) and mask_iou(a, none).shape == (2, 0)


def test_points_nms_keeps_2x2_window_maxima():
    heat = torch.tensor(
        [
            [[0.1, 0.5, 0.2], [0.3, 0.4, 0.9], [0.6, 0.2, 0.1]],
            [[0.9, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.8]],
        ]
    )[None]  # (1, 2, 3, 3): the window of (i, j) is (i-1..i, j-1..j)
    expected = torch.tensor(
        [
            [[0.1, 0.5, 0.0], [0.3, 0.0, 0.9], [0.6, 0.0, 0.0]],
            [[0.9, 0.0, 0.1], [0.0, 0.0, 0.1], [0.1, 0.1, 0.8]],  # ties with the max stay
        ]
    )[None]
    torch.testing.assert_close(points_nms(heat), expected)


# --- the whole chain on hand-made probability maps ----------------------------------------
@pytest.fixture()
def small_config():
    """Input 64x96; level-0 masks 16x24 (input / 4), level-2 masks 8x12."""
    return SOLOConfig.cpu().replace(name="small", image_size=(64, 96), num_grids=(8, 6, 4, 3, 2))


def blank_maps(cfg, batch):
    category = [torch.full((batch, cfg.num_classes, s, s), 0.01) for s in cfg.num_grids]
    masks = [
        torch.full((batch, s * s, *cfg.mask_size(level)), 0.02)
        for level, s in enumerate(cfg.num_grids)
    ]
    return category, masks


# A 16x20 image is scaled by 4 to 64x80 and padded by 8 columns on the left: in the
# level-0 mask frame (input / 4) the content is rows 0..16, columns 2..22.
META = {"geometry": ImageGeometry((16, 20), (64, 96), (64, 80))}


def add_objects(category, masks, b):
    """A class-2 object on level 0 and a class-3 object on level 2, in image `b`."""
    category[0][b, 1, 3, 4] = 0.9
    masks[0][b, 3 * 8 + 4, 4:10, 2 + 5 : 2 + 13] = 0.95  # original rows 4..10, cols 5..13
    category[2][b, 2, 2, 2] = 0.8
    masks[2][b, 2 * 4 + 2, 4:7, 6:10] = 0.9  # level-0 frame rows 8..14, cols 12..20


def test_postprocess_finds_objects_in_the_original_frame(small_config):
    category, masks = blank_maps(small_config, 1)
    add_objects(category, masks, 0)
    (result,) = postprocess(category, masks, [META], small_config)

    assert result["masks"].dtype == torch.bool and result["masks"].shape == (2, 16, 20)
    assert result["labels"].dtype == torch.int64 and result["scores"].dtype == torch.float32
    assert result["labels"].tolist() == [2, 3]
    assert result["scores"][0].item() == pytest.approx(0.9 * 0.95)  # score * maskness
    assert 0.8 * 0.7 < result["scores"][1].item() <= 0.8 * 0.9

    first = torch.zeros(16, 20, dtype=torch.bool)
    first[4:10, 5:13] = True
    assert torch.equal(result["masks"][0], first)
    second = torch.zeros(1, 16, 20, dtype=torch.bool)
    second[0, 8:14, 10:18] = True  # level-0 columns 12..20 minus the 2 padding columns
    assert mask_iou(result["masks"][1:], second).item() > 0.7


def test_postprocess_zero_detections_and_empty_image_in_batch(small_config):
    category, masks = blank_maps(small_config, 2)
    add_objects(category, masks, 1)
    metas = [
        {"geometry": ImageGeometry.fit((30, 40), (64, 96))},  # content 64x85 at x = 5
        META,
    ]
    empty, full = postprocess(category, masks, metas, small_config)
    assert empty["masks"].shape == (0, 30, 40) and empty["masks"].dtype == torch.bool
    assert empty["labels"].shape == (0,) and empty["scores"].shape == (0,)
    assert full["labels"].tolist() == [2, 3]

    below = postprocess(category, masks, metas, small_config, score_threshold=0.95)
    assert [r["scores"].numel() for r in below] == [0, 0]


def test_postprocess_matrix_nms_decays_a_repeated_object(small_config):
    category, masks = blank_maps(small_config, 1)
    add_objects(category, masks, 0)
    # A second level-0 cell, outside the first one's 2x2 window, predicts the same mask.
    category[0][0, 1, 6, 1] = 0.8
    masks[0][0, 6 * 8 + 1] = masks[0][0, 3 * 8 + 4]
    (result,) = postprocess(category, masks, [META], small_config)
    assert result["labels"].tolist() == [2, 3, 2]
    assert result["scores"][2].item() == pytest.approx(0.8 * 0.95 * math.exp(-2.0), rel=1e-5)


def test_steps_compose_to_postprocess(small_config):
    category, masks = blank_maps(small_config, 1)
    add_objects(category, masks, 0)
    peaks = [points_nms(c)[0] for c in category]
    candidates = select_cells(peaks, [m[0] for m in masks], small_config)
    assert candidates.masks.shape == (2, 16, 24)  # both levels at the level-0 mask size
    assert sorted(candidates.levels.tolist()) == [0, 2]
    rescored = rescore_by_maskness(candidates, small_config)
    assert (rescored.scores < candidates.scores.sort(descending=True).values).all()
    kept = suppress(rescored, small_config)
    torch.testing.assert_close(kept.scores, rescored.scores)  # two classes: nothing decays


def test_one_cell_gives_a_candidate_for_each_class_above_the_threshold(small_config):
    """mmdetection thresholds the (cells x classes) scores: a cell can hold two classes."""
    category, masks = blank_maps(small_config, 1)
    add_objects(category, masks, 0)
    category[0][0, 2, 3, 4] = 0.5  # the class-2 cell also scores 0.5 for class 3
    category[0][0, 0, 3, 4] = 0.05  # and 0.05 for class 1: below the threshold 0.1
    peaks = [points_nms(c)[0] for c in category]
    candidates = select_cells(peaks, [m[0] for m in masks], small_config)
    assert candidates.labels.tolist() == [2, 3, 3]  # level 0: cell 28 for classes 2, 3
    assert candidates.cells.tolist() == [28, 28, 10]
    assert candidates.scores.tolist() == pytest.approx([0.9, 0.5, 0.8])
    assert torch.equal(candidates.masks[0], candidates.masks[1])  # one cell, one mask
    (result,) = postprocess(category, masks, [META], small_config)
    assert sorted(result["labels"].tolist()) == [2, 3, 3]  # other classes: no decay


def test_nms_pre_keeps_the_best_scores_after_maskness(small_config):
    """The cut to nms_pre uses score x maskness: a vague mask loses to a crisp one."""
    category, masks = blank_maps(small_config, 1)
    category[0][0, 0, 1, 1] = 0.9  # higher category score, vague mask (p = 0.55)
    masks[0][0, 1 * 8 + 1, 0:4, 0:4] = 0.55
    category[0][0, 1, 5, 5] = 0.8  # lower category score, crisp mask (p = 1)
    masks[0][0, 5 * 8 + 5, 8:12, 8:12] = 1.0
    peaks = [points_nms(c)[0] for c in category]
    candidates = select_cells(peaks, [m[0] for m in masks], small_config)
    assert candidates.labels.tolist() == [1, 2]  # both pass: no cut before maskness
    kept = rescore_by_maskness(candidates, small_config.replace(nms_pre=1))
    assert kept.labels.tolist() == [2]
    assert kept.scores.tolist() == pytest.approx([0.8])


def test_a_mask_no_larger_than_its_levels_stride_is_dropped_unless_min_mask_area_says(
    small_config,
):
    """SOLO's rule keeps a mask only above its level's stride (8 pixels on level 0): a
    crisp 2 x 4 = 8-pixel mask is dropped, a 3 x 3 one kept. ``min_mask_area`` replaces
    the stride for every level: at 0 the 8-pixel mask is kept, at 9 the 9-pixel one not."""
    category, masks = blank_maps(small_config, 1)
    category[0][0, 0, 1, 1] = 0.9
    masks[0][0, 1 * 8 + 1, 0:2, 0:4] = 0.95  # 8 pixels
    category[0][0, 1, 5, 5] = 0.8
    masks[0][0, 5 * 8 + 5, 8:11, 8:11] = 0.95  # 9 pixels
    peaks = [points_nms(c)[0] for c in category]
    candidates = select_cells(peaks, [m[0] for m in masks], small_config)
    assert candidates.labels.tolist() == [1, 2]
    assert rescore_by_maskness(candidates, small_config).labels.tolist() == [2]
    relaxed = small_config.replace(min_mask_area=0)
    assert sorted(rescore_by_maskness(candidates, relaxed).labels.tolist()) == [1, 2]
    stricter = small_config.replace(min_mask_area=9)
    assert rescore_by_maskness(candidates, stricter).labels.tolist() == []


def test_postprocess_rejects_wrong_shapes(small_config):
    category, masks = blank_maps(small_config, 1)
    with pytest.raises(ValueError, match=r"mask_probs\[1\]"):
        postprocess(category, [masks[0], masks[0], *masks[2:]], [META], small_config)
    with pytest.raises(ValueError, match="1 metas"):
        postprocess([c.repeat(2, 1, 1, 1) for c in category], masks, [META], small_config)
    with pytest.raises(KeyError, match="geometry"):
        add_objects(category, masks, 0)
        postprocess(category, masks, [{"orig_size": (16, 20)}], small_config)


def test_masks_go_back_to_the_original_a_few_at_a_time(monkeypatch):
    """Chunked (as for a photo of many megapixels) equals all at once, flip included."""
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu()
    geometry = ImageGeometry((300, 400), cfg.image_size, (240, 320), flipped=True)
    masks = torch.rand(7, 64, 88)
    expected = geometry.to_original(masks) > cfg.mask_threshold
    monkeypatch.setattr(postprocess_module, "ORIGINAL_CHUNK_PIXELS", 2 * 300 * 400)  # 2 per chunk
    chunked = masks_to_original(masks, geometry, cfg)
    assert chunked.dtype == torch.bool and torch.equal(chunked, expected)
