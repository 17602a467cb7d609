"""What a configuration allows on a data set, measured before any training.

`perfect_output` turns an image's targets into the logits a perfect network would
give: every positive cell certain of its class, every mask channel exactly its
target mask at the level's mask size. `ceiling` runs those logits through the real
post-processing and evaluation, against the original annotations. The AP it
returns is the most that a network with this geometry (input size, strides, grids)
and these inference settings can reach: objects whose target mask is too coarse,
that no level takes, or that share a cell with another object of their class are
lost here already, before any learning.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.evaluation import MaskEvaluator
from solo_lib.model.solo import SOLOOutput
from solo_lib.postprocess import postprocess
from solo_lib.targets import build_targets

#: Logit magnitude of a certain prediction: sigmoid(30) = 1 - 1e-13.
CERTAIN = 30.0


def perfect_output(targets: list[dict[str, Tensor]], cfg: SOLOConfig) -> SOLOOutput:
    """The logits that predict `targets` (one dict per image, as the data sets give) exactly.

    Category: +CERTAIN for each positive cell's class, -CERTAIN elsewhere, (B, C, S, S).
    Masks: +-CERTAIN from each cell's target mask, (B, S^2, h, w).
    """
    per_image = [build_targets(t["boxes"], t["labels"], t["masks"], cfg) for t in targets]
    category, masks = [], []
    for level in range(cfg.num_levels):
        cats = torch.stack([levels[level].category for levels in per_image])  # (B, S, S)
        onehot = F.one_hot(cats, cfg.num_classes + 1)[..., 1:].permute(0, 3, 1, 2)
        category.append((onehot.float() * 2 - 1) * CERTAIN)  # (B, C, S, S)
        dense = torch.stack([levels[level].masks for levels in per_image])  # (B, S^2, h, w)
        masks.append((dense.float() * 2 - 1) * CERTAIN)
    return SOLOOutput(category, masks)


def ceiling(batches: Iterable[tuple[Tensor, list[dict]]], cfg: SOLOConfig) -> dict:
    """Mask AP of `perfect_output` on `batches` (a data loader's (images, targets)).

    Scored like a trained model (`postprocess`, `MaskEvaluator` against each target's
    ``"original"`` annotations): the AP that `cfg`'s geometry allows at most.
    """
    evaluator = MaskEvaluator(cfg.class_names)
    for _, targets in batches:
        predictions = postprocess(*perfect_output(targets, cfg).probabilities(), targets, cfg)
        evaluator.update(
            predictions,
            [t["original"] for t in targets],
            image_ids=[int(t["image_id"]) for t in targets],
        )
    return evaluator.compute()
