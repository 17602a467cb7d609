"""An interactive browser of SOLO's results: thresholds, classes and images, live.

The network runs once (`cache_outputs`); the browser keeps its raw per-level
probabilities and re-runs only `solo_lib.postprocess.postprocess` when a
slider moves, so exploring thresholds costs milliseconds per image instead of
a forward pass.

What the browser shows (`ResultBrowser.widget`, an ipywidgets VBox):

* sliders for the image, the category-score threshold and the mask threshold,
  and a class filter;
* ground truth and predictions side by side, in the original image frame;
* one small heat map per FPN level: the category probability (max over the
  selected classes) after points NMS, with the cells above the score
  threshold ringed;
* a one-line summary: predictions, how many match ground truth, objects.

The picture is a PNG in an `ipywidgets.Image`, which JupyterLab renders
reliably and whose bytes a test can compare. Everything is reachable without a
kernel: set ``browser.image_slider.value`` and read ``browser.summary``,
``browser.figure`` or ``browser.image.value``. `ResultBrowser.static_figure`
returns a copy of the current view for viewers that cannot run widgets.

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

import io
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from solo_lib.config import SOLOConfig
from solo_lib.evaluation import match_predictions
from solo_lib.postprocess import points_nms, postprocess
from solo_lib.viz import display_image, draw_instances

#: The lowest category score whose masks `cache_outputs` keeps (and the score slider's minimum).
DEFAULT_MIN_SCORE = 0.05


@dataclass
class CachedOutputs:
    """SOLO's raw outputs for a few images, on the CPU, ready for `postprocess`.

    Per image i: ``images[i]`` (3, H, W) the network input, ``targets[i]`` its
    target dict (``orig_size``, ``content_box``, ``masks``, ``labels``, ...),
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
        mask_probs: Sequence[Tensor],
        min_score: float = 0.0,
        mask_dtype: torch.dtype = torch.float16,
    ) -> CachedOutputs:
        """A cache from batched probabilities: per level (N, C, S, S) and (N, S*S, h, w).

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
                [level[i] for level in mask_probs],
                mask_dtype,
            )
        return cache

    def _append(
        self,
        image: Tensor,
        target: dict[str, Tensor],
        category_probs: Sequence[Tensor],
        mask_probs: Sequence[Tensor],
        mask_dtype: torch.dtype,
    ) -> None:
        """Add one image: category (C, S, S) and mask (S*S, h, w) probabilities per level."""
        cates, cells, masks = [], [], []
        for level, (cate, mask) in enumerate(zip(category_probs, mask_probs, strict=True)):
            grid = cate.shape[-1]
            if cate.dim() != 3 or mask.dim() != 3 or mask.shape[0] != grid * grid:
                raise ValueError(
                    f"CachedOutputs: image {len(self.images)}, level {level}: expected category "
                    f"(C, S, S) and masks (S*S, h, w), got {tuple(cate.shape)} and {tuple(mask.shape)}"
                )
            keep = (cate.amax(dim=0).flatten() >= self.min_score).nonzero().squeeze(1)
            cates.append(cate.detach().float().cpu())
            cells.append(keep.cpu())
            masks.append(mask.detach()[keep].to("cpu", mask_dtype))
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

    def probabilities(self, i: int) -> tuple[list[Tensor], list[Tensor]]:
        """Image ``i``'s probabilities as `postprocess` takes them: per level (1, C, S, S)
        and (1, S*S, h, w); the masks that were not kept are zero."""
        cates, masks = [], []
        for cate, cells, kept in zip(
            self.category_probs[i], self.mask_cells[i], self.mask_probs[i], strict=True
        ):
            grid = cate.shape[-1]
            dense = kept.new_zeros((grid * grid, *kept.shape[1:]))
            dense[cells] = kept
            cates.append(cate[None])
            masks.append(dense[None])
        return cates, masks

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors (images, targets, probabilities)."""
        tensors = [*self.images]
        tensors += [v for target in self.targets for v in target.values() if isinstance(v, Tensor)]
        for per_image in (self.category_probs, self.mask_cells, self.mask_probs):
            tensors += [t for levels in per_image for t in levels]
        return sum(t.element_size() * t.numel() for t in tensors)


def _to_cpu(value: object) -> object:
    """A tensor moved to the CPU, a dict of them (the target's "original") item by item."""
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    return value.detach().cpu() if isinstance(value, Tensor) else value


