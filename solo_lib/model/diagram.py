"""A block diagram of the SOLO network for a config, drawn with matplotlib (notebook 03)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from solo_lib.config import SOLOConfig

_COLOURS = {
    "input": "#dddddd",
    "resnet": "#c6dbef",
    "fpn": "#c7e9c0",
    "level": "#fdd0a2",
    "cate": "#fcbba1",
    "mask": "#dadaeb",
    "out": "#f0f0f0",
}


def draw_architecture(cfg: SOLOConfig) -> Figure:
    """ResNet -> FPN -> SOLO's re-strided levels -> shared category / mask head -> outputs.

    Every size in the figure is computed from ``cfg`` (input size, strides, grids).
    The figure is a pyplot figure, so that ``plt.show()`` displays it in a notebook.
    """
    fig = plt.figure(figsize=(15, 6.5))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 17.2)
    ax.set_ylim(-0.4, 10.6)
    ax.axis("off")

    def box(x: float, y: float, w: float, h: float, text: str, colour: str, size: int = 9) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x, y), w, h, boxstyle="round,pad=0.05", fc=_COLOURS[colour], ec="#444444"
            )
        )
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(x0: float, y0: float, x1: float, y1: float, label: str = "") -> None:
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, color="#444444"
            )
        )
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.15, label, ha="center", fontsize=8)

    h, w = cfg.image_size
    rows = [8.6, 6.8, 5.0, 3.2, 1.4]  # y of P2..P6 and of levels 0..4
    headers = [
        (2.9, f"ResNet-{cfg.backbone_depth}\n(bottom-up)"),
        (5.25, "FPN\n(top-down + lateral)"),
        (8.35, "SOLO levels\n(re-strided)"),
        (11.8, "shared head"),
    ]
    for x, text in headers:
        ax.text(x, 10.05, text, ha="center", va="center", fontsize=9, weight="bold")
    box(0.1, 4.6, 1.4, 1.2, f"image\n3 x {h} x {w}", "input")
    arrow(1.5, 5.2, 2.1, rows[0] + 0.45)
    for i, y in enumerate(rows[:4]):  # C2..C5 at strides 4..32
        box(2.1, y, 1.6, 0.9, f"C{i + 2}  /{4 * 2**i}", "resnet")
        arrow(3.7, y + 0.45, 4.4, y + 0.45)
        if i < 3:
            arrow(2.6, y, 2.6, rows[i + 1] + 0.9)  # bottom-up
            arrow(5.6, rows[i + 1] + 0.9, 5.6, y)  # top-down
    for i, y in enumerate(rows):  # P2..P6
        box(4.4, y, 1.7, 0.9, f"P{i + 2}  /{4 * 2**i}\n{cfg.fpn_channels} ch", "fpn")
    arrow(4.9, rows[3], 4.9, rows[4] + 0.9, "max-pool")
    for level, y in enumerate(rows):
        fh, fw = cfg.feature_size(level)
        box(7.3, y, 2.1, 0.9, f"level {level}  /{cfg.strides[level]}\n{fh} x {fw}", "level")
    arrow(6.1, rows[0] + 0.45, 7.3, rows[0] + 0.45, "x0.5")
    for y in rows[1:4]:
        arrow(6.1, y + 0.45, 7.3, y + 0.45)
    arrow(6.1, rows[4] + 0.45, 7.3, rows[4] + 0.45, "up to P5")

    k, ch = cfg.num_stacked_convs, cfg.head_channels
    box(
        10.3,
        5.6,
        3.0,
        3.4,
        f"category branch\n(shared by all levels)\n\nresize to S x S\n{k} x [3x3 conv {ch},\nGN(32), ReLU]\n"
        f"3x3 conv -> C = {cfg.num_classes}\nbias -4.595 (p = 0.01)",
        "cate",
    )
    if cfg.mask_head == "decoupled":
        mask_text = (
            f"decoupled mask branch\n(shared by all levels)\n\nX: + CoordConv x, Y: + y\n"
            f"each {k} x [3x3 conv {ch},\nGN(32), ReLU]\n1x1 conv -> S (one per level)\n"
            "bilinear x2\nmask(i, j) = \u03c3(X_j) \u03c3(Y_i)"
        )
    else:
        mask_text = (
            f"mask branch\n(shared by all levels)\n\n+ CoordConv x, y\n{k} x [3x3 conv {ch},\n"
            "GN(32), ReLU]\n1x1 conv -> S\u00b2\n(one per level)\nbilinear x2"
        )
    box(10.3, 0.8, 3.0, 4.2, mask_text, "mask")
    ax.plot([9.4, 9.85, 9.85], [rows[0] + 0.45, rows[0] + 0.45, rows[4] + 0.45], color="#444444")
    ax.plot([9.4, 9.85], [rows[4] + 0.45] * 2, color="#444444")
    for y in rows[1:4]:
        ax.plot([9.4, 9.85], [y + 0.45] * 2, color="#444444")
    arrow(9.85, 7.3, 10.3, 7.3)
    arrow(9.85, 2.9, 10.3, 2.9)

    ax.text(
        15.3,
        10.05,
        "outputs (logits)\nper level",
        ha="center",
        va="center",
        fontsize=9,
        weight="bold",
    )
    for level, (y, s) in enumerate(zip(rows, cfg.num_grids, strict=True)):
        mh, mw = cfg.mask_size(level)
        box(13.9, y, 2.8, 0.9, f"S = {s}: C x {s} x {s}\n{s * s} x {mh} x {mw}", "out", size=8)
    arrow(13.3, 7.3, 13.9, rows[0] + 0.45)
    arrow(13.3, 2.9, 13.9, rows[4] + 0.45)
    ax.text(
        0.1,
        -0.25,
        f"{cfg.name} preset: strides {list(cfg.strides)}, grids {list(cfg.num_grids)}; "
        "cell k = row * S + col owns mask channel k",
        fontsize=9,
    )
    return fig
