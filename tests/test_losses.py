"""Focal and dice losses, SOLO's combined loss, its flattening order, and a one-batch overfit."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from solo_lib.analysis import perfect_output
from solo_lib.config import SOLOConfig
from solo_lib.losses import dice_loss, focal_loss, solo_loss
from solo_lib.model import SOLO, SOLOOutput
from solo_lib.targets import build_batch_targets, build_targets

#: (top, left, height, width, label) rectangles, in input pixels of a 256 x 352 image.
OBJECTS_256 = [
    [(30, 40, 24, 30, 1), (150, 220, 70, 50, 2), (100, 60, 120, 160, 3)],
    [(200, 300, 20, 28, 2), (40, 150, 60, 40, 1)],
]


def _target(objects: list[tuple[int, int, int, int, int]], image_size: tuple[int, int]) -> dict:
    """A target dict (boxes, labels, masks) of filled rectangles; ellipses make centres differ."""
    h, w = image_size
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks, boxes, labels = [], [], []
    for top, left, oh, ow, label in objects:
        cy, cx = top + oh / 2, left + ow / 2
        inside = ((ys + 0.5 - cy) / (oh / 2)) ** 2 + ((xs + 0.5 - cx) / (ow / 2)) ** 2 <= 1
        masks.append(inside.to(torch.uint8))
        boxes.append([left, top, left + ow, top + oh])
        labels.append(label)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks),
    }


def test_focal_loss_matches_torchvision() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 3, generator=generator) * 4
    targets = (torch.rand(500, 3, generator=generator) < 0.2).float()
    for alpha, gamma in [(0.25, 2.0), (0.5, 0.0), (0.9, 1.5)]:
        ours = focal_loss(logits, targets, alpha, gamma)
        reference = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction="none")
        assert torch.allclose(ours, reference, atol=1e-6)


def test_focal_loss_weights_positives_by_alpha() -> None:
    logits = torch.zeros(4)  # p = 0.5, so (1 - p_t)^gamma = 0.25 and -log p_t = log 2
    positive = focal_loss(logits, torch.ones(4), alpha=0.25, gamma=2.0)
    negative = focal_loss(logits, torch.zeros(4), alpha=0.25, gamma=2.0)
    assert torch.allclose(positive, torch.full((4,), 0.25 * 0.25 * math.log(2)))
    assert torch.allclose(negative, torch.full((4,), 0.75 * 0.25 * math.log(2)))


def test_focal_loss_down_weights_easy_examples() -> None:
    easy, hard = focal_loss(torch.tensor([4.0, -4.0]), torch.tensor([1.0, 1.0]), 0.25, 2.0)
    assert easy < 1e-4 < hard


def test_dice_loss_perfect_disjoint_and_shapes() -> None:
    target = torch.zeros(3, 8, 8, dtype=torch.uint8)
    target[0, 2:5, 2:6] = 1
    target[1, :, :4] = 1
    target[2, 6:, 6:] = 1
    perfect = dice_loss(target.float(), target)
    assert perfect.shape == (3,) and (perfect < 1e-3).all()
    disjoint = dice_loss(1.0 - target.float(), target)
    assert torch.allclose(disjoint, torch.ones(3))
    half = dice_loss(torch.full((3, 8, 8), 0.5), target)
    area = target.flatten(1).sum(1).float()
    assert torch.allclose(half, 1 - area / (0.25 * 64 + area), atol=1e-4)
    with pytest.raises(ValueError, match="same shape"):
        dice_loss(torch.zeros(2, 8, 8), target)


def test_solo_loss_is_zero_for_a_perfect_prediction_in_the_right_order() -> None:
    """Two images with objects on several levels: only the shared flattening order gives 0."""
    cfg = SOLOConfig.cpu()
    targets = [_target(objects, cfg.image_size) for objects in OBJECTS_256]
    batch_targets = build_batch_targets(targets, cfg)
    levels_with_positives = [t.active.any(dim=1).tolist() for t in batch_targets]
    assert sum(all(both) for both in levels_with_positives) >= 2  # both images, several levels

    output = perfect_output(targets, cfg)
    losses = solo_loss(output, batch_targets, cfg)
    assert losses["dice"] < 1e-3 and losses["focal"] < 1e-3

    # The same logits read in another order (rows and columns swapped, or the two images
    # swapped) must not score as perfect.
    transposed = SOLOOutput([c.transpose(2, 3) for c in output.category], output.masks)
    assert solo_loss(transposed, batch_targets, cfg)["focal"] > 1.0
    swapped = SOLOOutput(output.category, [m.flip(0) for m in output.masks])
    assert solo_loss(swapped, batch_targets, cfg)["dice"] > 0.5


def test_solo_loss_matches_a_per_image_per_cell_reference() -> None:
    cfg = SOLOConfig.cpu()
    targets = [_target(objects, cfg.image_size) for objects in OBJECTS_256]
    generator = torch.Generator().manual_seed(0)
    output = SOLOOutput(
        [torch.randn(2, cfg.num_classes, s, s, generator=generator) for s in cfg.num_grids],
        [
            torch.randn(2, s * s, *cfg.mask_size(i), generator=generator)
            for i, s in enumerate(cfg.num_grids)
        ],
    )
    losses = solo_loss(output, build_batch_targets(targets, cfg), cfg)

    focal_sum, num_pos, dices = 0.0, 0, []
    for b, t in enumerate(targets):
        for level, lt in enumerate(build_targets(t["boxes"], t["labels"], t["masks"], cfg)):
            s = cfg.num_grids[level]
            for row in range(s):
                for col in range(s):
                    label = int(lt.category[row, col])
                    onehot = torch.zeros(cfg.num_classes)
                    if label:
                        onehot[label - 1] = 1
                        num_pos += 1
                    logits = output.category[level][b, :, row, col]
                    focal_sum += float(sigmoid_focal_loss(logits, onehot, 0.25, 2.0).sum())
                    k = row * s + col
                    if lt.active[k]:
                        prob = output.masks[level][b, k].sigmoid()
                        dices.append(float(dice_loss(prob[None], lt.masks[k][None])[0]))
    assert num_pos > 0 and len(dices) > 0
    assert math.isclose(float(losses["focal"]), focal_sum / (num_pos + 1), rel_tol=1e-4)
    assert math.isclose(float(losses["dice"]), sum(dices) / len(dices), rel_tol=1e-4)
    expected = cfg.cate_loss_weight * focal_sum / (num_pos + 1) + 3.0 * sum(dices) / len(dices)
    assert math.isclose(float(losses["loss"]), expected, rel_tol=1e-4)


def test_solo_loss_without_objects_is_zero_dice_and_backpropagates() -> None:
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu().replace(image_size=(128, 160), mask_head="vanilla")
    model = SOLO(cfg)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, *cfg.image_size, dtype=torch.uint8),
    }
    losses = solo_loss(
        model(torch.randn(2, 3, *cfg.image_size)), build_batch_targets([empty] * 2, cfg), cfg
    )
    assert losses["dice"].item() == 0.0
    assert 0 < losses["focal"].item() < 0.1  # only negatives, all near the 0.01 prior
    assert torch.equal(losses["loss"], losses["focal"])
    losses["loss"].backward()
    assert model.head.cate_out.weight.grad.abs().sum() > 0
    assert model.head.mask_out[0].weight.grad is not None  # graph connected, gradient 0
    assert model.head.mask_out[0].weight.grad.abs().sum() == 0


def test_untrained_model_mask_loss_starts_near_three() -> None:
    """All mask probabilities start near 0.5: dice = 1 - f / (0.25 + f) for area fraction f."""
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu()
    model = SOLO(cfg)
    small = [[(30, 40, 24, 30, 1), (150, 220, 30, 26, 2)], [(200, 300, 20, 28, 2)]]
    targets = [_target(objects, cfg.image_size) for objects in small]
    losses = solo_loss(
        model(torch.randn(2, 3, *cfg.image_size)), build_batch_targets(targets, cfg), cfg
    )
    assert 2.7 < cfg.mask_loss_weight * losses["dice"].item() <= 3.0
    assert math.isfinite(losses["focal"].item()) and 0.3 < losses["focal"].item() < 1.2


def test_one_batch_overfit_reduces_both_losses() -> None:
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu().replace(image_size=(128, 160))
    objects = [
        [(10, 20, 14, 18, 1), (60, 80, 50, 60, 2)],
        [(30, 30, 80, 70, 3), (90, 120, 20, 16, 1)],
    ]
    targets = [_target(o, cfg.image_size) for o in objects]
    images = torch.randn(2, 3, *cfg.image_size) * 0.1
    for b, t in enumerate(targets):
        for mask, label in zip(t["masks"], t["labels"], strict=True):
            images[b, int(label) - 1] += mask.float()  # one colour channel per class
    batch_targets = build_batch_targets(targets, cfg)
    model = SOLO(cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        losses = solo_loss(model(images), batch_targets, cfg)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append((losses["focal"].item(), losses["dice"].item()))
    (focal0, dice0), (focal1, dice1) = history[0], history[-1]
    assert focal1 < 0.7 * focal0, history
    assert dice1 < 0.7 * dice0, history
