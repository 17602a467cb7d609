"""From SOLO's probability maps to instances: points NMS, thresholds, maskness, Matrix NMS.

`postprocess` turns the network's per-level category probabilities and mask makers
for a batch into, per image, binary masks at the original image size with labels and
scores. It runs in two stages: the category maps alone choose the candidates, and only
then are masks made, for those cells only (a trained model has a few dozen candidates
among the S^2 cells of every level). It is built from small steps that notebook 05
calls one by one, in the same order:

1. `points_nms`: keep only the local maxima of each category map (2x2 window).
2. `select_cells`: every (cell, class) pair above the score threshold is a
   candidate (label = class + 1); make its cell's mask (`solo_lib.model.mask_makers`)
   and bring it to one common size (the level-0 mask size).
3. `rescore_by_maskness`: binarise the masks, drop tiny ones, multiply each
   score by its maskness (mean probability inside the binary mask), keep the
   best ``nms_pre``.
4. `suppress`: Matrix NMS (`matrix_nms`) decays the scores of masks that
   overlap a higher-scored mask of the same class; low scores are dropped.
5. `masks_to_original`: undo the input layout (the image's `ImageGeometry`, the one
   way back to the original image) and threshold.

Everything stays on the input device; there are no per-cell Python loops and
no CPU copies of mask tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.config import SOLOConfig
from solo_lib.data.geometry import ImageGeometry

if TYPE_CHECKING:  # only for annotations: the model package does not import this module
    from solo_lib.model.solo import SOLOParts

#: One image's masks on one level, as `select_cells` takes them: every cell's probabilities
#: (S*S, h, w), or a function that makes the probabilities (k, h, w) of the cells (k,) it is
#: given (a `MaskMaker`'s, for one image).
LevelMasks = Tensor | Callable[[Tensor], Tensor]


class MaskSource(Protocol):
    """A batch's masks on one level, made on demand: a network's `MaskMaker`
    (`solo_lib.model.mask_makers`), or the result browser's cache of kept masks."""

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, S*S, h, w): the shape of every cell's masks, which are never all made."""
        ...

    def probabilities(self, image: int, cells: Tensor) -> Tensor:
        """Mask probabilities (k, h, w) float32 of ``cells`` (k,) of image ``image``."""
        ...


def gather_masks(masks: LevelMasks, cells: Tensor) -> Tensor:
    """The mask probabilities (k, h, w) float32 of ``cells`` (k,) from `LevelMasks`."""
    return (masks[cells] if isinstance(masks, Tensor) else masks(cells)).float()


class Candidates(NamedTuple):
    """Candidates of one image still in the running, one row per (cell, class) pair (k of them)."""

    scores: Tensor  # (k,) float32
    labels: Tensor  # (k,) int64, 1..C
    levels: Tensor  # (k,) int64, the FPN level of the cell
    cells: Tensor  # (k,) int64, cell index row * S + col within its level
    masks: Tensor  # (k, h, w) float32 mask probabilities at the level-0 mask size

    def select(self, index: Tensor) -> Candidates:
        """The candidates at `index` (a bool mask or an index tensor), in that order."""
        return Candidates(*(field[index] for field in self))


# --- step 1: points NMS ------------------------------------------------------------------
def points_nms(heat: Tensor) -> Tensor:
    """Zero every value of `heat` (B, C, S, S) that is not the maximum of its 2x2 window.

    The window of cell (i, j) holds cells (i-1..i, j-1..j): a max pool with
    kernel 2, stride 1 and padding 1 gives an (S+1, S+1) map whose top-left
    (S, S) part is that window maximum, as in the SOLO code. A cell survives when it
    is at least its upper, left and upper-left neighbours: a blob of cells that see the
    same object is thinned, not reduced to one peak; Matrix NMS handles what remains.
    """
    if heat.dim() != 4:
        raise ValueError(f"points_nms: heat must be (B, C, S, S), got shape {tuple(heat.shape)}")
    window_max = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    return heat * (window_max == heat)


