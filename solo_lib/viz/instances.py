"""Drawing instances: translucent masks, boxes and scores, one colour per class everywhere.

Ground truth and predictions alike, so a class always has the same colour: vehicle
blue, person green, animal red. Pictures are shown in the original image frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from solo_lib.config import SOLOConfig

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


def as_numpy(x: object) -> np.ndarray:
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

    The image's ``target["geometry"]`` removes the padding, undoes a flip and resizes
    back to the original size: the frame of `postprocess`'s masks and of the original
    annotations.
    """
    return denormalize(target["geometry"].to_original(image.detach().cpu(), antialias=True), cfg)


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
    image = as_numpy(image_hw3).astype(np.float32)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:  # (3, H, W) -> (H, W, 3)
        image = image.transpose(1, 2, 0)
    if image.max() > 1.0:
        image = image / 255.0
    masks_np = as_numpy(masks).astype(bool)
    labels_np = as_numpy(labels).astype(int).reshape(-1)
    overlay = image.copy()
    for m, label in zip(masks_np, labels_np, strict=True):
        overlay[m] = (1 - alpha) * overlay[m] + alpha * np.asarray(class_color(int(label)))
    ax.imshow(overlay)
    boxes_np = None if boxes is None else as_numpy(boxes).reshape(-1, 4)
    scores_np = None if scores is None else as_numpy(scores).reshape(-1)
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
