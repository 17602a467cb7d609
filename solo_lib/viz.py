"""Drawing instances and training runs, in one colour per class everywhere.

Instances: translucent masks, boxes, scores, for ground truth and predictions
alike, so a class always has the same colour: vehicle blue, person green, animal red.
Training runs: the loss curves, validation mask AP and learning-rate schedule of
a run, from `solo_lib.course.read_metrics` (notebook 04).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from solo_lib.config import SOLOConfig
from solo_lib.data.transforms import to_original_frame

#: RGB in [0, 1] per label; labels beyond 3 (custom data sets) take tab10 colours.
CLASS_COLORS: dict[int, tuple[float, float, float]] = {
    1: (0.12, 0.47, 0.90),  # vehicle: blue
    2: (0.15, 0.75, 0.25),  # person: green
    3: (0.90, 0.15, 0.15),  # animal: red
}
DEFAULT_CLASS_NAMES = SOLOConfig().class_names


def class_color(label: int) -> tuple[float, float, float]:
    """The colour of class `label` (1..C)."""
    if label in CLASS_COLORS:
        return CLASS_COLORS[label]
    return tuple(plt.get_cmap("tab10")(label % 10)[:3])


def _numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def denormalize(image: torch.Tensor, cfg: SOLOConfig) -> np.ndarray:
    """A normalised (3, H, W) input image -> (H, W, 3) float RGB in [0, 1] for `imshow`."""
    mean = torch.tensor(cfg.pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg.pixel_std, dtype=torch.float32).view(3, 1, 1)
    rgb = image.detach().cpu().float() * std + mean
    return rgb.clamp(0, 1).permute(1, 2, 0).numpy()


def display_image(image: torch.Tensor, target: dict, cfg: SOLOConfig) -> np.ndarray:
    """The network input ``image`` (3, H, W) as (H0, W0, 3) RGB in [0, 1], in the original frame.

    `to_original_frame` removes the padding and resizes back to ``target["orig_size"]``:
    the frame of `postprocess`'s masks and of the original annotations.
    """
    restored = to_original_frame(
        image.detach().cpu(),
        target["content_box"].tolist(),
        target["orig_size"].tolist(),
        image.shape[-2:],
        antialias=True,
    )
    return denormalize(restored, cfg)


def draw_instances(
    ax: Axes,
    image_hw3: np.ndarray,
    masks: object,
    labels: object,
    boxes: object | None = None,
    scores: object | None = None,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    alpha: float = 0.45,
    title: str | None = None,
) -> Axes:
    """Show an image with class-coloured translucent masks, boxes and captions.

    `image_hw3` is (H, W, 3) (or (3, H, W)), float in [0, 1] or 0..255 (e.g. a raw uint8 image).

    Args:
        masks: (n, H, W) binary masks (tensor or array, bool or 0/1).
        labels: (n,) labels 1..C.
        boxes: optional (n, 4) x1 y1 x2 y2 in the image's frame.
        scores: optional (n,) scores, shown after the class name.
    """
    image = _numpy(image_hw3).astype(np.float32)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:  # (3, H, W) -> (H, W, 3)
        image = image.transpose(1, 2, 0)
    if image.max() > 1.0:
        image = image / 255.0
    masks_np = _numpy(masks).astype(bool)
    labels_np = _numpy(labels).astype(int).reshape(-1)
    overlay = image.copy()
    for m, label in zip(masks_np, labels_np, strict=True):
        overlay[m] = (1 - alpha) * overlay[m] + alpha * np.asarray(class_color(int(label)))
    ax.imshow(overlay)
    boxes_np = None if boxes is None else _numpy(boxes).reshape(-1, 4)
    scores_np = None if scores is None else _numpy(scores).reshape(-1)
    for j, label in enumerate(labels_np):
        color = class_color(int(label))
        name = class_names[label - 1] if 1 <= label <= len(class_names) else str(label)
        caption = name if scores_np is None else f"{name} {scores_np[j]:.2f}"
        if boxes_np is not None:
            x1, y1, x2, y2 = boxes_np[j]
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.2)
            )
            anchor = (x1, y1)
        else:
            ys, xs = np.nonzero(masks_np[j])
            anchor = (xs.min(), ys.min()) if xs.size else (0, 0)
        ax.text(
            *anchor,
            caption,
            fontsize=7,
            color="white",
            va="bottom",
            bbox={"facecolor": color, "edgecolor": "none", "pad": 1, "alpha": 0.8},
        )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def draw_item(
    ax: Axes,
    image: torch.Tensor,
    target: dict,
    cfg: SOLOConfig,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes:
    """Draw a data set item `(image, target)` (normalised, padded) with its ground truth."""
    return draw_instances(
        ax,
        denormalize(image, cfg),
        target["masks"],
        target["labels"],
        target.get("boxes"),
        class_names=class_names or cfg.class_names,
        title=title,
    )


# --- training runs ------------------------------------------------------------------
#: A run's metrics as `solo_lib.course.read_metrics` returns them: {name: [(epoch, step, value)]}.
Metrics = dict[str, list[tuple[int, int, float]]]

#: (logged name, panel title) of the three losses, in the order they are drawn.
LOSS_PANELS = (
    ("loss", "total loss"),
    ("focal", "focal loss (category)"),
    ("dice", "dice loss (mask)"),
)


def _steps_per_epoch(metrics: Metrics) -> float:
    """Training steps per epoch, from the rows that carry an epoch.

    Lightning logs epoch e's epoch-level metrics at global step (e + 1) * N - 1 and
    every step-level one before it, so the largest (step + 1) / (epoch + 1) is N.
    """
    ratios = [
        (step + 1) / (epoch + 1)
        for series in metrics.values()
        for epoch, step, _ in series
        if epoch >= 0
    ]
    if not ratios:
        raise ValueError(
            "metrics has no row with an epoch; expected solo_lib.course.read_metrics() "
            "of a LitSOLO metrics.csv (columns epoch, step, train/loss_step, ...)"
        )
    return max(ratios)


def _draw_series(
    ax: Axes, points: list[tuple[int, int, float]], steps_per_epoch: float, **style: object
) -> None:
    """Plot (epoch, step, value) points against epochs trained, (step + 1) / steps_per_epoch.

    A series of one point (a one-epoch run) is drawn as a marker, or it would be invisible.
    """
    xs = [(step + 1) / steps_per_epoch for _, step, _ in points]
    ys = [value for _, _, value in points]
    if len(points) == 1:
        style = {"marker": "o", **style}
    ax.plot(xs, ys, **style)


def _start_at_zero(ax: Axes) -> None:
    """Let the x axis start at 0 epochs, so that a one-epoch run does not fill the panel."""
    xs = [x for line in ax.lines for x in line.get_xdata()]
    if xs:
        ax.set_xlim(0, 1.05 * max(xs))


def plot_training_curves(metrics: Metrics, fig: Figure | None = None) -> Figure:
    """Total, focal and dice losses: training (row 1) and validation (row 2).

    `metrics` is `solo_lib.course.read_metrics(run_dir / "metrics.csv")` of a LitSOLO
    run. Training losses are drawn per step (light, noisy) and as epoch means (bold);
    validation losses once per epoch. The x axis counts epochs trained, so an epoch
    mean sits at the end of its epoch, where validation ran.
    """
    wanted = [f"train/{name}_step" for name, _ in LOSS_PANELS] + [
        f"val/{name}" for name, _ in LOSS_PANELS
    ]
    if not any(key in metrics for key in wanted):
        raise ValueError(
            f"metrics has none of {wanted}; expected solo_lib.course.read_metrics() of a "
            f"LitSOLO metrics.csv, got the keys {sorted(metrics)}"
        )
    n = _steps_per_epoch(metrics)
    fig = fig if fig is not None else plt.figure(figsize=(11, 5.5))
    axes = fig.subplots(2, len(LOSS_PANELS), squeeze=False)
    for col, (name, title) in enumerate(LOSS_PANELS):
        train_ax, val_ax = axes[0, col], axes[1, col]
        step_points = metrics.get(f"train/{name}_step", [])
        epoch_points = metrics.get(f"train/{name}_epoch", [])
        if step_points:
            _draw_series(train_ax, step_points, n, color="C0", alpha=0.35, lw=0.8, label="per step")
        if epoch_points:
            _draw_series(
                train_ax, epoch_points, n, color="C0", lw=2, marker="o", ms=4, label="epoch mean"
            )
        train_ax.set_title(f"train: {title}")
        val_points = metrics.get(f"val/{name}", [])
        if val_points:
            _draw_series(val_ax, val_points, n, color="C1", lw=2, marker="o", ms=4, label="epoch")
        val_ax.set_title(f"validation: {title}")
        val_ax.set_xlabel("epochs trained")
        for ax in (train_ax, val_ax):
            _start_at_zero(ax)
            if ax.lines:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def plot_validation_ap(
    metrics: Metrics, class_names: Sequence[str] = DEFAULT_CLASS_NAMES
) -> Figure:
    """Validation mask AP, AP50 and AP75 (left) and the AP of every class (right) per epoch.

    Reads ``val/AP``, ``val/AP50``, ``val/AP75`` and ``val/AP_<class name>`` from
    `solo_lib.course.read_metrics` output; a class keeps its course colour when
    its name is in `class_names`.
    """
    overall = [key for key in ("val/AP", "val/AP50", "val/AP75") if key in metrics]
    order = {f"val/AP_{name}": i for i, name in enumerate(class_names)}
    per_class = sorted(
        (key for key in metrics if key.startswith("val/AP_")),
        key=lambda key: (order.get(key, len(order)), key),
    )
    if not overall:
        raise ValueError(
            "metrics has no val/AP; expected solo_lib.course.read_metrics() of a LitSOLO "
            f"metrics.csv from a run that computed the mask mAP, got the keys {sorted(metrics)}"
        )
    fig, (ax_all, ax_class) = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, keys in ((ax_all, overall), (ax_class, per_class)):
        for key in keys:
            name = key.removeprefix("val/").removeprefix("AP_")
            points = metrics[key]
            style: dict[str, object] = {"marker": "o", "ms": 4, "label": name}
            if key in per_class and name in class_names:
                style["color"] = class_color(list(class_names).index(name) + 1)
            ax.plot([epoch + 1 for epoch, _, _ in points], [v for _, _, v in points], **style)
        ax.set_xlabel("epochs trained")
        ax.set_ylim(0, 1)
        _start_at_zero(ax)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_all.set_title("validation mask AP")
    ax_class.set_title("validation mask AP per class")
    fig.tight_layout()
    return fig


def plot_learning_rate(
    epochs: Sequence[float], lrs: Sequence[float], milestones: Sequence[int]
) -> Figure:
    """The learning rate at every step: the whole schedule (log scale) and the warm-up.

    `epochs, lrs` come from `solo_lib.course.learning_rate_schedule`; `milestones` are
    the epochs where the step decay divides the rate (``cfg.lr_milestones``), drawn as
    dashed lines on a log scale; without milestones (a cosine) the scale is linear.
    The right panel zooms on the start, where the warm-up is linear.
    """
    if len(epochs) != len(lrs) or not lrs:
        raise ValueError(
            f"epochs and lrs must be equally long and non-empty, got {len(epochs)} and {len(lrs)}"
        )
    fig, (ax_all, ax_warm) = plt.subplots(1, 2, figsize=(10, 3))
    ax_all.plot(epochs, lrs, color="C0", marker="o" if len(lrs) == 1 else None)
    for i, milestone in enumerate(milestones):
        ax_all.axvline(
            milestone, color="0.5", ls="--", lw=1, label="milestones" if i == 0 else None
        )
    # Step decay spans decades: a log scale shows each drop; a cosine reads best as it is.
    ax_all.set_yscale("log" if milestones else "linear")
    ax_all.set_title("learning rate (log scale)" if milestones else "learning rate")
    if milestones:
        ax_all.legend(fontsize=8)
    peak = int(np.argmax(lrs))  # the first step at the full rate: the end of the warm-up
    end = max(2 * epochs[peak], epochs[min(len(epochs) - 1, 1)])
    shown = [i for i, x in enumerate(epochs) if x <= end]
    ax_warm.plot(
        [epochs[i] for i in shown],
        [lrs[i] for i in shown],
        color="C0",
        marker="o" if len(shown) == 1 else None,
    )
    ax_warm.set_title("the warm-up (linear scale)")
    for ax in (ax_all, ax_warm):
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
    fig.tight_layout()
    return fig


# --- post-processing and evaluation (notebook 05) -------------------------------------
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
    arrays = [[_numpy(heat).astype(np.float32) for heat in maps] for _, maps in rows]
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
    masks_np = _numpy(masks).astype(np.float32)
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
    before_np, after_np = _numpy(before).reshape(-1), _numpy(after).reshape(-1)
    labels_np = _numpy(labels).astype(int).reshape(-1)
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
        recall, precision = _numpy(curve["recall"]), _numpy(curve["precision"])
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
