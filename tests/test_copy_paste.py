"""Simple Copy-Paste on a batch: hand-made cases and invariants over seeded random draws."""

from __future__ import annotations

import pytest
import torch

from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.data.copy_paste import copy_paste


def _square(h: int, w: int, rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.uint8)
    mask[rows, cols] = 1
    return mask


def _hand_batch() -> tuple[torch.Tensor, list[dict]]:
    """Image 0 (all 0.0): a 6x6 square, label 1, and a 2x2 square, label 3. Image 1
    (all 1.0): a 4x4 square, label 2, that covers the 2x2 square and a corner of the 6x6."""
    big = _square(10, 10, slice(0, 6), slice(0, 6))
    small = _square(10, 10, slice(7, 9), slice(7, 9))
    other = _square(10, 10, slice(4, 10), slice(4, 10)) & _square(10, 10, slice(0, 8), slice(0, 8))
    images = torch.stack([torch.zeros(3, 10, 10), torch.ones(3, 10, 10)])
    targets = [
        {
            "masks": torch.stack([big, small]),
            "labels": torch.tensor([1, 3]),
            "boxes": torch.tensor([[0.0, 0, 6, 6], [7, 7, 9, 9]]),
            "image_id": torch.tensor(10),
        },
        {
            "masks": other[None],
            "labels": torch.tensor([2]),
            "boxes": torch.tensor([[4.0, 4, 8, 8]]),
            "image_id": torch.tensor(11),
        },
    ]
    return images, targets


def test_pasting_image_1s_object_onto_image_0_by_hand():
    images, targets = _hand_batch()
    for seed in range(50):  # find a draw that pastes into image 0 (image 1's only object)
        torch.manual_seed(seed)
        out_images, out = copy_paste(images, targets, prob=1.0, min_area=4)
        if out[0]["labels"].tolist() != [1, 3]:
            break
    else:
        pytest.fail("no draw pasted into image 0")
    # The 4x4 square (rows and cols 4..7) now lies on top. The 2x2 square (rows and
    # cols 7..8) loses pixel (7, 7); 3 pixels are fewer than min_area 4: dropped. The
    # 6x6 square loses its corner (rows and cols 4..5), 4 pixels, and keeps its box;
    # image 0 shows image 1's value 1.0 under the pasted square.
    assert out[0]["labels"].tolist() == [1, 2]
    pasted = targets[1]["masks"][0].bool()
    assert torch.equal(out_images[0][0], pasted.float())
    expected_big = targets[0]["masks"][0].bool() & ~pasted
    assert int(expected_big.sum()) == 36 - 4
    assert torch.equal(out[0]["masks"][0].bool(), expected_big)
    assert torch.equal(out[0]["masks"][1], targets[1]["masks"][0])
    assert out[0]["boxes"].tolist() == [[0, 0, 6, 6], [4, 4, 8, 8]]
    assert out[0]["image_id"] == 10  # other keys kept
    # The inputs are not changed in place.
    assert images[0].sum() == 0 and len(targets[0]["labels"]) == 2


def test_a_covered_objects_box_shrinks_to_its_visible_part():
    """A 2x6 bar (rows 0-1, cols 0-5) whose right half is covered: box x2 6 -> 3."""
    bar = _square(4, 8, slice(0, 2), slice(0, 6))
    cover = _square(4, 8, slice(0, 4), slice(3, 8))
    images = torch.stack([torch.zeros(3, 4, 8), torch.ones(3, 4, 8)])
    targets = [
        {"masks": bar[None], "labels": torch.tensor([1]), "boxes": torch.tensor([[0.0, 0, 6, 2]])},
        {
            "masks": cover[None],
            "labels": torch.tensor([2]),
            "boxes": torch.tensor([[3.0, 0, 8, 4]]),
        },
    ]
    for seed in range(50):
        torch.manual_seed(seed)
        _, out = copy_paste(images, targets, prob=1.0, min_area=1)
        if out[0]["labels"].tolist() == [1, 2]:
            break
    else:
        pytest.fail("no draw pasted into image 0")
    assert out[0]["boxes"][0].tolist() == [0, 0, 3, 2]


def test_probability_zero_and_single_images_change_nothing():
    images, targets = _hand_batch()
    out_images, out = copy_paste(images, targets, prob=0.0)
    assert out_images is images and out is targets
    out_images, out = copy_paste(images[:1], targets[:1], prob=1.0)
    assert torch.equal(out_images, images[:1]) and out[0] is targets[0]


@pytest.mark.parametrize("seed", range(3))
def test_builtin_batches_gain_objects_and_keep_one_owner_per_pixel(seed):
    """On real batches (whose masks are the visible parts, so disjoint): after pasting
    every pixel still belongs to at most one object, every mask keeps at least 16
    pixels inside its box (to a pixel: the data sets resize boxes and masks separately),
    and the batch holds more objects than before."""
    cfg = SOLOConfig.cpu().replace(seed=seed)
    data = SOLODataModule(cfg, max_images=12)
    data.setup("fit")
    images, targets = next(iter(data.val_dataloader()))
    assert all(t["masks"].sum(0).max() <= 1 for t in targets)  # disjoint before
    torch.manual_seed(seed)
    _, out = copy_paste(images, targets, prob=1.0)
    assert sum(len(t["labels"]) for t in out) > sum(len(t["labels"]) for t in targets)
    for target in out:
        masks = target["masks"].bool()
        assert len(masks) == len(target["labels"]) == len(target["boxes"])
        assert int(masks.sum(0).max()) <= 1
        for mask, (x1, y1, x2, y2) in zip(masks, target["boxes"].tolist(), strict=True):
            rows, cols = mask.nonzero(as_tuple=True)
            assert len(rows) >= 16
            assert x1 - 1 <= cols.min() and cols.max() < x2 + 1
            assert y1 - 1 <= rows.min() and rows.max() < y2 + 1
