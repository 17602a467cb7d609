"""The SOLO network: backbone + FPN + shared head (SOLO's or SOLOv2's), returning logits.

`SOLO.mask_makers` is what inference runs: category logits and, per level, the tensors
the masks are made from (`solo_lib.model.mask_makers`), so that post-processing makes only
the candidates' masks. `SOLO.forward` makes masks too: the active cells' in training, or
every cell's, the dense reference that the candidate-first path is tested against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from solo_lib.config import SOLOConfig
from solo_lib.model.backbone import build_backbone
from solo_lib.model.heads import SOLOHead, make_masks
from solo_lib.model.mask_makers import MaskMaker
from solo_lib.model.solov2 import SOLOv2Head


class SOLOOutput(NamedTuple):
    """Raw network outputs, one entry per level (logits: apply sigmoid for probabilities)."""

    category: list[Tensor]
    """Per level (B, C, S, S) category logits, C = num_classes (no background channel)."""
    masks: list[Tensor]
    """Per level (B, S*S, h, w) mask logits, (h, w) = cfg.mask_size(level); channel k = row*S + col.
    In training (``SOLO(images, active)``) only the masks of the active cells: (P_l, h, w)."""

    def probabilities(self) -> tuple[list[Tensor], list[Tensor]]:
        """(category, mask) probabilities per level: the sigmoid of the logits, in float32.

        What post-processing takes; float32 also when the network ran in bf16.
        """
        return (
            [c.float().sigmoid() for c in self.category],
            [m.float().sigmoid() for m in self.masks],
        )


class SOLOParts(NamedTuple):
    """What inference needs of the network: per level category logits and a mask maker."""

    category: list[Tensor]
    """Per level (B, C, S, S) category logits."""
    makers: list[MaskMaker]
    """Per level the masks' maker: (B, S*S, h, w) logits on demand, for any cells."""

    def category_probabilities(self) -> list[Tensor]:
        """The sigmoid of the category logits per level, in float32."""
        return [c.float().sigmoid() for c in self.category]

    def made(self, active: list[Tensor] | None = None) -> SOLOOutput:
        """`SOLOOutput` with the masks made: every cell's, or the ``active`` cells' only."""
        return SOLOOutput(self.category, make_masks(self.makers, active))


class SOLO(nn.Module):
    """SOLO (Wang et al., arXiv 1912.04488) for the settings in ``cfg``; with
    ``cfg.head = "solov2"``, SOLOv2 (arXiv 2003.10152): the same backbone, outputs and
    training, another head (`solo_lib.model.solov2`)."""

    def __init__(self, cfg: SOLOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        head = SOLOv2Head if cfg.head == "solov2" else SOLOHead
        self.head = head(cfg, self.backbone.out_channels)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, images: Tensor, active: list[Tensor] | None = None) -> SOLOOutput:
        """Logits for ``images`` (B, 3, H, W), normalised and padded as the data sets do.

        ``active`` (per level (B, S^2) bool, the targets' active cells) limits the mask
        logits to those cells, all that the training loss reads (`SOLOParts.made`).
        """
        return self.mask_makers(images).made(active)

    def mask_makers(self, images: Tensor) -> SOLOParts:
        """Category logits and mask makers for ``images`` (B, 3, H, W): no mask made yet."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        images = images.contiguous(memory_format=self.memory_format)
        return SOLOParts(*self.head.mask_makers(self.backbone(images)))

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        metas: list[dict],
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
    ) -> list[dict]:
        """Instances per image: ``{"masks": bool (n, H0, W0), "labels": (n,), "scores": (n,)}``.

        ``metas`` are dicts with each image's ``geometry`` (the data sets' target dicts
        hold one). Runs in eval mode and restores the previous mode afterwards.
        Thresholds default to the config's.
        """
        from solo_lib.postprocess import postprocess_parts  # here: the model does not need it

        was_training = self.training
        self.eval()
        try:
            parts = self.mask_makers(images)
        finally:
            self.train(was_training)
        return postprocess_parts(parts, metas, self.cfg, score_threshold, mask_threshold)
