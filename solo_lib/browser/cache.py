"""The browser's output cache: the network runs once, its probabilities are kept.

Only the masks that post-processing can ask for are made: those of the cells whose best
class reaches ``min_score`` (the network's mask makers, candidate-first).

Memory. Per cached image the cache holds the input image (3 x H x W float32:
1.1 MB at 256 x 352, 10 MB at 800 x 1088), its target, the category maps
(C x sum S^2 float32: 6 KB for the cpu preset) and the mask probabilities of
the cells whose best class reaches ``min_score`` (float16, 2 x h x w bytes per
cell: 11 KB per level-0 cell for the cpu preset, 109 KB at 800 x 1088).
Keeping every cell would cost 4.7 MB per image for the cpu preset and 330 MB
at the paper's size; a trained model has a few dozen cells above 0.05, so the
default ``min_score=0.05`` keeps a course-sized set (tens of images) in a few
tens of MB. `CachedOutputs.nbytes` reports the total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.model import SOLO
from solo_lib.postprocess import LevelMasks, MaskSource, gather_masks, image_masks

#: The lowest category score whose masks `cache_outputs` keeps (and the score slider's minimum).
DEFAULT_MIN_SCORE = 0.05


@dataclass
class CachedOutputs:
    """SOLO's raw outputs for a few images, on the CPU, ready for `postprocess`.

    Per image i: ``images[i]`` (3, H, W) the network input, ``targets[i]`` its
    target dict (``geometry``, ``original``, ``masks``, ``labels``, ...),
    and per level l: ``category_probs[i][l]`` (C, S, S) float32 probabilities,
    ``mask_cells[i][l]`` (k,) int64 the cells (row * S + col) whose masks are
    kept and ``mask_probs[i][l]`` (k, h, w) their mask probabilities. Cells not
    kept are those whose best class is below ``min_score``: `postprocess` never
    selects them at a score threshold >= ``min_score``, so their masks are
    never needed.
    """

    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    category_probs: list[list[Tensor]]
    mask_cells: list[list[Tensor]]
    mask_probs: list[list[Tensor]]
    min_score: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.images)
        for name in ("targets", "category_probs", "mask_cells", "mask_probs"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"CachedOutputs: {name} has {len(getattr(self, name))} entries for {n} images"
                )
        for i in range(n):
            levels = len(self.category_probs[i])
            for level in range(levels):
                cate = self.category_probs[i][level]
                cells, masks = self.mask_cells[i][level], self.mask_probs[i][level]
                if cate.dim() != 3 or cate.shape[1] != cate.shape[2]:
                    raise ValueError(
                        f"CachedOutputs: category_probs[{i}][{level}] must be (C, S, S), "
                        f"got {tuple(cate.shape)}"
                    )
                if cells.dim() != 1 or masks.dim() != 3 or cells.shape[0] != masks.shape[0]:
                    raise ValueError(
                        f"CachedOutputs: mask_cells[{i}][{level}] (k,) and mask_probs[{i}][{level}] "
                        f"(k, h, w) disagree: {tuple(cells.shape)} and {tuple(masks.shape)}"
                    )
            if len(self.mask_cells[i]) != levels or len(self.mask_probs[i]) != levels:
                raise ValueError(
                    f"CachedOutputs: image {i} has {levels} category levels, "
                    f"{len(self.mask_cells[i])} mask_cells and {len(self.mask_probs[i])} mask_probs"
                )

    @classmethod
    def from_probabilities(
        cls,
        images: Tensor | Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]],
        category_probs: Sequence[Tensor],
        mask_probs: Sequence[Tensor | MaskSource],
        min_score: float = 0.0,
        mask_dtype: torch.dtype = torch.float16,
    ) -> CachedOutputs:
        """A cache from batched probabilities: per level (N, C, S, S), and (N, S*S, h, w)
        or a `MaskSource` (then only the kept cells' masks are made).

        ``images`` is (N, 3, H, W) or a list of (3, H, W); ``targets`` one dict per
        image. Masks of cells whose best class is below ``min_score`` are dropped.
        """
        if len(category_probs) != len(mask_probs):
            raise ValueError(
                f"CachedOutputs.from_probabilities: {len(category_probs)} category levels "
                f"but {len(mask_probs)} mask levels"
            )
        cache = cls([], [], [], [], [], min_score)
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            cache._append(
                image,
                target,
                [level[i] for level in category_probs],
                [image_masks(level, i) for level in mask_probs],
                mask_dtype,
            )
        return cache

    def _append(
        self,
        image: Tensor,
        target: dict[str, Tensor],
        category_probs: Sequence[Tensor],
        mask_probs: Sequence[LevelMasks],
        mask_dtype: torch.dtype,
    ) -> None:
        """Add one image: category (C, S, S) probabilities per level, and its masks
        (`LevelMasks`: (S*S, h, w) probabilities, or a function that makes them)."""
        cates, cells, masks = [], [], []
        for level, (cate, mask) in enumerate(zip(category_probs, mask_probs, strict=True)):
            grid = cate.shape[-1]
            dense = isinstance(mask, Tensor)
            if cate.dim() != 3 or (dense and (mask.dim() != 3 or mask.shape[0] != grid * grid)):
                found = tuple(mask.shape) if dense else "a function of the cells"
                raise ValueError(
                    f"CachedOutputs: image {len(self.images)}, level {level}: expected category "
                    f"(C, S, S) and masks (S*S, h, w), got {tuple(cate.shape)} and {found}"
                )
            keep = (cate.amax(dim=0).flatten() >= self.min_score).nonzero().squeeze(1)
            cates.append(cate.detach().float().cpu())
            cells.append(keep.cpu())
            masks.append(gather_masks(mask, keep).detach().to("cpu", mask_dtype))
        self.images.append(image.detach().cpu())
        self.targets.append({key: _to_cpu(value) for key, value in target.items()})
        self.category_probs.append(cates)
        self.mask_cells.append(cells)
        self.mask_probs.append(masks)

    def __len__(self) -> int:
        return len(self.images)

    def image_id(self, i: int) -> int:
        """The data-set index of cached image ``i`` (its target's ``image_id``, else ``i``)."""
        image_id = self.targets[i].get("image_id")
        return i if image_id is None else int(image_id)

    def probabilities(self, i: int) -> tuple[list[Tensor], list[KeptMasks]]:
        """Image ``i``'s probabilities as `postprocess` takes them: per level (1, C, S, S)
        and the kept masks (`KeptMasks`, a batch of one image)."""
        cates = [cate[None] for cate in self.category_probs[i]]
        masks = [
            KeptMasks(cells, kept, cate.shape[-1] ** 2)
            for cate, cells, kept in zip(
                self.category_probs[i], self.mask_cells[i], self.mask_probs[i], strict=True
            )
        ]
        return cates, masks

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors (images, targets, probabilities)."""
        tensors = [*self.images]
        tensors += [v for target in self.targets for v in target.values() if isinstance(v, Tensor)]
        for per_image in (self.category_probs, self.mask_cells, self.mask_probs):
            tensors += [t for levels in per_image for t in levels]
        return sum(t.element_size() * t.numel() for t in tensors)


class KeptMasks:
    """One image's kept masks on one level, handed out as `postprocess` asks for them.

    ``cells`` (k,) int64 and their ``masks`` (k, h, w) among ``num_cells`` = S^2. Asking
    for a cell that was not kept is an error: a score threshold below the cache's
    ``min_score`` would need it.
    """

    def __init__(self, cells: Tensor, masks: Tensor, num_cells: int) -> None:
        self.masks = masks
        self.num_cells = num_cells
        self.position = torch.full((num_cells,), -1, dtype=torch.int64)  # cell -> row of masks
        self.position[cells] = torch.arange(len(cells))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(1, S^2, h, w): the dense shape these masks stand for."""
        return (1, self.num_cells, *self.masks.shape[-2:])

    def probabilities(self, image: int, cells: Tensor) -> Tensor:
        """The kept masks (k, h, w) float32 of ``cells`` of image 0."""
        if image != 0:
            raise ValueError(f"KeptMasks holds one image's masks (image 0), asked for {image}")
        rows = self.position[cells.cpu()]
        if bool((rows < 0).any()):
            missing = cells.cpu()[rows < 0].tolist()
            raise ValueError(
                f"KeptMasks: the masks of cells {missing} were not kept (their best class "
                f"is below the cache's min_score); cache the outputs with a lower min_score"
            )
        return self.masks[rows].float()


def _to_cpu(value: object) -> object:
    """A tensor moved to the CPU, a dict of them (the target's "original") item by item."""
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    return value.detach().cpu() if isinstance(value, Tensor) else value


@torch.no_grad()
def cache_outputs(
    model: SOLO,
    dataset: Sequence,
    indices: Sequence[int],
    cfg: SOLOConfig,
    batch_size: int = 4,
    min_score: float = DEFAULT_MIN_SCORE,
    mask_dtype: torch.dtype = torch.float16,
) -> CachedOutputs:
    """Run ``model`` once (eval mode, no gradients) on ``dataset[i]`` for ``i`` in ``indices``.

    ``model.mask_makers(images)`` must return SOLO's `solo_lib.model.SOLOParts`; the
    category probabilities are kept on the CPU, and the masks of the cells whose best
    class reaches ``min_score``, made for those cells only (see the module docstring for the memory this
    takes). The model's training mode is restored afterwards.
    """
    indices = [int(i) for i in indices]
    for i in indices:
        if not 0 <= i < len(dataset):
            raise IndexError(
                f"cache_outputs: index {i} is outside the data set (0..{len(dataset) - 1})"
            )
    if batch_size < 1:
        raise ValueError(f"cache_outputs: batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters(), torch.empty(0)).device
    cache = CachedOutputs([], [], [], [], [], min_score)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(indices), batch_size):
            items = [dataset[i] for i in indices[start : start + batch_size]]
            images = torch.stack([image for image, _ in items])
            parts = model.mask_makers(images.to(device))
            if len(parts.category) != cfg.num_levels or len(parts.makers) != cfg.num_levels:
                raise ValueError(
                    f"cache_outputs: the model returned {len(parts.category)} category and "
                    f"{len(parts.makers)} mask levels; the config has {cfg.num_levels}"
                )
            cates = parts.category_probabilities()
            for b, (image, target) in enumerate(items):
                masks = [image_masks(maker, b) for maker in parts.makers]
                cache._append(image, target, [c[b] for c in cates], masks, mask_dtype)
    finally:
        model.train(was_training)
    return cache