@torch.no_grad()
def cache_outputs(
    model: nn.Module,
    dataset: Sequence,
    indices: Sequence[int],
    cfg: SOLOConfig,
    batch_size: int = 4,
    min_score: float = DEFAULT_MIN_SCORE,
    mask_dtype: torch.dtype = torch.float16,
) -> CachedOutputs:
    """Run ``model`` once (eval mode, no gradients) on ``dataset[i]`` for ``i`` in ``indices``.

    ``model(images)`` must return SOLO's logits (`solo_lib.model.SOLOOutput`);
    the sigmoid probabilities are kept on the CPU, with the masks of cells
    below ``min_score`` left out (see the module docstring for the memory this
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
            output = model(images.to(device))
            if len(output.category) != cfg.num_levels or len(output.masks) != cfg.num_levels:
                raise ValueError(
                    f"cache_outputs: the model returned {len(output.category)} category and "
                    f"{len(output.masks)} mask levels; the config has {cfg.num_levels}"
                )
            cates = [level.sigmoid() for level in output.category]
            masks = [level.sigmoid() for level in output.masks]
            for b, (image, target) in enumerate(items):
                cache._append(
                    image, target, [c[b] for c in cates], [m[b] for m in masks], mask_dtype
                )
    finally:
        model.train(was_training)
    return cache


@dataclass
class View:
    """What the browser shows for one image and one setting of the widgets."""

    index: int
    image_id: int
    image: np.ndarray  # (H0, W0, 3) RGB in [0, 1]
    ground_truth: dict[str, Tensor]  # masks bool (m, H0, W0), labels (m,): selected classes
    predictions: dict[str, Tensor]  # masks bool (n, H0, W0), labels, scores: selected classes
    heat_maps: list[Tensor]  # per level (S, S): max over selected classes after points NMS
    matched: int
    score_threshold: float
    mask_threshold: float
    classes: tuple[int, ...]  # the selected labels


class ResultBrowser:
    """Widgets over a `CachedOutputs`: image, thresholds and classes re-run `postprocess` live.

    Attributes: ``image_slider`` (IntSlider over the cached images),
    ``score_slider`` and ``mask_slider`` (FloatSliders: the thresholds passed
    to `postprocess`), ``class_filter`` (SelectMultiple of class labels 1..C),
    ``summary_html`` (the one-line summary), ``image`` (the picture, PNG bytes),
    ``widget`` (the VBox to display), ``figure`` (the current matplotlib
    Figure) and ``view`` (the numbers behind it). Changing any widget value
    redraws through ``observe``; the network is never called.
    """

    def __init__(
        self,
        cached: CachedOutputs,
        cfg: SOLOConfig,
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        match_iou: float = 0.5,
        figsize: tuple[float, float] = (10.0, 6.5),
        dpi: int = 80,
    ) -> None:
        if len(cached) == 0:
            raise ValueError("ResultBrowser: the cache holds no images")
        levels = {len(levels) for levels in cached.category_probs}
        if levels != {cfg.num_levels}:
            raise ValueError(
                f"ResultBrowser: the cache has {sorted(levels)} levels, the config {cfg.num_levels}"
            )
        self.cached = cached
        self.cfg = cfg
        self.match_iou = match_iou
        self.figsize = figsize
        self.dpi = dpi
        self.postprocess_runs = 0
        self._predictions: tuple[tuple, dict[str, Tensor]] | None = None

        score = cfg.score_threshold if score_threshold is None else score_threshold
        score = max(score, cached.min_score)  # lower thresholds would need the dropped masks
        mask = cfg.mask_threshold if mask_threshold is None else mask_threshold
        slider_style = {"description_width": "110px"}
        layout = widgets.Layout(width="330px")
        self.image_slider = widgets.IntSlider(
            value=0,
            min=0,
            max=len(cached) - 1,
            description="image",
            continuous_update=False,
            style=slider_style,
            layout=layout,
        )
        self.score_slider = widgets.FloatSlider(
            value=score,
            min=cached.min_score,
            max=0.95,
            step=0.05,
            readout_format=".2f",
            description="score threshold",
            continuous_update=False,
            style=slider_style,
            layout=layout,
        )
        self.mask_slider = widgets.FloatSlider(
            value=mask,
            min=0.05,
            max=0.95,
            step=0.05,
            readout_format=".2f",
            description="mask threshold",
            continuous_update=False,
            style=slider_style,
            layout=layout,
        )
        labels = list(range(1, cfg.num_classes + 1))
        self.class_filter = widgets.SelectMultiple(
            options=[(name, label) for name, label in zip(cfg.class_names, labels, strict=True)],
            value=tuple(labels),
            rows=min(len(labels), 6),
            description="classes",
            layout=widgets.Layout(width="220px"),
        )
        self.summary_html = widgets.HTML(layout=widgets.Layout(margin="4px 0 4px 8px"))
        width = f"{round(figsize[0] * dpi)}px"  # shown at its pixel size: sharp, not rescaled
        self.image = widgets.Image(
            format="png", layout=widgets.Layout(width=width, max_width="100%")
        )
        controls = widgets.VBox([self.image_slider, self.score_slider, self.mask_slider])
        self.widget = widgets.VBox(
            [widgets.HBox([controls, self.class_filter]), self.summary_html, self.image]
        )
        self.widget.add_class("solo-result-browser")
        self.view: View
        self.figure: Figure
        self.update()
        for control in (self.image_slider, self.score_slider, self.mask_slider, self.class_filter):
            control.observe(self.update, names="value")

    # --- state -----------------------------------------------------------------------------
    def _all_predictions(self, index: int, score: float, mask: float) -> dict[str, Tensor]:
        """`postprocess` output for image ``index``, re-run only when image or thresholds change."""
        key = (index, score, mask)
        if self._predictions is None or self._predictions[0] != key:
            cates, masks = self.cached.probabilities(index)
            target = self.cached.targets[index]
            result = postprocess(
                cates, masks, [target], self.cfg, score_threshold=score, mask_threshold=mask
            )[0]
            self.postprocess_runs += 1
            self._predictions = (key, result)
        return self._predictions[1]

    def _compute_view(self) -> View:
        index = self.image_slider.value
        score, mask = float(self.score_slider.value), float(self.mask_slider.value)
        classes = tuple(sorted(self.class_filter.value))
        wanted = torch.tensor(classes, dtype=torch.int64)

        predictions = self._all_predictions(index, score, mask)
        keep = torch.isin(predictions["labels"], wanted)
        predictions = {key: value[keep] for key, value in predictions.items()}
        target = self.cached.targets[index]
        ground_truth = target["original"]  # the annotations as stored
        keep = torch.isin(ground_truth["labels"], wanted)
        ground_truth = {key: value[keep] for key, value in ground_truth.items()}
        matched = match_predictions(predictions, ground_truth, iou=self.match_iou).num_matched

        channels = wanted - 1
        heat_maps = []
        for cate in self.cached.category_probs[index]:
            peaks = points_nms(cate[None])[0][channels]  # (k, S, S)
            grid = cate.shape[-1]
            heat_maps.append(peaks.amax(dim=0) if len(classes) else cate.new_zeros(grid, grid))
        return View(
            index=index,
            image_id=self.cached.image_id(index),
            image=display_image(self.cached.images[index], target, self.cfg),
            ground_truth=ground_truth,
            predictions=predictions,
            heat_maps=heat_maps,
            matched=matched,
            score_threshold=score,
            mask_threshold=mask,
            classes=classes,
        )

    def update(self, change: dict | None = None) -> None:
        """Recompute the view from the widget values and redraw (the ``observe`` callback)."""
        self.view = self._compute_view()
        self.summary_html.value = f"<b>{self.summary}</b>"
        self.figure = self._draw(self.view)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.dpi)
        self.image.value = buffer.getvalue()

    @property
    def summary(self) -> str:
        """One line: "image 12: 3 predictions (score > 0.50, mask > 0.50), 2 match ground
        truth at IoU >= 0.5 (4 objects)", plus "; classes: ..." when some are filtered out."""
        view = self.view
        n = view.predictions["labels"].shape[0]
        m = view.ground_truth["labels"].shape[0]
        text = (
            f"image {view.image_id}: {n} prediction{'s' * (n != 1)} "
            f"(score > {view.score_threshold:.2f}, mask > {view.mask_threshold:.2f}), "
            f"{view.matched} match ground truth at IoU >= {self.match_iou:g} "
            f"({m} object{'s' * (m != 1)})"
        )
        if len(view.classes) < self.cfg.num_classes:
            names = ", ".join(self.cfg.class_names[c - 1] for c in view.classes) or "none"
            text += f"; classes: {names}"
        return text

    def __str__(self) -> str:
        return self.summary

    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # --- drawing ---------------------------------------------------------------------------
    def static_figure(self) -> Figure:
        """A new matplotlib Figure of the current view (for notebooks viewed without widgets)."""
        return self._draw(self.view)

    def _draw(self, view: View) -> Figure:
        figure = Figure(figsize=self.figsize, dpi=self.dpi, layout="constrained")
        top, bottom = figure.subfigures(2, 1, height_ratios=[2.6, 1.0])
        gt_axes, pred_axes = top.subplots(1, 2)
        names = self.cfg.class_names
        gt, pred = view.ground_truth, view.predictions
        draw_instances(
            gt_axes,
            view.image,
            gt["masks"],
            gt["labels"],
            class_names=names,
            title=f"ground truth: {gt['labels'].shape[0]} objects",
        )
        draw_instances(
            pred_axes,
            view.image,
            pred["masks"],
            pred["labels"],
            scores=pred["scores"],
            class_names=names,
            title=f"prediction: {pred['labels'].shape[0]}, {view.matched} matched",
        )
        level_axes = bottom.subplots(1, len(view.heat_maps))
        for level, (axes, heat) in enumerate(zip(level_axes, view.heat_maps, strict=True)):
            shown = axes.imshow(heat.numpy(), vmin=0.0, vmax=1.0, cmap="magma")
            rows, cols = (heat > view.score_threshold).nonzero(as_tuple=True)
            axes.scatter(cols.numpy(), rows.numpy(), s=40, facecolors="none", edgecolors="cyan")
            axes.set_title(f"level {level}: S={heat.shape[-1]}", fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
        bottom.colorbar(shown, ax=list(level_axes), shrink=0.9, label="category prob.")
        bottom.suptitle(
            "category heat maps after points NMS (ringed: above the score threshold)", fontsize=9
        )
        return figure
