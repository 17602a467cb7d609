"""Drawing a training run: loss curves, validation mask AP and the learning-rate schedule.

The series come from `solo_lib.course.read_metrics` (notebook 04).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from solo_lib.viz.instances import DEFAULT_CLASS_NAMES, class_color

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


def _fit_ap_to_data(ax: Axes) -> None:
    """Let the AP axis run from 0 to a little above the highest value drawn.

    A fixed 0 to 1 axis squashes a run whose AP stays below 0.2 into a flat line; 0 stays
    at the bottom so that the values are still read as fractions of a perfect AP of 1.
    """
    ys = [y for line in ax.lines for y in line.get_ydata()]
    top = max(ys, default=0.0)
    ax.set_ylim(0, min(1.0, 1.15 * top) if top > 0 else 1.0)


def plot_training_curves(metrics: Metrics, fig: Figure | None = None) -> Figure:
    """Total, focal and dice losses, one panel each, training and validation on the same axes.

    `metrics` is `solo_lib.course.read_metrics(run_dir / "metrics.csv")` of a LitSOLO
    run. Training losses are drawn per step (light, noisy) and as epoch means (bold);
    validation losses once per epoch. The x axis counts epochs trained, so an epoch
    mean sits at the end of its epoch, where validation ran, and the two can be
    compared point by point.
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
    fig = fig if fig is not None else plt.figure(figsize=(11, 3.4))
    axes = fig.subplots(1, len(LOSS_PANELS), squeeze=False)[0]
    for ax, (name, title) in zip(axes, LOSS_PANELS, strict=True):
        step_points = metrics.get(f"train/{name}_step", [])
        epoch_points = metrics.get(f"train/{name}_epoch", [])
        val_points = metrics.get(f"val/{name}", [])
        if step_points:
            _draw_series(ax, step_points, n, color="C0", alpha=0.3, lw=0.8, label="train, per step")
        if epoch_points:
            _draw_series(
                ax, epoch_points, n, color="C0", lw=2, marker="o", ms=4, label="train, epoch mean"
            )
        if val_points:
            _draw_series(ax, val_points, n, color="C1", lw=2, marker="o", ms=4, label="validation")
        ax.set_title(title)
        ax.set_xlabel("epochs trained")
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
    its name is in `class_names`. Each AP axis runs from 0 to just above its highest value.
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
        _fit_ap_to_data(ax)
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
