"""How each head makes a grid cell's mask, for any set of cells: training's and inference's.

A SOLO head predicts S^2 masks per level, one per grid cell, but no step needs all of
them: training reads the masks of the cells that hold an object (``active``), and
inference those of the few cells whose category score passes the threshold. So a head
returns, per level, a *mask maker*: the tensors its masks are made from, and the rule
that makes the masks of the cells it is asked for.

- `KernelMasks`, vanilla SOLO and SOLOv2: a cell's mask logits are its 1x1 kernel (E
  weights) applied to the level's mask features, plus a bias. Vanilla SOLO's kernels
  are the rows of the 1x1 mask conv (the same for every image), SOLOv2's are predicted
  per image and cell.
- `FactorMasks`, Decoupled SOLO: the mask of cell (row i, column j) is
  sigmoid(X_j) * sigmoid(Y_i).
- `DenseMasks`: every cell's mask logits, already made (a perfect network's, in
  `solo_lib.analysis`).

Every maker answers the same questions: `logits(image, cells)` for some cells of one
image, `active(active)` for the active cells of a batch (training, image-major as
``masks[active]``), `dense()` for all of them (B, S^2, h, w), the reference that the
tests hold the first two to, and `probabilities(image, cells)`, the float32 sigmoid that
post-processing reads. `tensors()` and `from_tensors` turn a maker into plain tensors
and back: the outputs of an ONNX graph (`solo_lib.export`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig


class MaskMaker(ABC):
    """The masks of one FPN level for a batch of B images, made on demand.

    ``shape`` is (B, S^2, h, w), the shape of `dense()`, without computing it.
    """

    #: The names of `tensors()`, in order (the ONNX outputs are ``masks_{level}_{name}``).
    FIELDS: ClassVar[tuple[str, ...]]

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int, int]:
        """(B, S^2, h, w): images, grid cells, mask height and width."""

    @abstractmethod
    def logits(self, image: int, cells: Tensor) -> Tensor:
        """Mask logits (k, h, w) of ``cells`` (k,) int64 (row * S + col) of image ``image``."""

    @abstractmethod
    def dense(self) -> Tensor:
        """Every cell's mask logits (B, S^2, h, w), computed for the whole batch at once."""

    @abstractmethod
    def tensors(self) -> tuple[Tensor, ...]:
        """The tensors the masks are made from, in the order of `FIELDS`."""

    def active(self, active: Tensor) -> Tensor:
        """Mask logits (P, h, w) of the ``active`` (B, S^2) bool cells, image-major then
        cell: the order of ``dense()[active]``, which training's targets use."""
        if tuple(active.shape) != self.shape[:2]:
            raise ValueError(
                f"active must be (B, S^2) = {self.shape[:2]}, got {tuple(active.shape)}"
            )
        return self._active(active)

    def _active(self, active: Tensor) -> Tensor:
        """`active`'s masks, its shape checked: image by image with `logits`."""
        h, w = self.shape[-2:]
        parts = [self.logits(b, cells.nonzero()[:, 0]) for b, cells in enumerate(active)]
        return torch.cat(parts) if parts else active.new_zeros((0, h, w), dtype=torch.float32)

    def probabilities(self, image: int, cells: Tensor) -> Tensor:
        """Mask probabilities (k, h, w) float32 of ``cells`` of image ``image``."""
        return self.logits(image, cells).float().sigmoid()


