"""Drawing post-processing and evaluation: level maps, masks, score changes, PR curves, results.

The pictures of notebook 05.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from solo_lib.viz.instances import DEFAULT_CLASS_NAMES, as_numpy, class_color, draw_instances


def plot_level_maps(
    rows: Sequence[tuple[str, Sequence[object]]], threshold: float | None = None
) -> Figure:
    """Category maps of every FPN level: one row per post-processing stage, one column per level.

    `rows` holds (row title, per level an (S, S) map) pairs, e.g. the maximum over
    classes of the category probabilities before and after points NMS. All panels
    share one colour scale, from 0 to the largest value shown, so that the rows
    compare; with `threshold`, the cells above it are ringed and counted.
    """
    if not rows or any(len(maps) == 0 or len(maps) != len(rows[0][1]) for _, maps in rows):
        raise ValueError(
            "plot_level_maps: rows must be (title, maps) pairs with the same number (> 0) of "
            f"per-level (S, S) maps, got {[(title, len(maps)) for title, maps in rows]}"
        )
    arrays = [[as_numpy(heat).astype(np.float32) for heat in maps] for _, maps in rows]
    vmax = max(float(heat.max()) for maps in arrays for heat in maps) or 1.0
    n_levels = len(arrays[0])
    fig, axes = plt.subplots(
        len(rows),
        n_levels,
        figsize=(1.45 * n_levels + 1.1, 1.65 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for r, ((title, _), maps) in enumerate(zip(rows, arrays, strict=True)):
        for level, heat in enumerate(maps):
            ax = axes[r, level]
            shown = ax.imshow(heat, vmin=0.0, vmax=vmax, cmap="magma", interpolation="nearest")
            if threshold is not None:
                ys, xs = np.nonzero(heat > threshold)
                ax.scatter(xs, ys, s=30, facecolors="none", edgecolors="cyan", linewidths=1)
                ax.set_xlabel(f"{xs.size} above {threshold:g}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"level {level}: S={heat.shape[-1]}", fontsize=9)
            if level == 0:
                ax.set_ylabel(title, fontsize=9)
    fig.colorbar(shown, ax=axes, shrink=0.8, label="category probability")
    return fig


def plot_mask_grid(
    masks: object,
    titles: Sequence[str],
    threshold: float | None = None,
    ncols: int = 6,
) -> Figure:
    """Soft masks (n, h, w) in [0, 1] as small grey images, with `titles` and, optionally,
    the `threshold` contour (the binary mask's outline) in cyan."""
    masks_np = as_numpy(masks).astype(np.float32)
    if masks_np.ndim != 3 or len(titles) != masks_np.shape[0]:
        raise ValueError(
            f"plot_mask_grid: masks must be (n, h, w) with one title each, got shape "
            f"{masks_np.shape} and {len(titles)} titles"
        )
    n = masks_np.shape[0]
    cols = max(1, min(ncols, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no masks", ha="center", va="center")
    for ax, mask, title in zip(axes.flat, masks_np, titles, strict=False):
        ax.imshow(mask, vmin=0.0, vmax=1.0, cmap="gray")
        if threshold is not None and mask.min() < threshold < mask.max():
            ax.contour(mask, levels=[threshold], colors="cyan", linewidths=0.8)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_score_changes(
    before: object,
    after: object,
    labels: object,
    threshold: float | None = None,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    max_bars: int = 20,
) -> Figure:
    """Each mask's score before (light bar) and after (solid bar) Matrix NMS, in its class colour.

    The masks are shown in the order given (`before` sorted highest first reads
    best), at most `max_bars` of them; `threshold` (the update threshold) is drawn
    as a dashed line: solid bars below it are dropped.
    """
    before_np, after_np = as_numpy(before).reshape(-1), as_numpy(after).reshape(-1)
    labels_np = as_numpy(labels).astype(int).reshape(-1)
    if not before_np.shape == after_np.shape == labels_np.shape:
        raise ValueError(
            "plot_score_changes: before, after and labels must all be (n,), got "
            f"{before_np.shape}, {after_np.shape} and {labels_np.shape}"
        )
    shown = min(len(before_np), max_bars)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * shown + 1.5), 2.6))
    for i in range(shown):
        color = class_color(int(labels_np[i]))
        ax.bar(i - 0.2, before_np[i], width=0.4, color=color, alpha=0.3, edgecolor=color)
        ax.bar(i + 0.2, after_np[i], width=0.4, color=color)
    handles = [
        Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3),
        Rectangle((0, 0), 1, 1, color="0.5"),
    ]
    names = ["before", "after Matrix NMS"]
    for label in sorted(set(labels_np[:shown].tolist())):
        handles.append(Rectangle((0, 0), 1, 1, color=class_color(label)))
        names.append(class_names[label - 1] if 1 <= label <= len(class_names) else str(label))
    if threshold is not None:
        handles.append(ax.axhline(threshold, color="0.3", ls="--", lw=1))
        names.append(f"dropped below {threshold:g}")
    if shown == 0:
        ax.text(0.5, 0.5, "no masks", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(shown))
    ax.set_xlabel("mask, by score before Matrix NMS")
    ax.set_ylabel("score")
    ax.set_ylim(0, max(1e-3, float(before_np[:shown].max(initial=0.0))) * 1.15)
    ax.legend(handles, names, fontsize=7, loc="upper right", ncols=2)
    fig.tight_layout()
    return fig