# --- Matrix NMS ----------------------------------------------------------------------------
@functools.cache
def _cpu_int8_matmul_available() -> bool:
    """Whether this PyTorch multiplies int8 matrices on the CPU (`torch._int_mm`).

    `torch._int_mm` is a private op: PyTorch has no public int8 x int8 -> int32 matrix
    product. It is probed once, checked for the right answer, and any failure falls
    back to the float32 product, so a PyTorch that drops or changes it costs only speed
    (tests compare both paths).
    """
    try:
        probe = torch.ones(2, 8, dtype=torch.int8)
        return bool(torch._int_mm(probe, probe.T).eq(8).all())
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def pairwise_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Shared pixel counts (n, m) float32 of flat binary masks `a` (n, P) and `b` (m, P), bool.

    One matrix product. On the CPU it runs in int8 with int32 accumulation
    (exact, and 2-4x faster than float32); on a GPU in float32, which is exact
    for 0/1 inputs even with TF32 (the products are accumulated in float32). Autocast
    is off for it: validation runs under bf16 autocast, whose 8-bit significand would
    round a count of 1001 pixels to 1000.
    """
    if a.device.type == "cpu" and _cpu_int8_matmul_available():
        return torch._int_mm(a.view(torch.int8), b.view(torch.int8).T).float()
    with torch.autocast(a.device.type, enabled=False):
        return a.float() @ b.float().T


def mask_iou(a: Tensor, b: Tensor | None = None) -> Tensor:
    """IoU matrix (n, m) of binary masks `a` (n, H, W) and `b` (m, H, W), both bool.

    Without `b`, the IoU of `a` with itself (n, n): the areas are then the
    diagonal of the intersection matrix, so the masks are read only once.
    """
    for name, masks in (("a", a), ("b", a if b is None else b)):
        if masks.dtype != torch.bool or masks.dim() != 3:
            raise ValueError(
                f"mask_iou: {name} must be a bool tensor (N, H, W), "
                f"got {masks.dtype} of shape {tuple(masks.shape)}"
            )
    flat_a = a.flatten(1).contiguous()  # (n, H*W); flatten, unlike reshape(n, -1), allows n = 0
    if b is None:
        inter = pairwise_intersection(flat_a, flat_a)
        area_a = area_b = inter.diagonal()
    else:
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(
                f"mask_iou: mask sizes differ: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}"
            )
        flat_b = b.flatten(1).contiguous()
        inter = pairwise_intersection(flat_a, flat_b)
        area_a, area_b = flat_a.sum(1).float(), flat_b.sum(1).float()
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1.0)


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
) -> Tensor:
    """Matrix NMS (SOLOv2): decayed scores (N,) of binary `masks` (N, H, W), in the input order.

    After sorting by score, mask j is decayed by every higher-scored mask i of
    the same class: decay_ij = f(iou_ij) / f(comp_i), where comp_i is the largest
    IoU of mask i with any higher-scored mask of its class (how much i itself is
    suppressed) and f(x) = exp(-sigma * x^2) (gaussian) or 1 - x (linear). The
    decay of j is the minimum over i, so the best mask of each class keeps its
    score. All pairs come from one IoU matrix: no loop, no greedy pass.
    """
    n = scores.shape[0]
    if masks.dtype != torch.bool or masks.dim() != 3:
        raise ValueError(
            f"matrix_nms: masks must be a bool tensor (N, H, W) of binary masks, got {masks.dtype} "
            f"of shape {tuple(masks.shape)}; threshold soft masks first (e.g. probs > 0.5)"
        )
    if masks.shape[0] != n or labels.shape != (n,) or scores.shape != (n,):
        raise ValueError(
            f"matrix_nms: expected masks (N, H, W), labels (N,) and scores (N,) with one N, got "
            f"{tuple(masks.shape)}, {tuple(labels.shape)} and {tuple(scores.shape)}"
        )
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"matrix_nms: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    if n == 0:
        return scores.clone()

    order = scores.argsort(descending=True, stable=True)
    sorted_labels = labels[order]
    iou = mask_iou(masks)[order][:, order]  # (N, N) by score: row i above column j > i
    same_class = sorted_labels[:, None] == sorted_labels[None, :]
    iou = (iou * same_class).triu(diagonal=1)
    compensation = iou.max(dim=0).values[:, None]  # (N, 1): comp_i, applied along row i

    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou.square() - compensation.square()))
    else:
        # An exact duplicate i of a higher mask has comp_i = 1: the clamp turns its row
        # into 0 (for iou 1) or a large number, never NaN; row 0 (comp 0) keeps decay <= 1.
        decay = (1.0 - iou) / (1.0 - compensation).clamp(min=1e-6)
    decayed_sorted = scores[order] * decay.min(dim=0).values

    decayed = torch.empty_like(decayed_sorted)
    decayed[order] = decayed_sorted
    return decayed


# --- steps 2-5 ----------------------------------------------------------------------------
def select_cells(
    category_probs: Sequence[Tensor],
    mask_probs: Sequence[LevelMasks],
    cfg: SOLOConfig,
    score_threshold: float | None = None,
) -> Candidates:
    """Every (cell, class) pair of one image that scores above `score_threshold`.

    `category_probs` are per level (C, S, S) (after `points_nms`); `mask_probs` per
    level every cell's mask probabilities (S*S, h, w) or a function that makes them for
    the cells it is given (`LevelMasks`), at the level's mask size
    ``cfg.mask_size(level)`` (`postprocess` checks it; a direct caller must). As in mmdetection's ``SOLOHead`` and the
    official code, the threshold applies to the flattened (cells x classes) scores, so a
    cell can give one candidate for each class that passes (an arg-max per cell would
    lose that recall). The category scores alone choose the candidates; only then is
    each candidate cell's mask made (or gathered), once per cell, and resized (bilinear) to the level-0
    mask size, so that masks of all levels can be compared. Candidates come level by
    level, then cell, then class.
    """
    threshold = cfg.score_threshold if score_threshold is None else score_threshold
    size = cfg.mask_size(0)
    scores, labels, levels, cells, masks = [], [], [], [], []
    for level, (probs, level_masks) in enumerate(zip(category_probs, mask_probs, strict=True)):
        cell_scores = probs.float().flatten(1).T  # (S*S, C): row = cell, column = class
        cell, cls = (cell_scores > threshold).nonzero(as_tuple=True)  # (k_l,) each
        scores.append(cell_scores[cell, cls])
        labels.append(cls + 1)
        levels.append(torch.full_like(cell, level))
        cells.append(cell)
        if not cell.numel():  # no candidate: no mask to make on this level
            masks.append(probs.new_zeros((0, *size), dtype=torch.float32))
            continue
        # A cell that passes for several classes has its mask made (and resized) once.
        unique, pair_cell = cell.unique(return_inverse=True)  # (u,), (k_l,) into unique
        gathered = gather_masks(level_masks, unique)  # (u, h_l, w_l)
        if tuple(gathered.shape[-2:]) != size:
            gathered = F.interpolate(gathered[None], size=size, mode="bilinear")[0]
        masks.append(gathered.reshape(-1, *size)[pair_cell])
    return Candidates(*(torch.cat(x) for x in (scores, labels, levels, cells, masks)))


def rescore_by_maskness(
    candidates: Candidates, cfg: SOLOConfig, mask_threshold: float | None = None
) -> Candidates:
    """Drop masks of area <= their level's stride (or ``cfg.min_mask_area``); score *=
    maskness; top ``cfg.nms_pre``.

    Maskness is the mean probability inside the binary mask: a confident,
    crisp mask keeps its category score, a vague one loses part of it. Only then
    are the best ``cfg.nms_pre`` kept (as in mmdetection: the cut uses the rescored
    scores). The result is sorted by score, highest first.
    """
    threshold = cfg.mask_threshold if mask_threshold is None else mask_threshold
    binary = candidates.masks > threshold
    area = binary.sum((1, 2), dtype=torch.float32)
    if cfg.min_mask_area is None:  # SOLO's rule: more pixels than the level's stride
        strides = torch.tensor(cfg.strides, dtype=torch.float32, device=area.device)
        keep = area > strides[candidates.levels]
    else:
        keep = area > cfg.min_mask_area
    candidates, binary, area = candidates.select(keep), binary[keep], area[keep]
    maskness = (candidates.masks * binary).sum((1, 2)) / area
    candidates = candidates._replace(scores=candidates.scores * maskness)
    order = candidates.scores.argsort(descending=True)[: cfg.nms_pre]
    return candidates.select(order)


def suppress(
    candidates: Candidates, cfg: SOLOConfig, mask_threshold: float | None = None
) -> Candidates:
    """Matrix NMS on the binary masks, then scores < ``cfg.update_threshold`` dropped.

    Returns at most ``cfg.max_per_img`` candidates with their decayed scores,
    highest first.
    """
    threshold = cfg.mask_threshold if mask_threshold is None else mask_threshold
    decayed = matrix_nms(
        candidates.masks > threshold,
        candidates.labels,
        candidates.scores,
        kernel=cfg.nms_kernel,
        sigma=cfg.nms_sigma,
    )
    candidates = candidates._replace(scores=decayed).select(decayed >= cfg.update_threshold)
    order = candidates.scores.argsort(descending=True)[: cfg.max_per_img]
    return candidates.select(order)


def _geometry(meta: dict, index: int) -> ImageGeometry:
    """`meta["geometry"]`, or a clear error naming the image."""
    geometry = meta.get("geometry") if isinstance(meta, dict) else None
    if not isinstance(geometry, ImageGeometry):
        found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise KeyError(
            f"postprocess: metas[{index}] needs 'geometry', an ImageGeometry (as the data "
            f"sets' targets hold); got {found}"
        )
    return geometry


#: Float32 pixels mapped back to the original size at once (64 Mi: 256 MB).
ORIGINAL_CHUNK_PIXELS = 2**26


def masks_to_original(
    masks: Tensor, geometry: ImageGeometry, cfg: SOLOConfig, mask_threshold: float | None = None
) -> Tensor:
    """Soft masks (n, h, w) over the input frame -> binary masks (n, H0, W0) of the original.

    `ImageGeometry.to_original` undoes the input layout (resize to the input size, crop
    the padding, undo a flip, resize to the original size); the result is thresholded.
    A few masks at a time, so that the float32 maps in between stay near
    `ORIGINAL_CHUNK_PIXELS` (100 masks of a 24-megapixel photo would need 9.6 GB at once).
    """
    threshold = cfg.mask_threshold if mask_threshold is None else mask_threshold
    h0, w0 = geometry.orig_size
    out = torch.empty((masks.shape[0], h0, w0), dtype=torch.bool, device=masks.device)
    step = max(1, ORIGINAL_CHUNK_PIXELS // (h0 * w0))
    for start in range(0, masks.shape[0], step):
        out[start : start + step] = geometry.to_original(masks[start : start + step]) > threshold
    return out


def _check_levels(
    category_probs: Sequence[Tensor],
    mask_probs: Sequence[Tensor | MaskSource],
    metas: Sequence[dict],
    cfg: SOLOConfig,
) -> None:
    if len(category_probs) != cfg.num_levels or len(mask_probs) != cfg.num_levels:
        raise ValueError(
            f"postprocess: expected {cfg.num_levels} levels of category and mask maps, "
            f"got {len(category_probs)} and {len(mask_probs)}"
        )
    batch = category_probs[0].shape[0]
    if len(metas) != batch:
        raise ValueError(f"postprocess: {len(metas)} metas for a batch of {batch} images")
    for level, (cate, mask) in enumerate(zip(category_probs, mask_probs, strict=True)):
        grid = cfg.num_grids[level]
        expected_cate = (batch, cfg.num_classes, grid, grid)
        expected_mask = (batch, grid * grid, *cfg.mask_size(level))
        if tuple(cate.shape) != expected_cate:
            raise ValueError(
                f"postprocess: category_probs[{level}] must be (B, C, S, S) = {expected_cate}, "
                f"got {tuple(cate.shape)}"
            )
        if tuple(mask.shape) != expected_mask:
            raise ValueError(
                f"postprocess: mask_probs[{level}] must make (B, S*S, h, w) = {expected_mask}, "
                f"got {tuple(mask.shape)}"
            )


def postprocess_image(
    category_probs: Sequence[Tensor],
    mask_probs: Sequence[LevelMasks],
    meta: dict,
    cfg: SOLOConfig,
    score_threshold: float | None = None,
    mask_threshold: float | None = None,
    index: int = 0,
) -> dict[str, Tensor]:
    """Steps 2-5 for one image; `category_probs` (C, S, S) per level are already points-NMS'd,
    `mask_probs` per level `LevelMasks`."""
    geometry = _geometry(meta, index)
    candidates = select_cells(category_probs, mask_probs, cfg, score_threshold)
    candidates = rescore_by_maskness(candidates, cfg, mask_threshold)
    candidates = suppress(candidates, cfg, mask_threshold)
    return {
        "masks": masks_to_original(candidates.masks, geometry, cfg, mask_threshold),
        "labels": candidates.labels.long(),
        "scores": candidates.scores.float(),
    }


def image_masks(masks: Tensor | MaskSource, image: int) -> LevelMasks:
    """Image ``image``'s `LevelMasks` from a batch's: a tensor's row, or the maker's rule."""
    if isinstance(masks, Tensor):
        return masks[image]
    return functools.partial(masks.probabilities, image)


def postprocess(
    category_probs: Sequence[Tensor],
    mask_probs: Sequence[Tensor | MaskSource],
    metas: Sequence[dict],
    cfg: SOLOConfig,
    score_threshold: float | None = None,
    mask_threshold: float | None = None,
) -> list[dict]:
    """Instances of a batch from SOLO's category probabilities and masks.

    `category_probs`: per level (B, C, S, S) probabilities (sigmoid already applied);
    `mask_probs`: per level a `MaskSource` (the network's mask maker: only the
    candidates' masks are made) or every cell's mask probabilities (B, S*S, h, w), with
    (h, w) = ``cfg.mask_size(level)``; `metas`: per image a dict with its ``geometry``
    (an `ImageGeometry`), as the data sets' targets hold. Thresholds default to the
    config's.

    Returns per image ``{"masks": bool (n, H0, W0), "labels": int64 (n,) in 1..C,
    "scores": float32 (n,)}``, highest score first; n = 0 is a valid answer.
    """
    _check_levels(category_probs, mask_probs, metas, cfg)
    peaks = [points_nms(probs) for probs in category_probs]
    return [
        postprocess_image(
            [level[b] for level in peaks],
            [image_masks(level, b) for level in mask_probs],
            meta,
            cfg,
            score_threshold,
            mask_threshold,
            index=b,
        )
        for b, meta in enumerate(metas)
    ]


def postprocess_parts(
    parts: SOLOParts,
    metas: Sequence[dict],
    cfg: SOLOConfig,
    score_threshold: float | None = None,
    mask_threshold: float | None = None,
) -> list[dict]:
    """`postprocess` of a network's `SOLOParts` (``SOLO.mask_makers``): candidate-first."""
    return postprocess(
        parts.category_probabilities(), parts.makers, metas, cfg, score_threshold, mask_threshold
    )
