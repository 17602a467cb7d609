"""What a SOLO or SOLOv2 head computes for one image, branch by branch (notebook 07).

Counted with `torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2 FLOPs;
convolutions and matrix products only, not the element-wise work of GroupNorm, ReLU,
resizing or Decoupled SOLO's mask products) on a network built on the meta device:
shapes only, no weights allocated and nothing computed, so the paper preset's head at
800 x 1088 is counted in about a second.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from solo_lib.config import SOLOConfig

#: The head's sub-modules, by the branch they belong to (`SOLOHead`, `SOLOv2Head`).
BRANCHES = {
    "cate_convs": "category branch",
    "cate_out": "category branch",
    "mask_convs": "mask branch convs",
    "mask_convs_x": "mask branch convs",
    "mask_convs_y": "mask branch convs",
    "mask_out": "mask outputs",
    "mask_out_x": "mask outputs",
    "mask_out_y": "mask outputs",
    "kernel_convs": "kernel branch",
    "kernel_out": "kernel branch",
    "mask_features": "mask features",
}
#: SOLOv2's dynamic 1x1 convolutions: the matrix products of its `KernelMasks`, made
#: outside the head's sub-modules. (Vanilla SOLO's products are outside them too: its
#: ``mask_out`` convs lend their weights as kernels and are never called, so a hook on
#: them sees nothing; they are counted under "mask outputs".)
KERNELS_APPLIED = "kernels applied"


def head_flops(cfg: SOLOConfig) -> dict[str, int]:
    """FLOPs of each branch of ``cfg``'s head for one image at ``cfg.image_size``.

    The head runs as at inference, every cell's mask computed. Keys, in the order of
    the head's modules: SOLO's "category branch", "mask branch convs" and "mask outputs" (the
    per-level 1x1 convs to S^2 channels, or Decoupled SOLO's 2S); SOLOv2's "category
    branch", "kernel branch", "mask features" and "kernels applied" (all S^2 kernels
    of every level on the mask features). The values add up to the head's total.
    """
    from solo_lib.model.solo import SOLO  # imported here: solo imports this package

    with torch.device("meta"):
        model = SOLO(cfg.replace(pretrained=None)).eval()
        features = model.backbone(torch.zeros(1, 3, *cfg.image_size))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.head(features)
    counts = counter.get_flop_counts()
    head = type(model.head).__name__
    flops: dict[str, int] = {}
    for name, module in model.head.named_modules():
        if name and not any(True for _ in module.children()):  # leaves: the convs and norms
            child = name.split(".")[0]
            ops = counts.get(f"{head}.{name}")
            if ops is None:
                continue
            if child not in BRANCHES:
                raise ValueError(f"head_flops: {head}.{name} belongs to no branch of BRANCHES")
            flops[BRANCHES[child]] = flops.get(BRANCHES[child], 0) + int(sum(ops.values()))
    # Outside the sub-modules: the cells' kernels applied to the mask features, which are
    # SOLOv2's dynamic convs and vanilla SOLO's 1x1 mask conv (its weights used as kernels).
    outside = int(sum(counts[head].values())) - sum(flops.values())
    if outside:
        key = KERNELS_APPLIED if cfg.head == "solov2" else "mask outputs"
        flops[key] = flops.get(key, 0) + outside
    return flops
