"""Block diagrams of the SOLO and SOLOv2 networks for a config, drawn with matplotlib.

`draw_architecture` draws SOLO's network (notebook 03) or, for ``cfg.head == "solov2"``,
SOLOv2's (notebook 07): the same trunk, FPN and levels, then the config's head.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from solo_lib.config import SOLOConfig
from solo_lib.model.solov2 import MASK_FEATURE_LEVELS

_COLOURS = {
    "input": "#dddddd",
    "resnet": "#c6dbef",
    "fpn": "#c7e9c0",
    "level": "#fdd0a2",
    "cate": "#fcbba1",
    "mask": "#dadaeb",
    "kernel": "#fee391",
    "dynamic": "#ffffff",
}

#: Darker shades of the branch colours, for the arrows from each branch to its outputs.
_ARROWS = {"cate": "#cb5a41", "mask": "#6a51a3", "kernel": "#b07d0e"}

#: Inches per unit of the drawing's x and y coordinates: SOLO's figure is 17.3 x 11 units
#: on 12.5 x 5.6 inches; wider drawings keep the same scale, so the same font sizes.
_INCHES_PER_UNIT = (12.5 / 17.3, 5.6 / 11.0)

#: y of the bottom of the five rows: P2..P6 and levels 0..4.
_ROWS = (8.6, 6.8, 5.0, 3.2, 1.4)

_TOP = 10.6
_HEADER_Y = 10.05


class _Canvas:
    """An axes filling a new figure, in drawing units, with the diagram's box and arrow."""

    def __init__(self, width: float, bottom: float) -> None:
        inches_x, inches_y = _INCHES_PER_UNIT
        self.fig = plt.figure(figsize=(width * inches_x, (_TOP - bottom) * inches_y))
        self.ax: Axes = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(bottom, _TOP)
        self.ax.axis("off")

    def box(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        text: str,
        colour: str,
        size: int = 9,
        pad: float = 0.05,
    ) -> None:
        self.ax.add_patch(
            FancyBboxPatch(
                (x, y), w, h, boxstyle=f"round,pad={pad}", fc=_COLOURS[colour], ec="#444444"
            )
        )
        self.ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        label: str = "",
        colour: str = "#444444",
    ) -> None:
        self.ax.add_patch(
            FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, color=colour)
        )
        if label:
            self.ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.15, label, ha="center", fontsize=8)

    def line(self, xs: list[float], ys: list[float], colour: str = "#444444") -> None:
        self.ax.plot(xs, ys, color=colour)

    def header(self, x: float, text: str) -> None:
        self.ax.text(x, _HEADER_Y, text, ha="center", va="center", fontsize=9, weight="bold")


def _draw_trunk(canvas: _Canvas, cfg: SOLOConfig) -> None:
    """Image -> ResNet C2..C5 -> FPN P2..P6 -> SOLO's re-strided levels 0..4 (x < 9.4)."""
    box, arrow, rows = canvas.box, canvas.arrow, _ROWS
    h, w = cfg.image_size
    canvas.header(2.9, f"ResNet-{cfg.backbone_depth}\n(bottom-up)")
    canvas.header(5.25, "FPN\n(top-down + lateral)")
    canvas.header(8.35, "SOLO levels\n(re-strided)")
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
    canvas.ax.text(5.0, (rows[3] + rows[4] + 0.9) / 2, "max-pool", va="center", fontsize=8)
    for level, y in enumerate(rows):
        fh, fw = cfg.feature_size(level)
        box(7.3, y, 2.1, 0.9, f"level {level}  /{cfg.strides[level]}\n{fh} x {fw}", "level")
    arrow(6.1, rows[0] + 0.45, 7.3, rows[0] + 0.45, "x0.5")
    for y in rows[1:4]:
        arrow(6.1, y + 0.45, 7.3, y + 0.45)
    arrow(6.1, rows[4] + 0.45, 7.3, rows[4] + 0.45, "up to P5")


def _convs(cfg: SOLOConfig) -> str:
    """The stacked convolutions of the category, mask and kernel branches."""
    return f"{cfg.num_stacked_convs} x [3x3 conv {cfg.head_channels},\nGN(32), ReLU]"


def _category_text(cfg: SOLOConfig) -> str:
    return (
        f"category branch\n(shared by all levels)\n\nresize to S x S\n{_convs(cfg)}\n"
        f"3x3 conv -> C = {cfg.num_classes}\nbias -4.595 (p = 0.01)"
    )


def _draw_bus(canvas: _Canvas, levels: range, x: float, colour: str = "#444444") -> None:
    """Stubs from the right side of ``levels``' boxes to a vertical line at ``x``."""
    ys = [_ROWS[level] + 0.45 for level in levels]  # top to bottom
    canvas.line([9.4, x, x], [ys[0], ys[0], ys[-1]], colour)  # the first stub and the line
    for y in ys[1:]:
        canvas.line([9.4, x], [y, y], colour)