class KernelMasks(MaskMaker):
    """Masks as 1x1 kernels on mask features (vanilla SOLO, SOLOv2).

    ``features`` (B, E, h, w); ``kernels`` (B, S^2, E) per image (SOLOv2) or (1, S^2, E)
    shared by the batch (vanilla SOLO's 1x1 conv weights); ``bias`` (B or 1, S^2): vanilla
    SOLO's conv biases, SOLOv2's one learned scalar repeated.
    Cell k's logits at a pixel are kernels[b, k] . features[b, :, pixel] + bias[b, k]: for
    k cells of an image, one matrix product (k, E) @ (E, h * w).
    """

    FIELDS = ("features", "kernels", "bias")

    def __init__(self, features: Tensor, kernels: Tensor, bias: Tensor) -> None:
        b, e = features.shape[:2]
        if kernels.dim() != 3 or kernels.shape[0] not in (1, b) or kernels.shape[2] != e:
            raise ValueError(
                f"KernelMasks: kernels must be (B or 1, S^2, E) with B = {b}, E = {e}, "
                f"got {tuple(kernels.shape)}"
            )
        if bias.dim() != 2 or bias.shape[0] not in (1, b) or bias.shape[1] != kernels.shape[1]:
            raise ValueError(
                f"KernelMasks: bias must be (B or 1, S^2) with B = {b}, S^2 = "
                f"{kernels.shape[1]}, got {tuple(bias.shape)}"
            )
        self.features, self.kernels, self.bias = features, kernels, bias

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, _, h, w = self.features.shape
        return (b, self.kernels.shape[1], h, w)

    def logits(self, image: int, cells: Tensor) -> Tensor:
        kernels = self.kernels[0 if self.kernels.shape[0] == 1 else image]  # (S^2, E)
        bias = self.bias[0 if self.bias.shape[0] == 1 else image]  # (S^2,)
        h, w = self.features.shape[-2:]
        flat = self.features[image].flatten(1)  # (E, h * w)
        # Vanilla SOLO's kernels are float32 weights; features made under bf16 autocast
        # are bf16, and a maker may be used after autocast ends (post-processing).
        out = kernels[cells].to(flat.dtype) @ flat + bias[cells, None]  # (k, h * w)
        return out.view(-1, h, w)

    def dense(self) -> Tensor:
        flat = self.features.flatten(2)  # (B, E, h * w)
        out = self.kernels.to(flat.dtype) @ flat + self.bias[..., None]  # (B, S^2, h * w)
        return out.unflatten(-1, self.features.shape[-2:])

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.features, self.kernels, self.bias)


class FactorMasks(MaskMaker):
    """Decoupled SOLO's masks: cell (row i, column j) is sigmoid(X_j) * sigmoid(Y_i).

    ``x`` and ``y`` (B, S, h, w) are the X and Y branches' logits. The mask is returned
    as a logit, log(p / (1 - p)) of the product p, formed from log p = log sigmoid(Y_i) +
    log sigmoid(X_j) so that a product of two small probabilities does not underflow.
    """

    FIELDS = ("x", "y")

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if x.dim() != 4 or x.shape != y.shape:
            raise ValueError(
                f"FactorMasks: x and y must both be (B, S, h, w), got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        self.x, self.y = x, y

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, s, h, w = self.x.shape
        return (b, s * s, h, w)

    def logits(self, image: int, cells: Tensor) -> Tensor:
        return self._cells(image, cells)

    def _active(self, active: Tensor) -> Tensor:
        """The whole batch's active cells in one gather (a training step's every level)."""
        image, cell = active.nonzero(as_tuple=True)  # (P,) each, image-major then cell
        return self._cells(image, cell)

    def _cells(self, image: int | Tensor, cells: Tensor) -> Tensor:
        """Logits (k, h, w) of ``cells`` (k,) of ``image``: one image, or (k,) one per cell."""
        s = self.x.shape[1]
        log_y = F.logsigmoid(self.y[image, cells // s].float())  # (k, h, w): log sigmoid(Y_i)
        log_x = F.logsigmoid(self.x[image, cells % s].float())  # log sigmoid(X_j)
        return logit_from_log_prob(log_y + log_x)

    def dense(self) -> Tensor:
        log_x, log_y = F.logsigmoid(self.x.float()), F.logsigmoid(self.y.float())
        return logit_from_log_prob((log_y[:, :, None] + log_x[:, None, :]).flatten(1, 2))

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.x, self.y)


class DenseMasks(MaskMaker):
    """Masks already made for every cell: ``logits`` (B, S^2, h, w)."""

    FIELDS = ("logits",)

    def __init__(self, logits: Tensor) -> None:
        if logits.dim() != 4:
            raise ValueError(
                f"DenseMasks: logits must be (B, S^2, h, w), got {tuple(logits.shape)}"
            )
        self._logits = logits

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self._logits.shape)  # type: ignore[return-value]

    def logits(self, image: int, cells: Tensor) -> Tensor:
        return self._logits[image, cells]

    def dense(self) -> Tensor:
        return self._logits

    def tensors(self) -> tuple[Tensor, ...]:
        return (self._logits,)


def maker_type(cfg: SOLOConfig) -> type[MaskMaker]:
    """The kind of mask maker ``cfg``'s head returns."""
    if cfg.head == "solov2" or cfg.mask_head == "vanilla":
        return KernelMasks
    return FactorMasks


def logit_from_log_prob(log_p: Tensor) -> Tensor:
    """log(p / (1 - p)) from log p <= 0, without forming p (a product of sigmoids underflows).

    log p is clamped to -1e-6 (p <= 1 - 1e-6, logit <= 13.8): at p = 1 the logit is
    infinite and its gradient not a number.
    """
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log(-torch.expm1(log_p))
