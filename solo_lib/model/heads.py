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


def check_active(
    features: list[Tensor], active: list[Tensor] | None, num_grids: tuple[int, ...]
) -> None:
    """A clear error unless ``features`` has one map per grid and ``active``, if given, is
    per level a (B, S^2) mask of cells."""
    if len(features) != len(num_grids):
        raise ValueError(f"expected {len(num_grids)} feature levels, got {len(features)}")
    if active is None:
        return
    for level, (cells, s) in enumerate(zip(active, num_grids, strict=True)):
        if cells.shape != (features[level].shape[0], s * s):
            raise ValueError(
                f"active must be (B, S^2) = {(features[level].shape[0], s * s)} on "
                f"level {level}, got {tuple(cells.shape)}"
            )


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

    ``forward(features)`` takes the backbone's list of per-level maps
    (B, in_channels, H_f, W_f) and returns two lists of logits, one entry per level:
    category (B, C, S, S) and masks (B, S^2, 2 H_f, 2 W_f).
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

    def forward(
        self, features: list[Tensor], active: list[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Category logits (B, C, S, S) and mask logits per level.

        Without ``active``, every cell's mask: (B, S^2, 2 H_f, 2 W_f). With ``active``
        (per level a (B, S^2) bool of the cells that have a target, as
        ``build_batch_targets`` makes them), only those masks: (P_l, 2 H_f, 2 W_f) in the
        order of ``masks[active]`` (image-major, then cell). Training needs no other
        mask, and most of the S^2 outputs would be computed only to be thrown away.
        """
        check_active(features, active, self.num_grids)
        categories, masks = [], []
        for level, (feature, s) in enumerate(zip(features, self.num_grids, strict=True)):
            cate = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
            categories.append(self.cate_out(self.cate_convs(cate)))  # (B, C, S, S)

            if self.decoupled:
                masks.append(
                    self._decoupled_masks(level, feature, None if active is None else active[level])
                )
                continue
            mask = self.mask_convs(torch.cat([feature, coord_features(feature)], dim=1))
            # The paper upsamples the S^2 mask logits x2. Bilinear weights sum to 1 and a
            # 1x1 conv is linear per pixel, so upsampling the `channels` features first and
            # applying the 1x1 conv after gives the same logits, without interpolating
            # (and back-propagating through) S^2 channels.
            mask = _upsample2(mask)
            if active is None:
                masks.append(self.mask_out[level](mask))  # (B, S^2, 2 H_f, 2 W_f)
            else:
                masks.append(self._active_masks(self.mask_out[level], mask, active[level]))
        return categories, masks

    @staticmethod
    def _active_masks(conv: nn.Conv2d, feature: Tensor, active: Tensor) -> Tensor:
        """The 1x1 ``conv`` (S^2 outputs) on ``feature`` (B, E, h, w) at the ``active`` (B, S^2)
        cells only -> (P, h, w): for each image, its active cells' rows of the weight
        matrix (n_b, E) times the image's feature (E, h * w)."""
        h, w = feature.shape[-2:]
        weight = conv.weight.flatten(1)  # (S^2, E)
        out = []
        for b in range(feature.shape[0]):
            cells = active[b].nonzero()[:, 0]  # ascending: the order of masks[active]
            logits = weight[cells] @ feature[b].flatten(1) + conv.bias[cells, None]  # (n_b, h*w)
            out.append(logits.view(-1, h, w))
        return torch.cat(out)

    def decoupled_factors(self, level: int, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Decoupled SOLO's X and Y logits of ``level``: (B, S, 2 H_f, 2 W_f) each, in float32.

        Channel j of X scores "this pixel belongs to the object centred in column j",
        channel i of Y "... in row i"; the mask of cell (i, j) is sigmoid(X_j) *
        sigmoid(Y_i). Each branch sees the feature and its own coordinate (x for X).
        """
        if not self.decoupled:
            raise ValueError("decoupled_factors needs cfg.mask_head = 'decoupled'")
        coords = coord_features(feature)
        x = self.mask_out_x[level](self.mask_convs_x(torch.cat([feature, coords[:, :1]], dim=1)))
        y = self.mask_out_y[level](self.mask_convs_y(torch.cat([feature, coords[:, 1:]], dim=1)))
        return _upsample2(x).float(), _upsample2(y).float()

    def _decoupled_masks(self, level: int, feature: Tensor, active: Tensor | None) -> Tensor:
        """Decoupled mask logits of ``level``: (B, S^2, h, w), or (P, h, w) at ``active``.

        Each of the 2S outputs learns from every object centred in its column or row,
        where a vanilla cell's weights learn only from objects centred in that cell.
        Returned as logits, log(p / (1 - p)) of the product p, so that losses and
        post-processing read both heads alike.
        """
        s = self.num_grids[level]
        x, y = self.decoupled_factors(level, feature)
        log_x, log_y = F.logsigmoid(x), F.logsigmoid(y)  # (B, S, h, w): log sigmoid(X_j), (Y_i)
        if active is None:
            log_p = (log_y[:, :, None] + log_x[:, None, :]).flatten(1, 2)  # (B, S^2, h, w)
        else:
            image, cell = active.nonzero(as_tuple=True)  # image-major: the order of masks[active]
            log_p = log_y[image, cell // s] + log_x[image, cell % s]  # (P, h, w)
        return logit_from_log_prob(log_p)


def _upsample2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling of (B, C, h, w) -> (B, C, 2h, 2w), as the paper's mask outputs."""
    return F.interpolate(x, size=(2 * x.shape[-2], 2 * x.shape[-1]), mode="bilinear")


def logit_from_log_prob(log_p: Tensor) -> Tensor:
    """log(p / (1 - p)) from log p <= 0, without forming p (a product of sigmoids underflows).

    log p is clamped to -1e-6 (p <= 1 - 1e-6, logit <= 13.8): at p = 1 the logit is
    infinite and its gradient not a number.
    """
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log(-torch.expm1(log_p))