def _draw_solo_head(canvas: _Canvas, cfg: SOLOConfig) -> None:
    """SOLO's shared category and mask branches and their per-level outputs."""
    box, arrow, rows = canvas.box, canvas.arrow, _ROWS
    canvas.header(11.8, "shared head")
    box(10.3, 5.6, 3.0, 3.4, _category_text(cfg), "cate")
    k, ch = cfg.num_stacked_convs, cfg.head_channels
    if cfg.mask_head == "decoupled":
        mask_text = (
            f"decoupled mask branch\n(shared by all levels)\n\nX: + CoordConv x, Y: + y\n"
            f"each {k} x [3x3 conv {ch},\nGN(32), ReLU]\n1x1 conv -> S (one per level)\n"
            "bilinear x2\nmask(i, j) = \u03c3(X_j) \u03c3(Y_i)"
        )
    else:
        mask_text = (
            f"mask branch\n(shared by all levels)\n\n+ CoordConv x, y\n{_convs(cfg)}\n"
            "1x1 conv -> S\u00b2\n(one per level)\nbilinear x2"
        )
    box(10.3, 0.8, 3.0, 4.2, mask_text, "mask")
    _draw_bus(canvas, range(5), 9.85)
    arrow(9.85, 7.3, 10.3, 7.3)
    arrow(9.85, 2.9, 10.3, 2.9)

    canvas.header(15.75, "outputs (logits)\nper level")
    # Each level's output is a pair: its category grid (upper half, fed by the category
    # branch) and its masks (lower half, fed by the mask branch); one arrow per pair half.
    for level, (y, s) in enumerate(zip(rows, cfg.num_grids, strict=True)):
        mh, mw = cfg.mask_size(level)
        _level_outputs(canvas, cfg, y, s, (f"{s * s} x {mh} x {mw}", "mask"), (7.3, 2.9))
    canvas.ax.text(
        0.1,
        -0.25,
        f"{cfg.name} preset: strides {list(cfg.strides)}, grids {list(cfg.num_grids)}; "
        "outputs: category C x S x S (red), masks S\u00b2 x 2H_f x 2W_f (purple); "
        "cell k = row * S + col owns mask channel k",
        fontsize=9,
    )


def _level_outputs(
    canvas: _Canvas,
    cfg: SOLOConfig,
    y: float,
    s: int,
    lower: tuple[str, str],
    sources: tuple[float, float],
) -> None:
    """One level's output pair at height `y`: its category grid (upper half) and `lower`
    (text, colour: SOLO's masks or SOLOv2's kernels), each with an arrow from its branch
    (the branches' right edges at heights `sources`)."""
    text, colour = lower
    canvas.box(14.4, y + 0.45, 2.7, 0.45, f"{cfg.num_classes} x {s} x {s}  (S = {s})", "cate", 8, 0)
    canvas.box(14.4, y, 2.7, 0.45, text, colour, 8, 0)
    canvas.arrow(13.3, sources[0], 14.4, y + 0.675, colour=_ARROWS["cate"])
    canvas.arrow(13.3, sources[1], 14.4, y + 0.225, colour=_ARROWS[colour])