def plot_pr_curves(
    pr_curves: dict[str, dict[str, torch.Tensor]],
    ap50: dict[str, float] | None = None,
) -> Figure:
    """Precision against recall at IoU 0.5, one panel per class, in the class colours.

    `pr_curves` is ``MaskEvaluator.compute()["pr_curves"]`` ({class name: {"recall",
    "precision", ...}} on COCO's recall points up to the highest recall reached) and
    `ap50` its ``"per_class_AP50"``: the mean of the curve over all 101 recall
    points, 0 beyond the last one. The shaded area is that AP50.
    """
    names = list(pr_curves)
    if not names:
        raise ValueError("plot_pr_curves: pr_curves is empty; expected {class name: curve}")
    fig, axes = plt.subplots(1, len(names), figsize=(2.9 * len(names), 2.7), squeeze=False)
    for label, (ax, name) in enumerate(zip(axes[0], names, strict=True), start=1):
        curve = pr_curves[name]
        recall, precision = as_numpy(curve["recall"]), as_numpy(curve["precision"])
        color = class_color(label)
        ap = None if ap50 is None else ap50.get(name)
        if recall.size:
            ax.step(recall, precision, where="post", color=color, lw=1.8)
            ax.fill_between(recall, precision, step="post", color=color, alpha=0.2)
        else:
            no_truth = ap is not None and np.isnan(ap)
            text = "no ground truth" if no_truth else "no match at IoU 0.5"
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        title = name if ap is None or np.isnan(ap) else f"{name}: AP50 {ap:.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    fig.tight_layout()
    return fig


def plot_results(
    images: Sequence[np.ndarray],
    ground_truth: Sequence[dict],
    predictions: Sequence[dict],
    titles: Sequence[tuple[str, str]] | None = None,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    pairs_per_row: int = 2,
    panel_size: tuple[float, float] = (2.0, 1.5),
) -> Figure:
    """A results table: for each image, its ground truth beside the predictions.

    `images` are (H, W, 3) in [0, 1]; `ground_truth` dicts hold ``masks`` (m, H, W)
    and ``labels``; `predictions` also ``scores``, written after the class name.
    `titles` gives (ground-truth title, prediction title) per image; `panel_size`
    is the (width, height) of one picture in inches.
    """
    n = len(images)
    if n == 0 or len(ground_truth) != n or len(predictions) != n:
        raise ValueError(
            f"plot_results: need as many (> 0) images, ground truths and predictions, got "
            f"{n}, {len(ground_truth)} and {len(predictions)}"
        )
    if titles is not None and len(titles) != n:
        raise ValueError(f"plot_results: {len(titles)} titles for {n} images")
    pairs = max(1, min(pairs_per_row, n))
    rows = -(-n // pairs)
    width, height = panel_size
    fig, axes = plt.subplots(
        rows, 2 * pairs, figsize=(2 * width * pairs, height * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image, gt, pred) in enumerate(zip(images, ground_truth, predictions, strict=True)):
        gt_ax, pred_ax = axes[i // pairs, 2 * (i % pairs)], axes[i // pairs, 2 * (i % pairs) + 1]
        gt_title, pred_title = titles[i] if titles is not None else ("ground truth", "prediction")
        draw_instances(
            gt_ax, image, gt["masks"], gt["labels"], class_names=class_names, title=gt_title
        )
        draw_instances(
            pred_ax,
            image,
            pred["masks"],
            pred["labels"],
            scores=pred["scores"],
            class_names=class_names,
            title=pred_title,
        )
    fig.tight_layout()
    return fig


def plot_side_by_side(
    images: Sequence[np.ndarray],
    ground_truth: Sequence[dict],
    columns: Sequence[Sequence[dict]],
    titles: Sequence[Sequence[str]] | None = None,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    panel_size: tuple[float, float] = (2.0, 1.5),
) -> Figure:
    """One row per image: its ground truth, then the predictions of each model beside it.

    As `plot_results`, with several models: `columns` holds one list of predictions per
    model, one dict per image. `titles` gives, per image, the ground truth's title and
    one per model.
    """
    n = len(images)
    if n == 0 or len(ground_truth) != n or not columns or any(len(c) != n for c in columns):
        raise ValueError(
            f"plot_side_by_side: need as many (> 0) images, ground truths and predictions of "
            f"each model, got {n}, {len(ground_truth)} and {[len(c) for c in columns]}"
        )
    if titles is not None and (len(titles) != n or any(len(t) != 1 + len(columns) for t in titles)):
        raise ValueError(
            f"plot_side_by_side: need one title per panel, {n} rows of {1 + len(columns)}"
        )
    width, height = panel_size
    fig, axes = plt.subplots(
        n, 1 + len(columns), figsize=(width * (1 + len(columns)), height * n), squeeze=False
    )
    for row, (image, gt) in enumerate(zip(images, ground_truth, strict=True)):
        names = titles[row] if titles is not None else [None] * (1 + len(columns))
        draw_instances(
            axes[row, 0], image, gt["masks"], gt["labels"], class_names=class_names, title=names[0]
        )
        for column, predictions in enumerate(columns, start=1):
            pred = predictions[row]
            draw_instances(
                axes[row, column],
                image,
                pred["masks"],
                pred["labels"],
                scores=pred["scores"],
                class_names=class_names,
                title=names[column],
            )
    fig.tight_layout()
    return fig
