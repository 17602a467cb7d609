"""SOLOv2's dynamic head (Wang et al., arXiv 2003.10152), a drop-in for SOLO's.

SOLO's mask branch ends in S^2 output channels per level: cell k's mask is a learned
weight vector, the same for every image, applied to the level's features, and all S^2
masks are computed whether a cell holds an object or not. SOLOv2 splits that last
layer into what to apply and what to apply it to:

- kernel branch (per level, weights shared): the feature resized to S x S plus two
  coordinate channels, ``num_stacked_convs`` x [3x3 conv, GN, ReLU], a 3x3 conv to E
  outputs -> (B, E, S, S): each cell predicts its own 1x1 kernel of E weights (D = E)
  from what it sees;
- mask feature branch (`MaskFeatureBranch`): one map of E channels for all levels;
- masks: cell k's logits are its kernel applied to the mask features, a dot product of
  E numbers at every pixel; for k cells of an image, one matrix product (k, E) @
  (E, h * w) (`solo_lib.model.mask_makers.KernelMasks`). Only the kernels of the cells
  that are needed are applied: the active cells in training, the candidates at inference.

The category branch is SOLO's. The outputs keep `SOLOHead`'s contract (per level a
`KernelMasks` whose masks are (B, S^2, h, w) logits with (h, w) = ``cfg.mask_size(level)``),
so targets, losses and post-processing are SOLO's, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo_lib.config import SOLOConfig
from solo_lib.model.heads import conv_stack, coord_features, init_convs, make_masks, prior_logit
from solo_lib.model.mask_makers import KernelMasks, MaskMaker

#: Levels that feed the mask features: 0-3 carry P2-P5, level 4 is P6 (P5 max-pooled and
#: resized back to P5's stride), nothing that P5 does not already hold.
MASK_FEATURE_LEVELS = 4


class MaskFeatureBranch(nn.Module):
    """SOLOv2's unified mask features: levels 0-3 brought to the finest stride and summed.

    ``forward(features)`` takes the backbone's levels 0-3, (B, in_channels, H_l, W_l),
    and returns (B, E, H_0, W_0), at the finest of their strides (8 with SOLO's strides,
    where the backbone has already resampled P2 from 4 to 8). A level n_l = log2(s_l /
    s_min) octaves coarser goes through max(1, n_l) stages of [3x3 conv, GN, ReLU], the
    first n_l of them followed by a x2 bilinear upsampling, as the paper brings P2-P5 to
    1/4. The coarsest level (P5) gets the two coordinate channels at its first conv: the
    kernels are 1x1, so the features must say where each pixel is for a cell's kernel to
    pick out the object at its own position. The sum goes through a 1x1 conv, GN and
    ReLU to E channels.
    """

    def __init__(
        self, in_channels: int, channels: int, out_channels: int, strides: tuple[int, ...]
    ) -> None:
        super().__init__()
        finest = min(strides)
        octaves = [(s // finest).bit_length() - 1 for s in strides]  # SOLOConfig: powers of 2
        coarsest = len(strides) - 1
        self.levels = nn.ModuleList(
            self._level(in_channels + 2 * (level == coarsest), channels, n)
            for level, n in enumerate(octaves)
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1, bias=False),
            nn.GroupNorm(32, out_channels),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def _level(in_channels: int, channels: int, octaves: int) -> nn.Sequential:
        """max(1, ``octaves``) x [3x3 conv, GN, ReLU], x2 bilinear after the first ``octaves``."""
        stages: list[nn.Module] = []
        for i in range(max(1, octaves)):
            stages.append(conv_stack(in_channels if i == 0 else channels, channels, 1))
            if i < octaves:
                stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        return nn.Sequential(*stages)

    def forward(self, features: list[Tensor]) -> Tensor:
        coarsest = features[-1]
        inputs = [*features[:-1], torch.cat([coarsest, coord_features(coarsest)], dim=1)]
        summed = sum(level(x) for level, x in zip(self.levels, inputs, strict=True))
        return self.fuse(summed)  # (B, E, H_0, W_0)


class SOLOv2Head(nn.Module):
    """Category, kernel and mask feature branches for all levels of ``cfg``.

    ``mask_makers(features)`` takes the backbone's per-level maps (B, in_channels, H_f,
    W_f) and returns, as `SOLOHead` does, category logits (B, C, S, S) and a mask maker
    per level, whose masks are (B, S^2, 2 H_f, 2 W_f) logits; ``forward(features,
    active)`` makes them, all or at the ``active`` cells.

    Resolution: the mask features are at the finest stride of levels 0-3 (8 for both
    presets), but level l's masks are expected at twice its feature size,
    ``cfg.mask_size(l)`` (stride 4 for levels 0-1, 8 for level 2, 16 for levels 3-4),
    the size the targets are built at and post-processing reads. So the mask features
    are resized (bilinear) to each level's mask size before the kernels are applied. A
    1x1 kernel and bilinear resizing commute (both are linear per pixel and the bilinear
    weights sum to 1, so the bias passes through too): the logits are those of resizing
    each mask after, at E channels instead of S^2.

    Initialisation as SOLO's head: convs normal(std=0.01), the category bias at the 0.01
    prior. The paper's dynamic 1x1 convs have no bias; one learned scalar added to every
    mask logit, ``mask_bias``, starts at the same prior, so that every mask starts near
    empty as SOLO's do (zero-mean kernels alone would start them at p = 0.5).
    """

    def __init__(self, cfg: SOLOConfig, in_channels: int) -> None:
        super().__init__()
        channels = cfg.head_channels
        self.num_grids = cfg.num_grids
        self.cate_convs = conv_stack(in_channels, channels, cfg.num_stacked_convs)
        self.cate_out = nn.Conv2d(channels, cfg.num_classes, 3, padding=1)
        self.kernel_convs = conv_stack(in_channels + 2, channels, cfg.num_stacked_convs)
        self.kernel_out = nn.Conv2d(channels, cfg.kernel_channels, 3, padding=1)
        self.num_feature_levels = min(MASK_FEATURE_LEVELS, cfg.num_levels)
        self.mask_features = MaskFeatureBranch(
            in_channels,
            cfg.mask_branch_channels,
            cfg.kernel_channels,
            cfg.strides[: self.num_feature_levels],
        )
        self.mask_bias = nn.Parameter(torch.tensor(prior_logit()))
        init_convs(self)
        nn.init.constant_(self.cate_out.bias, prior_logit())

    def kernels(self, grid: Tensor) -> Tensor:
        """Each cell's 1x1 kernel from a level's feature resized to S x S:
        (B, in_channels, S, S) -> (B, S^2, E), cell k = row * S + col."""
        kernels = self.kernel_out(self.kernel_convs(torch.cat([grid, coord_features(grid)], 1)))
        return kernels.flatten(2).transpose(1, 2)  # (B, E, S, S) -> (B, S^2, E)

    def mask_makers(self, features: list[Tensor]) -> tuple[list[Tensor], list[MaskMaker]]:
        """Category logits (B, C, S, S) and per level `KernelMasks`: the cells' kernels
        (B, S^2, E), the mask features resized to the level's mask size (B, E, h, w) and
        ``mask_bias``; no mask is made yet (see the class)."""
        if len(features) != len(self.num_grids):
            raise ValueError(f"expected {len(self.num_grids)} feature levels, got {len(features)}")
        unified = self.mask_features(features[: self.num_feature_levels])  # (B, E, H_0, W_0)
        resized: dict[tuple[int, int], Tensor] = {}  # one resize per mask size
        categories: list[Tensor] = []
        makers: list[MaskMaker] = []
        for feature, s in zip(features, self.num_grids, strict=True):
            grid = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
            categories.append(self.cate_out(self.cate_convs(grid)))  # (B, C, S, S)
            size = (2 * feature.shape[-2], 2 * feature.shape[-1])  # cfg.mask_size(level)
            if size not in resized:
                resized[size] = (
                    unified
                    if unified.shape[-2:] == size
                    else F.interpolate(unified, size=size, mode="bilinear", align_corners=False)
                )
            bias = self.mask_bias.expand(1, s * s)  # one learned scalar for every cell
            makers.append(KernelMasks(resized[size], self.kernels(grid), bias))
        return categories, makers

    def forward(
        self, features: list[Tensor], active: list[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Category logits (B, C, S, S) and mask logits per level (see the class)."""
        categories, makers = self.mask_makers(features)
        return categories, make_masks(makers, active)
