"""Paired transforms: layout arithmetic, alignment of image, masks and boxes, dropping."""

from __future__ import annotations

import pytest
import torch

from solo_lib.config import SOLOConfig
from solo_lib.data.geometry import ImageGeometry
from solo_lib.data.transforms import (
    Compose,
    Normalize,
    PlaceInInput,
    ToFloatImage,
    build_transforms,
)


def raw_item(h=300, w=400, rects=((40, 60, 140, 120), (300, 10, 390, 290)), labels=(1, 3)):
    """uint8 image with one bright rectangle per object, and its target (source frame)."""
    image = torch.full((3, h, w), 30, dtype=torch.uint8)
    masks = torch.zeros((len(rects), h, w), dtype=torch.uint8)
    for j, (x1, y1, x2, y2) in enumerate(rects):
        masks[j, y1:y2, x1:x2] = 1
        image[:, y1:y2, x1:x2] = 200
    target = {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": masks,
        "boxes": torch.tensor(rects, dtype=torch.float32).reshape(-1, 4),
        "image_id": torch.tensor(0),
    }
    return image, target


def box_of(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


@pytest.mark.parametrize(
    ("preset", "size", "box"),
    [("paper", (800, 1066), (11, 0, 1077, 800)), ("cpu", (256, 341), (5, 0, 346, 256))],
)
def test_padded_layout_of_both_presets(preset, size, box):
    cfg = SOLOConfig.preset(preset)
    geometry = ImageGeometry.fit((300, 400), cfg.image_size)
    assert geometry.content_size == size and geometry.content_box == box
    _, target = build_transforms(cfg, train=False)(*raw_item())
    assert target["geometry"] == geometry and not geometry.flipped


def test_fit_never_exceeds_the_input():
    def content(orig, factor=1.0):
        return ImageGeometry.fit(orig, (256, 352), factor).content_size

    assert content((300, 400), factor=1.3) == (256, 341)
    assert content((300, 400), factor=0.5) == (128, 170)
    assert content((1000, 100)) == (256, 25)
    with pytest.raises(ValueError, match="does not fit"):
        ImageGeometry((300, 400), (256, 352), (300, 400))


@pytest.mark.parametrize("flipped", [False, True])
def test_to_original_inverts_the_placement_of_masks_and_images(flipped):
    """Masks placed in the input and brought back match the originals; a flip is undone."""
    _, target = raw_item()
    geometry = ImageGeometry.fit((300, 400), (256, 352), factor=0.8, flipped=flipped)
    placed = geometry.masks_to_input(target["masks"])
    x1, y1, x2, y2 = geometry.content_box
    assert placed.shape == (2, 256, 352) and placed[:, :, :x1].sum() == 0
    back = geometry.to_original(placed.float()) >= 0.5
    for restored, original in zip(back, target["masks"].bool(), strict=True):
        iou = (restored & original).sum() / (restored | original).sum()
        assert iou > 0.97
    # a horizontal ramp comes back a ramp in the same direction, flipped or not
    ramp = torch.linspace(0, 1, 400).expand(1, 300, 400)
    restored_ramp = geometry.to_original(geometry.image_to_input(ramp))[0]
    assert restored_ramp[150, 10] < 0.1 and restored_ramp[150, 390] > 0.9


def test_boxes_to_input_by_hand():
    """300x400 at factor 0.5: scale 0.32 to 96x128, centred in 256x352 at x 112, y 80."""
    geometry = ImageGeometry.fit((300, 400), (256, 352), factor=0.5)
    assert geometry.content_size == (128, 170)
    boxes = torch.tensor([[0.0, 0.0, 400.0, 300.0], [100.0, 30.0, 200.0, 90.0]])
    x1, y1, _, _ = geometry.content_box
    sx, sy = 170 / 400, 128 / 300
    expected = torch.tensor(
        [[x1, y1, x1 + 170, y1 + 128], [x1 + 100 * sx, y1 + 30 * sy, x1 + 200 * sx, y1 + 90 * sy]]
    )
    torch.testing.assert_close(geometry.boxes_to_input(boxes), expected)
    flipped = ImageGeometry.fit((300, 400), (256, 352), factor=0.5, flipped=True)
    mirrored = flipped.boxes_to_input(boxes)[1]
    torch.testing.assert_close(
        mirrored[[0, 2]], torch.tensor([x1 + 170 - 200 * sx, x1 + 170 - 100 * sx])
    )


@pytest.mark.parametrize("flip", [False, True])
def test_boxes_follow_the_masks_through_resize_pad_and_flip(flip):
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu().replace(hflip_prob=1.0 if flip else 0.0, scale_jitter=(0.6, 0.9))
    image, target = build_transforms(cfg, train=True)(*raw_item())
    assert set(target["masks"].unique().tolist()) <= {0, 1}
    x1, y1, x2, y2 = target["geometry"].content_box
    assert x2 - x1 < 341 and y2 - y1 < 256  # jittered below the fit size
    assert target["geometry"].flipped == flip
    for mask, box in zip(target["masks"], target["boxes"], strict=True):
        torch.testing.assert_close(box, box_of(mask), atol=1.0, rtol=0)
        assert x1 <= box[0] and box[2] <= x2 and y1 <= box[1] and box[3] <= y2
    # the first object sits left of the second in the source; a flip swaps that
    left_first = target["boxes"][0, 0] < target["boxes"][1, 0]
    assert bool(left_first) != flip
    # the masks cover the bright pixels of the image
    content = image[0, y1:y2, x1:x2]
    bright = content > content[1, 1] + 1.0
    inside = target["masks"][:, y1:y2, x1:x2].bool().any(dim=0)
    assert (bright & inside).sum() / bright.sum() > 0.95


def test_normalise_and_pad_values():
    cfg = SOLOConfig.cpu()
    mean = torch.tensor(cfg.pixel_mean)
    image = (mean * 255).round().to(torch.uint8).view(3, 1, 1).expand(3, 300, 400).clone()
    target = {
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 300, 400, dtype=torch.uint8),
        "boxes": torch.zeros(0, 4),
    }
    out, t = build_transforms(cfg, train=False)(image, target)
    assert out.abs().max() < 0.02  # mean colour -> 0, padding -> exactly 0
    assert (
        t["masks"].shape == (0, 256, 352)
        and t["boxes"].shape == (0, 4)
        and t["labels"].shape == (0,)
    )


