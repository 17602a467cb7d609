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
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from solo_lib.browser.cache import CachedOutputs
from solo_lib.config import SOLOConfig
from solo_lib.evaluation import match_predictions
from solo_lib.postprocess import points_nms, postprocess
from solo_lib.viz import display_image, draw_instances


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
