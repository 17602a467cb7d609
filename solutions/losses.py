"""Reference solutions of notebook 03's exercises: the focal loss and the dice loss."""

import torch
import torch.nn.functional as F


def my_focal_loss(
    logits: torch.Tensor, targets_onehot: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Focal loss per entry: logits (N, C), targets_onehot (N, C) 0/1 -> (N, C)."""
    targets = targets_onehot.float()
    p = logits.sigmoid()
    p_t = p * targets + (1 - p) * (1 - targets)  # the probability of the true answer
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)  # alpha for positives
    # -log(p_t), computed from the logits: log(sigmoid) of a large logit stays finite
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_t * (1 - p_t) ** gamma * ce


def my_dice_loss(pred_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss per mask: (P, h, w) probabilities and 0/1 targets -> (P,)."""
    p = pred_probs.flatten(1)  # (P, h * w)
    q = targets.flatten(1).float()
    return 1 - 2 * (p * q).sum(1) / ((p * p).sum(1) + (q * q).sum(1) + 1e-3)