def test_objects_that_vanish_are_dropped_with_label_and_box():
    image, target = raw_item(rects=((10, 10, 12, 12), (100, 100, 300, 250)), labels=(2, 1))
    steps = Compose([ToFloatImage(), Normalize((0, 0, 0), (1, 1, 1)), PlaceInInput((32, 32))])
    _, out = steps(image, target)
    assert out["labels"].tolist() == [1]
    assert out["masks"].shape == (1, 32, 32) and out["boxes"].shape == (1, 4)
    torch.testing.assert_close(out["boxes"][0], box_of(out["masks"][0]), atol=1.0, rtol=0)


def test_every_transform_returns_plain_tensors():
    image, target = raw_item()
    for step in (
        ToFloatImage(),
        Normalize((0, 0, 0), (1, 1, 1)),
        PlaceInInput((160, 192), jitter=(0.8, 0.8), flip_prob=1.0),
    ):
        image, target = step(image, target)
        assert type(image) is torch.Tensor
        assert type(target["masks"]) is torch.Tensor and type(target["boxes"]) is torch.Tensor


def test_train_transforms_are_reproducible_from_the_torch_seed():
    cfg = SOLOConfig.cpu()
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append([build_transforms(cfg, train=True)(*raw_item())[1]["boxes"] for _ in range(4)])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b)
