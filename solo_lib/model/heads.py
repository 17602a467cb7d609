"""The SOLO head: one category branch and one mask branch, shared by all FPN levels.

For each level with grid S:
- category branch: the feature resized to S x S, ``num_stacked_convs`` x
  [3x3 conv, GroupNorm(32), ReLU], then a 3x3 conv to C logits -> (B, C, S, S).
- mask branch: the feature plus two CoordConv channels (x and y in [-1, 1]),
  ``num_stacked_convs`` x [3x3 conv, GN, ReLU], a per-level 1x1 conv to S^2 logits
  (one channel per grid cell), upsampled x2 -> (B, S^2, 2 H_f, 2 W_f).

Decoupled SOLO (``cfg.mask_head = "decoupled"``, from the same paper) replaces the
S^2 mask channels by an X and a Y branch of S channels each (two stacks, each with its
own coordinate channel); the mask of cell (row i, column j) is sigmoid(X_j) *
sigmoid(Y_i), returned as a logit like the vanilla head's.

No mask is made in the head's own pass: `SOLOHead.mask_makers` returns, per level, the
tensors the masks are made from (`solo_lib.model.mask_makers`), and training makes the
active cells' masks from them, inference the candidates'.

Only the final 1x1 mask convs are per level. Initialisation: conv weights
normal(std=0.01); the category output bias starts at the focal prior
-log((1 - 0.01) / 0.01) = -4.595, so that every cell first predicts p = 0.01 and the
many negatives do not swamp the focal loss in the first iterations. The 1x1 mask
convs start at the same prior, as mmdetection's ``SOLOHead`` (``conv_mask_list``,
``bias_prob=0.01``) and the official SOLO code (``solo_ins_list``) do: every mask
pixel first predicts p = 0.01, a near-empty mask, and the dice loss grows the object
out of it. Decoupled, each factor starts at p = 0.1, so that their product does too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo_lib.config import SOLOConfig
from solo_lib.model.mask_makers import FactorMasks, KernelMasks, MaskMaker

#: Initial foreground probability of every category and mask output (RetinaNet / SOLO prior).
PRIOR_PROB = 0.01


def coord_features(feature: Tensor) -> Tensor:
    """CoordConv channels for ``feature`` (B, _, H, W): (B, 2, H, W), x then y, in [-1, 1].

    x goes from -1 at the left column to 1 at the right one, y from -1 at the top
    row to 1 at the bottom; they tell the translation-invariant convolutions where
    in the image they are, which the mask branch needs to know which cell it serves.
    """
    b, _, h, w = feature.shape
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, h, device=feature.device, dtype=feature.dtype),
        torch.linspace(-1, 1, w, device=feature.device, dtype=feature.dtype),
        indexing="ij",
    )
    return torch.stack([x, y]).expand(b, 2, h, w)


def prior_logit(prob: float = PRIOR_PROB) -> float:
    """The bias log(p / (1 - p)) at which a sigmoid output starts at probability ``prob``."""
    return math.log(prob / (1 - prob))


def init_convs(module: nn.Module) -> None:
    """Every conv of ``module``: weights normal(std=0.01), biases 0 (SOLO's and SOLOv2's)."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


