"""Simple Copy-Paste (Ghiasi et al., CVPR 2021, arXiv 2012.07177) on a training batch.

Each image of the batch receives, with probability `prob`, a random subset of the
objects of the previous image in the batch (image 0 those of the last), pasted at the
same place: the batch's images are already in one input frame (resized, flipped and
padded to ``cfg.image_size``), so no resizing is needed. Pasted objects lie on top;
the objects they cover lose those pixels, and an object left with fewer than
`min_area` visible pixels is dropped, as the built-in data set's generator drops the
objects it hides. Boxes of covered objects are recomputed from what remains visible.

Why: the masks learn from the objects a step sees. Pasting adds objects to a step at
almost no cost (the network's cost is per pixel, not per object), in new contexts
and overlaps. The batch-level form follows torchvision's detection references, which
paste from the rolled batch in the loader's collate function.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import masks_to_boxes

#: Fewest visible pixels an object keeps after being covered (the generator's rule).
MIN_VISIBLE_AREA = 16


def copy_paste(
    images: Tensor,
    targets: list[dict[str, Tensor]],
    prob: float,
    min_area: int = MIN_VISIBLE_AREA,
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """The batch with objects pasted: images (B, 3, H, W), targets with boxes, labels, masks.

    Each source object is chosen with probability 0.5 (torch's global RNG, seeded per
    loader worker); nothing is changed in place. Other target keys are kept as they are.
    """
    n = len(targets)
    if n < 2 or prob <= 0:
        return images, targets
    out_images, out_targets = images.clone(), [dict(t) for t in targets]
    for i in range(n):
        source = targets[i - 1]  # the previous image's objects, as they were before pasting
        if torch.rand(()).item() >= prob or len(source["labels"]) == 0:
            continue
        chosen = torch.rand(len(source["labels"])) < 0.5  # (m,) bool
        if not chosen.any():
            continue
        masks = source["masks"][chosen].bool()  # (k, H, W)
        alpha = masks.any(dim=0)  # (H, W): pixels that now show a pasted object
        out_images[i] = torch.where(alpha, images[i - 1], images[i])
        out_targets[i] = _paste_objects(targets[i], masks, source, chosen, alpha, min_area)
    return out_images, out_targets


def _paste_objects(
    target: dict[str, Tensor],
    pasted_masks: Tensor,
    source: dict[str, Tensor],
    chosen: Tensor,
    alpha: Tensor,
    min_area: int,
) -> dict[str, Tensor]:
    """`target`'s objects less the pixels under `alpha`, then the pasted objects."""
    masks = target["masks"].bool() & ~alpha  # (n, H, W): what stays visible
    area = masks.flatten(1).sum(dim=1)
    keep = area >= min_area
    covered = area < target["masks"].flatten(1).bool().sum(dim=1)
    boxes = target["boxes"].clone()
    if bool((covered & keep).any()):
        boxes[covered & keep] = _mask_boxes(masks[covered & keep]).to(boxes.dtype)
    out = dict(target)
    out["masks"] = torch.cat([masks[keep], pasted_masks]).to(target["masks"].dtype)
    out["labels"] = torch.cat([target["labels"][keep], source["labels"][chosen]])
    out["boxes"] = torch.cat([boxes[keep], source["boxes"][chosen].to(boxes.dtype)])
    return out


def _mask_boxes(masks: Tensor) -> Tensor:
    """(n, 4) xyxy boxes of non-empty (n, H, W) masks, corners on pixel edges: the last
    row and column are included, as the data sets' boxes (x2 = last column + 1)."""
    boxes = masks_to_boxes(masks)  # x2, y2 = index of the last pixel
    return boxes + boxes.new_tensor([0, 0, 1, 1])
