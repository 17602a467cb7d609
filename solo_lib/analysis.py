"""What a configuration allows on a data set, and what a trained model's two outputs cost.

`perfect_output` turns an image's targets into the logits a perfect network would
give: every positive cell certain of its class, every mask channel exactly its
target mask at the level's mask size. `ceiling` runs those logits through the real
post-processing and evaluation, against the original annotations. The AP it
returns is the most that a network with this geometry (input size, strides, grids)
and these inference settings can reach: objects whose target mask is too coarse,
that no level takes, or that share a cell with another object of their class are
lost here already, before any learning.

`error_sources` swaps one of a trained model's outputs (category grids or masks) for
the perfect one: the AP that the other output allows, so that a learner sees which of
the two branches holds the model back (and, on request, both: the ceiling).

`postprocess_sweep` re-runs only the post-processing of cached network outputs under
other inference settings (score and mask thresholds, the smallest mask kept, Matrix NMS
kernel and sigma): an
ablation of the inference settings without running the network again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.evaluation import MaskEvaluator
from solo_lib.model.mask_makers import DenseMasks
from solo_lib.model.solo import SOLO, SOLOOutput, SOLOParts
from solo_lib.postprocess import postprocess, postprocess_parts
from solo_lib.targets import build_targets

if TYPE_CHECKING:  # only for the annotation: the browser package imports the widgets
    from solo_lib.browser.cache import CachedOutputs

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


def dense_parts(output: SOLOOutput) -> SOLOParts:
    """`SOLOParts` whose mask makers hand out `output`'s dense masks (B, S^2, h, w)."""
    return SOLOParts(output.category, [DenseMasks(masks) for masks in output.masks])


def ceiling(batches: Iterable[tuple[Tensor, list[dict]]], cfg: SOLOConfig) -> dict:
    """Mask AP of `perfect_output` on `batches` (a data loader's (images, targets)).

    Scored like a trained model (`postprocess`, `MaskEvaluator` against each target's
    ``"original"`` annotations): the AP that `cfg`'s geometry allows at most.
    """
    evaluator = MaskEvaluator(cfg.class_names)
    for _, targets in batches:
        predictions = postprocess_parts(dense_parts(perfect_output(targets, cfg)), targets, cfg)
        evaluator.update(
            predictions,
            [t["original"] for t in targets],
            image_ids=[int(t["image_id"]) for t in targets],
        )
    return evaluator.compute()


def error_sources(
    model: SOLO,
    batches: Iterable[tuple[Tensor, list[dict]]],
    cfg: SOLOConfig,
    with_ceiling: bool = False,
) -> dict[str, dict]:
    """Mask AP of `model` on `batches`, and with one of its outputs made perfect.

    Returns `MaskEvaluator.compute` results for ``"model"`` (its own output),
    ``"perfect masks"`` (its category grids with the targets' masks: what its categories
    allow) and ``"perfect categories"`` (the targets' grids with its masks: what its masks
    allow). The swap that lifts the AP more names the branch that costs more.
    `with_ceiling` adds ``"perfect network"``, both outputs perfect: `ceiling`'s result,
    from the same perfect output (built once per batch).
    """
    names = ("model", "perfect masks", "perfect categories")
    names += ("perfect network",) if with_ceiling else ()
    evaluators = {name: MaskEvaluator(cfg.class_names) for name in names}
    was_training = model.training
    model.eval()
    try:
        for images, targets in batches:
            with torch.no_grad():
                own = model.mask_makers(images)
            perfect = dense_parts(perfect_output(targets, cfg))
            outputs = {
                "model": own,
                "perfect masks": SOLOParts(own.category, perfect.makers),
                "perfect categories": SOLOParts(perfect.category, own.makers),
                "perfect network": perfect,
            }
            for name in names:
                with torch.no_grad():  # the model's masks are made here, for its candidates
                    predictions = postprocess_parts(outputs[name], targets, cfg)
                evaluators[name].update(
                    predictions,
                    [t["original"] for t in targets],
                    image_ids=[int(t["image_id"]) for t in targets],
                )
    finally:
        model.train(was_training)
    return {name: evaluator.compute() for name, evaluator in evaluators.items()}


#: The config fields that `postprocess_sweep` may change: inference settings only.
POSTPROCESS_FIELDS = frozenset(
    {
        "score_threshold",
        "mask_threshold",
        "min_mask_area",
        "nms_kernel",
        "nms_sigma",
        "update_threshold",
    }
)


def postprocess_sweep(
    cached: CachedOutputs, cfg: SOLOConfig, settings: Sequence[Mapping[str, object]]
) -> list[dict]:
    """Mask AP of the cached outputs under each of `settings` (changes to ``cfg``).

    Each entry of `settings` changes some of `POSTPROCESS_FIELDS` (``{}``: the config
    as it is); the network's outputs are the cached ones, so only post-processing and
    evaluation run again. Returns one `MaskEvaluator.compute` result per entry. A score
    threshold below the cache's ``min_score`` is refused: the masks of the cells between
    the two were not kept.
    """
    results = []
    for changes in settings:
        unknown = set(changes) - POSTPROCESS_FIELDS
        if unknown:
            raise ValueError(
                f"postprocess_sweep: {sorted(unknown)} are not inference settings; "
                f"expected some of {sorted(POSTPROCESS_FIELDS)}"
            )
        swept = cfg.replace(**changes)
        if swept.score_threshold < cached.min_score:
            raise ValueError(
                f"postprocess_sweep: score_threshold {swept.score_threshold} is below the "
                f"cache's min_score {cached.min_score}; cache the outputs with a lower min_score"
            )
        evaluator = MaskEvaluator(cfg.class_names)
        for i in range(len(cached)):
            target = cached.targets[i]
            evaluator.update(
                postprocess(*cached.probabilities(i), [target], swept),
                [target["original"]],
                image_ids=[cached.image_id(i)],
            )
        results.append(evaluator.compute())
    return results