def _draw_solov2_head(canvas: _Canvas, cfg: SOLOConfig) -> None:
    """SOLOv2's category, kernel and mask feature branches, and the dynamic convolution."""
    box, arrow, rows = canvas.box, canvas.arrow, _ROWS
    E = cfg.kernel_channels
    feature_levels = min(MASK_FEATURE_LEVELS, cfg.num_levels)
    strides = cfg.strides[:feature_levels]
    finest = min(strides)
    fh, fw = cfg.feature_size(strides.index(finest))  # the mask features' size
    octaves = ", ".join(str((s // finest).bit_length() - 1) for s in strides)
    last = feature_levels - 1

    canvas.header(11.8, "SOLOv2 head")
    box(10.3, 6.75, 3.0, 2.75, _category_text(cfg), "cate")
    kernel_text = (
        f"kernel branch\n(shared by all levels)\n\nresize to S x S\n+ CoordConv x, y\n"
        f"{_convs(cfg)}\n3x3 conv -> E = {E}"
    )
    box(10.3, 3.55, 3.0, 2.75, kernel_text, "kernel")
    mask_text = (
        f"mask feature branch\n(levels 0-{last}, once per image)\n\n"
        f"each to /{finest}: max(1, n) x\n[3x3 conv {cfg.mask_branch_channels}, GN(32), ReLU],\n"
        f"x2 bilinear after n of them\n(n = {octaves} octaves)\n"
        f"level {last}: + CoordConv x, y\nsum, 1x1 conv -> E = {E},\nGN(32), ReLU"
    )
    box(10.3, -0.95, 3.0, 3.5, mask_text, "mask")
    # All levels feed the category and kernel branches (grey); levels 0-3 the mask
    # features (purple), whose line crosses the grey one without joining it.
    _draw_bus(canvas, range(cfg.num_levels), 9.95)
    arrow(9.95, 8.1, 10.3, 8.1)
    arrow(9.95, 4.9, 10.3, 4.9)
    purple = _ARROWS["mask"]
    _draw_bus(canvas, range(feature_levels), 9.65, purple)
    canvas.line([9.65, 9.65], [rows[last] + 0.45, 2.25], purple)
    arrow(9.65, 2.25, 10.3, 2.25, colour=purple)
    for level in range(cfg.num_levels):
        y = rows[level] + 0.45
        canvas.ax.plot([9.95], [y], "o", ms=3, color="#444444")
        if level < feature_levels:
            canvas.ax.plot([9.65], [y], "o", ms=3, color=purple)

    canvas.header(15.75, "per level: category\nlogits / kernels")
    # Per level: the category grid (upper half) and the kernels, E weights per cell
    # (lower half); each cell's kernel applied to the mask features F (the vertical
    # line, resized to the level's mask size) gives that cell's mask.
    node_x = 17.65
    for level, (y, s) in enumerate(zip(rows, cfg.num_grids, strict=True)):
        mh, mw = cfg.mask_size(level)
        _level_outputs(canvas, cfg, y, s, (f"{E} x {s} x {s}", "kernel"), (8.1, 4.9))
        arrow(17.15, y + 0.225, node_x - 0.12, y + 0.42, colour=_ARROWS["kernel"])
        canvas.ax.text(
            node_x,
            y + 0.45,
            "\u229b",
            ha="center",
            va="center",
            fontsize=13,
            bbox={"boxstyle": "circle,pad=0.05", "fc": "white", "ec": "#444444"},
            zorder=3,
        )
        arrow(node_x + 0.2, y + 0.45, 18.3, y + 0.45, colour=purple)
        box(18.3, y + 0.225, 2.5, 0.45, f"{s * s} x {mh} x {mw}", "mask", 8, 0)
    box(14.4, 0.05, 2.7, 0.75, f"mask features F\n{E} x {fh} x {fw}  (/{finest})", "mask", 8, 0)
    arrow(13.3, 0.425, 14.4, 0.425, colour=purple)
    canvas.line([17.15, node_x, node_x], [0.425, 0.425, rows[0] + 0.45], purple)
    canvas.header(19.55, "dynamic conv ->\nmask logits")
    box(
        18.3,
        -0.95,
        2.5,
        2.05,
        "\u229b: each cell's kernel,\n"
        f"a 1x1 conv of E = {E} weights,\n"
        "on F resized to the level's\n"
        "mask size: S\u00b2 masks; only\n"
        "active (training) or candidate\n"
        "(inference) cells needed",
        "dynamic",
        8,
    )
    canvas.ax.text(
        0.1,
        -1.4,
        f"{cfg.name} preset: strides {list(cfg.strides)}, grids {list(cfg.num_grids)}, "
        f"E = {E}; outputs: category C x S x S (red), masks S\u00b2 x 2H_f x 2W_f (purple); "
        "cell k = row * S + col owns kernel k (yellow, E x S x S) and mask channel k",
        fontsize=9,
    )


def draw_architecture(cfg: SOLOConfig) -> Figure:
    """ResNet -> FPN -> SOLO's re-strided levels -> the config's head -> outputs.

    SOLO (``cfg.head == "solo"``): the shared category and mask branches (vanilla or
    decoupled, ``cfg.mask_head``) and per level C x S x S and S^2 x h x w logits.
    SOLOv2 (``"solov2"``): the category branch, the kernel branch (E x S x S kernels per
    level), the unified mask feature branch (E x H/s x W/s) and the dynamic convolution
    that applies each cell's kernel to the mask features. Every size in the figure is
    computed from ``cfg`` (input size, strides, grids, channels). The figure is a pyplot
    figure, so that ``plt.show()`` displays it in a notebook.
    """
    solov2 = cfg.head == "solov2"
    width, bottom = (21.0, -1.6) if solov2 else (17.3, -0.4)
    canvas = _Canvas(width, bottom)
    _draw_trunk(canvas, cfg)
    if solov2:
        _draw_solov2_head(canvas, cfg)
    else:
        _draw_solo_head(canvas, cfg)
    return canvas.fig
