"""Drawing one image of the dense mode: many small cells of one class, often touching.

The built-in objects (`render`) are few, large and of three classes. Users' own data
is often the opposite: small, dense, single-class objects (cells, parts on a
conveyor). This mode draws such images, in the same 300x400 frame and format:

* one class, "cell" (label 1);
* `MIN_CELLS` to `MAX_CELLS` cells per image, each a `Blob` (round or lobed) whose
  mean diameter is `MIN_DIAMETER` to `MAX_DIAMETER` source pixels, always wholly
  inside the image;
* a share `TOUCH_FRACTION` of the cells is placed against a cell already drawn, so
  the cells form touching chains and clusters; a cell may cover at most
  `MAX_OVERLAP` pixels of another one (along the line between their centres), so
  every cell stays almost whole and no cell is buried;
* one colour per image (cells of a class look alike), each cell a different shade
  of it, with a darker rim, some grain and often a darker nucleus: what lets a
  careful eye, and a model, tell touching neighbours apart;
* the background is the objects mode's gradient and colour blotches, without its
  distractor shapes (small round ones would look like unlabelled cells), plus a
  fine grain of about a cell's size, so that a model cannot find cells as the only
  structure in a smooth image.

Masks are the visible parts (the cell drawn last owns a pixel), so they are disjoint,
and neighbours that touch share an edge. Image i is drawn from its own
`numpy.random.Generator` seeded with (seed, i), like the objects mode.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from solo_lib.data.synthetic.render import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    background,
    finish_image,
    upsample,
    visible_objects,
)
from solo_lib.data.synthetic.shapes import Blob

DENSE_CLASS_NAMES = ("cell",)
CELL = 1
MIN_CELLS, MAX_CELLS = 20, 60
#: Range of a cell's mean diameter 2r, in source pixels (log-uniform). Elongation and
#: lobes make its box a little wider one way and narrower the other: sqrt(w * h) of the
#: boxes stays within 8 to 25 pixels.
MIN_DIAMETER, MAX_DIAMETER = 10.0, 20.0
#: Share of cells that are irregular (elongated and lobed) rather than near-round.
IRREGULAR_FRACTION = 0.5
#: Share of cells placed against a cell already drawn rather than anywhere.
TOUCH_FRACTION = 0.6
#: How deep (pixels) a cell may reach into another along their centre line; cells
#: placed to touch reach MIN_OVERLAP to MAX_OVERLAP in, so that they share an edge.
MIN_OVERLAP, MAX_OVERLAP = 0.5, 2.0
#: Share of cells with a darker nucleus.
NUCLEUS_FRACTION = 0.6
#: Positions tried per cell before it is left out (rare: the cells cover ~10% of an image).
PLACE_TRIES = 20


# --------------------------------------------------------------------------------------
# Shapes and placement
# --------------------------------------------------------------------------------------
def _cell_shape(rng: np.random.Generator) -> Blob:
    """A cell at the origin: near-round, or (IRREGULAR_FRACTION) elongated and lobed."""
    r = 0.5 * math.exp(rng.uniform(math.log(MIN_DIAMETER), math.log(MAX_DIAMETER)))
    if rng.random() < IRREGULAR_FRACTION:
        amplitudes = (rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.1), rng.uniform(0.0, 0.06))
    else:
        amplitudes = tuple(np.abs(rng.normal(0.0, 0.03, size=3)))
    phases = tuple(rng.uniform(0.0, 2 * np.pi, size=3))
    return Blob(0.0, 0.0, r, tuple(float(a) for a in amplitudes), tuple(float(p) for p in phases))


def _inside(blob: Blob) -> bool:
    """Whether the whole blob lies inside the image (so no box is cut by the border)."""
    m = blob.max_radius
    return m <= blob.cx <= IMAGE_WIDTH - m and m <= blob.cy <= IMAGE_HEIGHT - m


def _reach(a: Blob, b: Blob) -> float:
    """How deep (pixels) `a` and `b` overlap along the line between their centres (< 0: a gap)."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    angle = math.atan2(dy, dx)  # from b towards a
    return b.radius_at(angle) + a.radius_at(angle + math.pi) - math.hypot(dx, dy)


def _overlaps_too_much(blob: Blob, placed: list[Blob]) -> bool:
    """Whether `blob` reaches more than `MAX_OVERLAP` pixels into any placed blob."""
    for other in placed:
        near = blob.max_radius + other.max_radius - MAX_OVERLAP
        if abs(blob.cx - other.cx) < near and abs(blob.cy - other.cy) < near:
            if _reach(blob, other) > MAX_OVERLAP:
                return True
    return False


def _next_to(rng: np.random.Generator, blob: Blob, neighbour: Blob) -> tuple[float, float]:
    """A centre for `blob` that makes it touch `neighbour`, in a random direction."""
    angle = rng.uniform(0.0, 2 * np.pi)
    distance = (
        neighbour.radius_at(angle)
        + blob.radius_at(angle + math.pi)
        - rng.uniform(MIN_OVERLAP, MAX_OVERLAP)
    )
    return neighbour.cx + distance * math.cos(angle), neighbour.cy + distance * math.sin(angle)


