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
}

#: Darker shades of the branch colours, for the arrows from each branch to its outputs.
_ARROWS = {"cate": "#cb5a41", "mask": "#6a51a3"}


def draw_architecture(cfg: SOLOConfig) -> Figure:
    """ResNet -> FPN -> SOLO's re-strided levels -> shared category / mask head -> outputs.

    Every size in the figure is computed from ``cfg`` (input size, strides, grids).
    The figure is a pyplot figure, so that ``plt.show()`` displays it in a notebook.
    """
    fig = plt.figure(figsize=(12.5, 5.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 17.3)
    ax.set_ylim(-0.4, 10.6)
    ax.axis("off")

    def box(
        x: float,
        y: float,
        w: float,
        h: float,
        text: str,
        colour: str,
        size: int = 9,
        pad: float = 0.05,
    ) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x, y), w, h, boxstyle=f"round,pad={pad}", fc=_COLOURS[colour], ec="#444444"
            )
        )
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(
        x0: float, y0: float, x1: float, y1: float, label: str = "", colour: str = "#444444"
    ) -> None:
        ax.add_patch(
            FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, color=colour)
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
    arrow(4.9, rows[3], 4.9, rows[4] + 0.9)
    ax.text(5.0, (rows[3] + rows[4] + 0.9) / 2, "max-pool", va="center", fontsize=8)
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
        15.75,
        10.05,
        "outputs (logits)\nper level",
        ha="center",
        va="center",
        fontsize=9,
        weight="bold",
    )
    # Each level's output is a pair: its category grid (upper half, fed by the category
    # branch) and its masks (lower half, fed by the mask branch); one arrow per pair half.
    for level, (y, s) in enumerate(zip(rows, cfg.num_grids, strict=True)):
        mh, mw = cfg.mask_size(level)
        box(14.4, y + 0.45, 2.7, 0.45, f"{cfg.num_classes} x {s} x {s}  (S = {s})", "cate", 8, 0)
        box(14.4, y, 2.7, 0.45, f"{s * s} x {mh} x {mw}", "mask", 8, 0)
        arrow(13.3, 7.3, 14.4, y + 0.675, colour=_ARROWS["cate"])
        arrow(13.3, 2.9, 14.4, y + 0.225, colour=_ARROWS["mask"])
    ax.text(
        0.1,
        -0.25,
        f"{cfg.name} preset: strides {list(cfg.strides)}, grids {list(cfg.num_grids)}; "
        "outputs: category C x S x S (red), masks S\u00b2 x 2H_f x 2W_f (purple); "
        "cell k = row * S + col owns mask channel k",
        fontsize=9,
    )
    return fig
