"""Exercises of notebook 03: the focal loss (5.1) and the dice loss (6.1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from solo_lib.exercises.check import Case, run_check
from solo_lib.losses import dice_loss, focal_loss


# --- focal loss (notebook 03) ------------------------------------------------------------
def _focal_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    hand = Case(
        "hand-made logits [[2, -1, 0], [-3, 0.5, 4]] with one positive per row (alpha "
        "0.25, gamma 2)",
        (
            torch.tensor([[2.0, -1.0, 0.0], [-3.0, 0.5, 4.0]]),
            torch.tensor([[1, 0, 0], [0, 0, 1]]),
            0.25,
            2.0,
        ),
    )
    random = Case(
        "seeded random logits (64, 3), 10 % positives (alpha 0.25, gamma 2)",
        (
            3 * torch.randn(64, 3, generator=generator),
            (torch.rand(64, 3, generator=generator) < 0.1).long(),
            0.25,
            2.0,
        ),
    )
    other = Case(
        "seeded random logits (16, 2), alpha 0.5, gamma 0 (plain cross-entropy / 2)",
        (
            torch.randn(16, 2, generator=generator),
            (torch.rand(16, 2, generator=generator) < 0.5).long(),
            0.5,
            0.0,
        ),
    )
    return [hand, random, other]


def _focal_swapped_alpha(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    return focal_loss(logits, targets, 1 - alpha, gamma)


def _focal_without_modulation(
    logits: Tensor, targets: Tensor, alpha: float, gamma: float
) -> Tensor:
    return focal_loss(logits, targets, alpha, 0.0)


def _focal_without_alpha(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    return focal_loss(logits, targets, 0.5, gamma) * 2


def _focal_on_probabilities(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    return focal_loss(logits.sigmoid(), targets, alpha, gamma)


def check_focal_loss(fn: Callable[[Tensor, Tensor, float, float], Tensor]) -> Callable:
    """Check ``fn(logits, targets_onehot, alpha, gamma)``: the focal loss per entry.

    logits (N, C) float; targets_onehot (N, C) 0/1; returns (N, C), the loss of every
    entry, not summed: FL = -alpha_t (1 - p_t)^gamma log p_t with p = sigmoid(logit).
    """
    return run_check(
        "focal_loss",
        fn,
        focal_loss,
        _focal_cases(),
        {
            "is alpha applied to the negatives (alpha and 1 - alpha swapped)?": _focal_swapped_alpha,
            "is the modulating factor (1 - p_t)^gamma missing?": _focal_without_modulation,
            "is alpha_t missing (every entry weighted 1)?": _focal_without_alpha,
            "is the sigmoid applied twice (the inputs are logits, not probabilities)?": (
                _focal_on_probabilities
            ),
        },
    )


# --- dice loss (notebook 03) -------------------------------------------------------------
def _dice_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(1)
    square = torch.zeros(1, 4, 4)
    square[0, 1:3, 1:3] = 1
    half = square.clone()
    half[0, 1:3, 1] = 0.5
    hand = Case(
        "a hand-made 2x2 square target and a prediction at 1 and 0.5 on it (dice 1 - 2 * 3 / "
        "(2.5 + 4))",
        (half, square),
    )
    random = Case(
        "seeded random predictions and targets (5, 8, 8)",
        (
            torch.rand(5, 8, 8, generator=generator),
            (torch.rand(5, 8, 8, generator=generator) < 0.3).float(),
        ),
    )
    empty = Case(
        "an all-zero prediction of an all-zero target (eps keeps it finite)",
        (torch.zeros(2, 3, 3), torch.zeros(2, 3, 3)),
    )
    return [hand, random, empty]


def _dice_plain_denominator(p: Tensor, q: Tensor) -> Tensor:
    p, q = p.flatten(1), q.flatten(1).float()
    return 1 - 2 * (p * q).sum(1) / (p.sum(1) + q.sum(1) + 1e-3)


def _dice_coefficient(p: Tensor, q: Tensor) -> Tensor:
    return 1 - dice_loss(p, q)


def _dice_over_batch(p: Tensor, q: Tensor) -> Tensor:
    return dice_loss(p.reshape(1, -1, 1), q.reshape(1, -1, 1).float()).expand(p.shape[0])


def check_dice_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable:
    """Check ``fn(pred_probs, targets)``: the dice loss of each mask.

    pred_probs (P, h, w) probabilities; targets (P, h, w) 0/1; returns (P,):
    1 - 2 sum(p q) / (sum p^2 + sum q^2 + eps), eps = 1e-3, sums over each mask's pixels.
    """
    return run_check(
        "dice_loss",
        fn,
        dice_loss,
        _dice_cases(),
        {
            "is the denominator sum p + sum q instead of sum p^2 + sum q^2 (SOLO squares them)?": (
                _dice_plain_denominator
            ),
            "is it the dice coefficient (1 for a perfect mask) instead of 1 minus it?": (
                _dice_coefficient
            ),
            "are the sums taken over the whole batch instead of over each mask?": _dice_over_batch,
        },
        atol=1e-4,
    )