def _place(rng: np.random.Generator, blob: Blob, placed: list[Blob]) -> Blob | None:
    """`blob` moved to a free spot: against a placed blob (TOUCH_FRACTION) or anywhere.

    Returns None when `PLACE_TRIES` spots all fall outside the image or reach too far
    into a placed blob.
    """
    for _ in range(PLACE_TRIES):
        if placed and rng.random() < TOUCH_FRACTION:
            cx, cy = _next_to(rng, blob, placed[int(rng.integers(len(placed)))])
        else:
            cx, cy = rng.uniform(0, IMAGE_WIDTH), rng.uniform(0, IMAGE_HEIGHT)
        candidate = dataclasses.replace(blob, cx=cx, cy=cy)
        if _inside(candidate) and not _overlaps_too_much(candidate, placed):
            return candidate
    return None


# --------------------------------------------------------------------------------------
# Background, colour and shading
# --------------------------------------------------------------------------------------
def _dense_background(rng: np.random.Generator) -> np.ndarray:
    """The objects mode's background without distractors, plus a fine colour grain."""
    image = background(rng, distractors=False)
    cells = int(rng.integers(20, 40))  # grain of 8 to 15 pixels
    grain = upsample(rng.random((cells, cells * 4 // 3, 3), dtype=np.float32), *image.shape[:2])
    return image + rng.uniform(0.04, 0.1) * (grain - 0.5)


def _cell_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """The image's cell colour, re-drawn (up to 4 times) while too close to the background."""
    best, best_dist = None, -1.0
    for _ in range(4):
        colour = rng.uniform(0.15, 0.95, size=3).astype(np.float32)
        dist = float(np.linalg.norm(colour - background_mean))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist > 0.35:
            break
    return best


def _shading(rng: np.random.Generator, blob: Blob, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Brightness factors of a cell on the pixel grid xs x ys: dark rim, grain, nucleus."""
    rho = blob.rho(xs[None, :], ys[:, None])
    shade = 1.0 - rng.uniform(0.35, 0.6) * np.minimum(rho, 1.0) ** 3  # darker towards the rim
    grain = upsample(rng.random((3, 3), dtype=np.float32), len(ys), len(xs)) - 0.5
    shade = shade * (1.0 + rng.uniform(0.1, 0.3) * grain)
    if rng.random() < NUCLEUS_FRACTION:
        angle, distance = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.25 * blob.r)
        nucleus = Blob(
            blob.cx + distance * math.cos(angle),
            blob.cy + distance * math.sin(angle),
            blob.r * rng.uniform(0.3, 0.45),
            (0.1,),
            (float(rng.uniform(0.0, 2 * np.pi)),),
        )
        shade = np.where(
            nucleus.contains(xs[None, :], ys[:, None]), shade * rng.uniform(0.55, 0.8), shade
        )
    return shade.astype(np.float32)


def _draw_cell(
    rng: np.random.Generator,
    image: np.ndarray,
    owner: np.ndarray,
    blob: Blob,
    colour: np.ndarray,
    index: int,
) -> None:
    """Paint `blob` in a shade of `colour` into `image` and mark it `index` in `owner` (in place)."""
    m = blob.max_radius
    x0, y0 = max(int(blob.cx - m) - 1, 0), max(int(blob.cy - m) - 1, 0)
    x1 = min(int(math.ceil(blob.cx + m)) + 1, IMAGE_WIDTH)
    y1 = min(int(math.ceil(blob.cy + m)) + 1, IMAGE_HEIGHT)
    xs, ys = np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5  # pixel centres
    mask = blob.contains(xs[None, :], ys[:, None])
    tone = colour * rng.uniform(0.75, 1.2) + rng.normal(0.0, 0.04, size=3).astype(np.float32)
    cell = tone * _shading(rng, blob, xs, ys)[..., None]
    image[y0:y1, x0:x1][mask] = cell[mask]
    owner[y0:y1, x0:x1][mask] = index


# --------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------
def render_dense_image(
    seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw image `index` of the dense data set with `seed`.

    Returns what `render_image` returns: image uint8 (3, 300, 400), disjoint visible
    masks uint8 (n, 300, 400), labels int64 (n,) all 1, boxes float64 (n, 4) x1 y1 x2 y2
    at pixel edges; n is `MIN_CELLS` to `MAX_CELLS` (a cell that finds no free spot is
    left out, which the default sizes make rare).
    """
    rng = np.random.default_rng([seed, index])
    image = _dense_background(rng)
    colour = _cell_colour(rng, image.mean(axis=(0, 1)))
    owner = np.full((IMAGE_HEIGHT, IMAGE_WIDTH), -1, dtype=np.int16)
    placed: list[Blob] = []
    for _ in range(int(rng.integers(MIN_CELLS, MAX_CELLS + 1))):
        blob = _place(rng, _cell_shape(rng), placed)
        if blob is not None:
            _draw_cell(rng, image, owner, blob, colour, len(placed))
            placed.append(blob)
    return finish_image(rng, image), *visible_objects(owner, [CELL] * len(placed))