def conv_stack(in_channels: int, channels: int, depth: int) -> nn.Sequential:
    """``depth`` x [3x3 conv (no bias: GN follows), GroupNorm(32), ReLU]."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(32, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class SOLOHead(nn.Module):
    """Category and mask branches for all levels of ``cfg``.

    ``mask_makers(features)`` takes the backbone's list of per-level maps
    (B, in_channels, H_f, W_f) and returns, one entry per level, category logits
    (B, C, S, S) and a mask maker whose masks are (B, S^2, 2 H_f, 2 W_f) logits;
    ``forward(features, active)`` makes those masks, all or the ``active`` cells'.
    """

    def __init__(self, cfg: SOLOConfig, in_channels: int) -> None:
        super().__init__()
        channels = cfg.head_channels  # a multiple of 32 for GroupNorm(32): SOLOConfig checks
        self.num_grids = cfg.num_grids
        self.cate_convs = conv_stack(in_channels, channels, cfg.num_stacked_convs)
        self.cate_out = nn.Conv2d(channels, cfg.num_classes, 3, padding=1)
        self.decoupled = cfg.mask_head == "decoupled"
        if self.decoupled:  # each branch sees its own coordinate: x for X, y for Y
            self.mask_convs_x = conv_stack(in_channels + 1, channels, cfg.num_stacked_convs)
            self.mask_convs_y = conv_stack(in_channels + 1, channels, cfg.num_stacked_convs)
            self.mask_out_x = nn.ModuleList(nn.Conv2d(channels, s, 1) for s in cfg.num_grids)
            self.mask_out_y = nn.ModuleList(nn.Conv2d(channels, s, 1) for s in cfg.num_grids)
        else:
            self.mask_convs = conv_stack(in_channels + 2, channels, cfg.num_stacked_convs)
            self.mask_out = nn.ModuleList(nn.Conv2d(channels, s * s, 1) for s in cfg.num_grids)
        self._init_weights()

    def _init_weights(self) -> None:
        init_convs(self)
        prior_bias = prior_logit()
        nn.init.constant_(self.cate_out.bias, prior_bias)
        if self.decoupled:  # sigmoid(X) = sigmoid(Y) = 0.1: their product starts at 0.01 too
            factor_bias = prior_logit(math.sqrt(PRIOR_PROB))
            for conv in [*self.mask_out_x, *self.mask_out_y]:
                nn.init.constant_(conv.bias, factor_bias)
        else:
            for conv in self.mask_out:
                nn.init.constant_(conv.bias, prior_bias)

    def mask_makers(self, features: list[Tensor]) -> tuple[list[Tensor], list[MaskMaker]]:
        """Category logits (B, C, S, S) and a mask maker per level; no mask is made yet.

        Vanilla: `KernelMasks` of the mask branch's features (B, E, 2 H_f, 2 W_f) and the
        level's 1x1 conv, whose row k (E weights) and bias k are cell k's kernel.
        Decoupled: `FactorMasks` of the X and Y logits (B, S, 2 H_f, 2 W_f).
        """
        if len(features) != len(self.num_grids):
            raise ValueError(f"expected {len(self.num_grids)} feature levels, got {len(features)}")
        categories: list[Tensor] = []
        makers: list[MaskMaker] = []
        for level, (feature, s) in enumerate(zip(features, self.num_grids, strict=True)):
            cate = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
            categories.append(self.cate_out(self.cate_convs(cate)))  # (B, C, S, S)
            if self.decoupled:
                makers.append(FactorMasks(*self.decoupled_factors(level, feature)))
                continue
            mask = self.mask_convs(torch.cat([feature, coord_features(feature)], dim=1))
            # The paper upsamples the S^2 mask logits x2. Bilinear weights sum to 1 and a
            # 1x1 conv is linear per pixel, so upsampling the `channels` features first and
            # applying the 1x1 conv after gives the same logits, without interpolating
            # (and back-propagating through) S^2 channels.
            conv = self.mask_out[level]
            kernels = conv.weight.flatten(1)[None]  # (1, S^2, E): one row per cell
            makers.append(KernelMasks(_upsample2(mask), kernels, conv.bias[None]))
        return categories, makers

    def forward(
        self, features: list[Tensor], active: list[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Category logits (B, C, S, S) and mask logits per level (`mask_makers`, made).

        Without ``active``, every cell's mask: (B, S^2, 2 H_f, 2 W_f). With ``active``
        (per level a (B, S^2) bool of the cells that have a target, as
        ``build_batch_targets`` makes them), only those masks: (P_l, 2 H_f, 2 W_f) in the
        order of ``masks[active]`` (image-major, then cell). Training needs no other
        mask, and most of the S^2 outputs would be computed only to be thrown away.
        """
        categories, makers = self.mask_makers(features)
        return categories, make_masks(makers, active)

    def decoupled_factors(self, level: int, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Decoupled SOLO's X and Y logits of ``level``: (B, S, 2 H_f, 2 W_f) each, in float32.

        Channel j of X scores "this pixel belongs to the object centred in column j",
        channel i of Y "... in row i"; the mask of cell (i, j) is sigmoid(X_j) *
        sigmoid(Y_i) (`FactorMasks`). Each of the 2S outputs learns from every object
        centred in its column or row, where a vanilla cell's weights learn only from
        objects centred in that cell. Each branch sees the feature and its own
        coordinate (x for X).
        """
        if not self.decoupled:
            raise ValueError("decoupled_factors needs cfg.mask_head = 'decoupled'")
        coords = coord_features(feature)
        x = self.mask_out_x[level](self.mask_convs_x(torch.cat([feature, coords[:, :1]], dim=1)))
        y = self.mask_out_y[level](self.mask_convs_y(torch.cat([feature, coords[:, 1:]], dim=1)))
        return _upsample2(x).float(), _upsample2(y).float()


def make_masks(makers: list[MaskMaker], active: list[Tensor] | None = None) -> list[Tensor]:
    """Every cell's mask logits per level (B, S^2, h, w), or with ``active`` (per level
    (B, S^2) bool) only those cells': (P_l, h, w), image-major then cell."""
    if active is None:
        return [maker.dense() for maker in makers]
    if len(active) != len(makers):
        raise ValueError(f"active has {len(active)} levels, the head {len(makers)}")
    return [maker.active(cells) for maker, cells in zip(makers, active, strict=True)]


def _upsample2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling of (B, C, h, w) -> (B, C, 2h, 2w), as the paper's mask outputs."""
    return F.interpolate(x, size=(2 * x.shape[-2], 2 * x.shape[-1]), mode="bilinear")
