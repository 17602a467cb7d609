"""SOLO's loss: focal loss on the category grids plus 3 x dice loss on the positive masks.

L = cate_loss_weight * L_focal + mask_loss_weight * L_dice (1 and 3 in the paper).

Flattening order, shared by predictions and targets (a mismatch here trains the
network on the wrong cells without any error):
- category: per level, logits (B, C, S, S) -> (B, S, S, C) -> (B*S*S, C) and target
  (B, S, S) -> (B*S*S,), i.e. image-major, then row, then column; levels are
  concatenated in order.
- masks: per level, logits (B, S*S, h, w)[active] with ``active`` (B, S*S), which
  walks image-major then cell k = row*S + col: the order in which
  ``solo_lib.targets.build_batch_targets`` stacks the target masks. A training
  forward with ``active`` returns these (P, h, w) masks directly, in the same order.

Normalisation:
- focal: summed over every cell and class, divided by (number of positive cells
  + 1), as mmdetection does. Dividing by all B*S*S*C entries (the CIS 680 handout)
  would make the loss ~1e-4 and depend on the grid sizes; the +1 keeps a batch
  with no objects finite.
- dice: mean over all positive masks of the batch, all levels together; exactly 0
  (with the graph still connected, so ``backward`` works) when there are none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig

if TYPE_CHECKING:
    from solo_lib.model import SOLOOutput
    from solo_lib.targets import BatchLevelTarget


def focal_loss(logits: Tensor, targets_onehot: Tensor, alpha: float, gamma: float) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017) per element, same shape as ``logits``.

    FL = -alpha_t (1 - p_t)^gamma log(p_t), with p_t = p for a positive entry and
    1 - p for a negative one. ``alpha`` weights the POSITIVES and 1 - alpha the
    negatives (alpha = 0.25 down-weights the positives: the (1 - p_t)^gamma term
    already silences the easy negatives). Equal to
    ``torchvision.ops.sigmoid_focal_loss(..., reduction="none")``.
    """
    targets = targets_onehot.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t)
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def dice_loss(pred_probs: Tensor, targets: Tensor, eps: float = 1e-3) -> Tensor:
    """Dice loss per mask: (P, h, w) probabilities and 0/1 targets -> (P,).

    d = 1 - 2 sum(p q) / (sum p^2 + sum q^2 + eps): 0 for a perfect mask, 1 for a
    disjoint one. ``eps`` keeps an empty prediction of an empty target finite.
    """
    if pred_probs.shape != targets.shape or pred_probs.ndim != 3:
        raise ValueError(
            f"dice_loss expects (P, h, w) predictions and targets of the same shape, "
            f"got {tuple(pred_probs.shape)} and {tuple(targets.shape)}"
        )
    p = pred_probs.flatten(1)
    q = targets.flatten(1).to(p.dtype)
    return 1 - 2 * (p * q).sum(1) / ((p * p).sum(1) + (q * q).sum(1) + eps)


def solo_loss(
    output: SOLOOutput, targets: list[BatchLevelTarget], cfg: SOLOConfig
) -> dict[str, Tensor]:
    """SOLO loss of a batch: ``{"loss", "focal", "dice"}``, scalars; ``loss`` is weighted.

    ``output`` holds per-level logits (see ``SOLOOutput``); ``targets`` holds one
    ``BatchLevelTarget`` per level, from ``build_batch_targets``.
    """
    if len(targets) != len(output.category) or len(output.masks) != len(output.category):
        raise ValueError(
            f"solo_loss: {len(output.category)} category and {len(output.masks)} mask levels "
            f"in the output but {len(targets)} target levels"
        )
    c = cfg.num_classes
    cate_logits = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, c) for x in output.category])
    cate_labels = torch.cat([t.category.reshape(-1) for t in targets])  # (sum B*S*S,)
    if cate_labels.shape[0] != cate_logits.shape[0]:
        raise ValueError(
            f"solo_loss: {cate_logits.shape[0]} predicted cells but {cate_labels.shape[0]} "
            "target cells (batch size or num_grids differ)"
        )
    onehot = F.one_hot(cate_labels, c + 1)[:, 1:]  # drop the background column
    num_pos = (cate_labels > 0).sum()
    focal = focal_loss(cate_logits, onehot, cfg.focal_alpha, cfg.focal_gamma).sum() / (num_pos + 1)

    dices = []
    for level, (logits, target) in enumerate(zip(output.masks, targets, strict=True)):
        # (P_l, h, w), image-major then cell k; training's forward computed only these
        selected = logits[target.active] if logits.dim() == 4 else logits
        if selected.shape != target.masks.shape:
            raise ValueError(
                f"solo_loss: level {level} selects masks {tuple(selected.shape)} "
                f"but its targets are {tuple(target.masks.shape)}"
            )
        dices.append(dice_loss(selected.sigmoid(), target.masks))
    dice_all = torch.cat(dices)  # (P,)
    # A sum over no masks is an exact 0 that still depends on the mask logits.
    dice = dice_all.sum() / max(dice_all.numel(), 1)

    loss = cfg.cate_loss_weight * focal + cfg.mask_loss_weight * dice
    return {"loss": loss, "focal": focal, "dice": dice}
