"""The built-in data set: procedural vehicles, people and animals in the CIS 680 format.

The course must run without downloading anything, so it draws its own data: 300x400
images with 1 to 6 objects of three classes (1 vehicle, 2 person, 3 animal), written
in exactly the four-file format of the CIS 680 homework (see `solo_lib.data.cis680`).

What makes the task a real instance-segmentation task and not a colour lookup:

* classes differ by SHAPE only: every object draws its colours and texture (solid,
  stripes, blotches, gradient, checks) from one distribution shared by all classes;
* every silhouette varies: vehicles are cars, vans or trucks; people swing arms and
  legs; animals vary legs, neck, head and tail; all are randomly flipped, tilted
  and stretched;
* sizes sqrt(w*h) are log-uniform between `MIN_SIZE` and `MAX_SIZE` source pixels,
  which covers all five FPN scale ranges of the paper's 800 px input;
* objects occlude each other (drawn back to front): a mask is the VISIBLE part,
  objects with fewer than `MIN_VISIBLE_AREA` visible pixels are dropped, boxes are
  the visible mask's extent;
* backgrounds are cluttered: gradients, blotchy colour noise, pixel noise and
  distractor shapes (ellipses, boxes, triangles, bars) that are not objects.

Image i is drawn from its own `numpy.random.Generator` seeded with (seed, i): the
same seed gives identical arrays, and any image can be drawn on its own.
Drawing is vectorised with numpy on each object's bounding window.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from solo_lib.atomic import atomic_directory, file_lock
from solo_lib.data.cis680 import BBOXES_FILE, IMAGES_FILE, LABELS_FILE, MASKS_FILE
from solo_lib.paths import BUILTIN_DATA_DIR

IMAGE_HEIGHT, IMAGE_WIDTH = 300, 400
CLASS_NAMES = ("vehicle", "person", "animal")
VEHICLE, PERSON, ANIMAL = 1, 2, 3

#: Range of sqrt(w * h) of a full (unoccluded) object, in source pixels. The paper's
#: scale ranges at 800 px input, mapped to 300 px, run from below 36 px to above 144 px.
MIN_SIZE, MAX_SIZE = 10.0, 290.0
MIN_VISIBLE_AREA = 16
MAX_OBJECTS = 6
#: Share of images with per-pixel noise; it would triple the file size on every image.
NOISY_FRACTION = 0.25
#: Bumped whenever the drawing changes, so that `ensure_builtin_dataset` regenerates.
GENERATOR_VERSION = 1
METADATA_FILE = "metadata.json"
GENERATOR = "solo_lib.data.synthetic"
_COMPRESSION = {"compression": "gzip", "compression_opts": 4}


# --------------------------------------------------------------------------------------
# Shapes: unions of ellipses, capsules (thick segments) and convex polygons.
# Coordinates are "object units", x to the right, y DOWN, the ground at y = 0.
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float = 0.0

    def outline(self) -> np.ndarray:
        t = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = self.rx * np.cos(t), self.ry * np.sin(t)
        return np.stack([self.cx + c * x - s * y, self.cy + s * x + c * y], axis=1)

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        du, dv = u - self.cx, v - self.cy
        a = (c * du + s * dv) / self.rx
        b = (c * dv - s * du) / self.ry
        return a * a + b * b <= 1.0


@dataclass(frozen=True)
class Capsule:
    x1: float
    y1: float
    x2: float
    y2: float
    r: float

    def outline(self) -> np.ndarray:
        t = np.linspace(0.0, 2 * np.pi, 12, endpoint=False)
        ring = self.r * np.stack([np.cos(t), np.sin(t)], axis=1)
        return np.concatenate([ring + (self.x1, self.y1), ring + (self.x2, self.y2)])

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        ex, ey = self.x2 - self.x1, self.y2 - self.y1
        du, dv = u - self.x1, v - self.y1
        t = np.clip((du * ex + dv * ey) / max(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
        px, py = du - t * ex, dv - t * ey
        return px * px + py * py <= self.r * self.r


@dataclass(frozen=True)
class Polygon:
    points: tuple[tuple[float, float], ...]
    """Vertices of a CONVEX polygon, in either winding order."""

    def outline(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        p = self.outline()
        q = np.roll(p, -1, axis=0)
        area2 = float(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]))
        sign = 1.0 if area2 >= 0 else -1.0
        inside = np.ones(u.shape, dtype=bool)
        for (ax, ay), (bx, by) in zip(p, q, strict=True):
            inside &= sign * ((bx - ax) * (v - ay) - (by - ay) * (u - ax)) >= 0
        return inside


Shape = Ellipse | Capsule | Polygon


def _rect(x1: float, y1: float, x2: float, y2: float, chamfer: float = 0.0) -> Polygon:
    """An axis-aligned rectangle with its four corners cut by `chamfer`."""
    c = chamfer
    return Polygon(
        ((x1 + c, y1), (x2 - c, y1), (x2, y1 + c), (x2, y2 - c))
        + ((x2 - c, y2), (x1 + c, y2), (x1, y2 - c), (x1, y1 + c))
    )


def _limb(
    x: float, y: float, length: float, angle: float, r: float
) -> tuple[Capsule, float, float]:
    """A capsule from (x, y) of `length` at `angle` from straight down; returns its end too."""
    ex, ey = x + length * math.sin(angle), y + length * math.cos(angle)
    return Capsule(x, y, ex, ey, r), ex, ey


def vehicle_shape(rng: np.random.Generator) -> list[Shape]:
    """A car, van or truck, facing right: a boxy body over two or three wheels."""
    kind = rng.choice(3, p=(0.5, 0.25, 0.25))
    r = rng.uniform(0.09, 0.13)
    bottom = -r * rng.uniform(0.7, 1.0)
    wheel_y = -r
    if kind == 0:  # car: low body, trapezoid cabin
        hb = rng.uniform(0.2, 0.3)
        top = bottom - hb
        hc = rng.uniform(0.14, 0.22)
        c0, c1 = rng.uniform(-0.35, -0.2), rng.uniform(0.1, 0.28)
        slope = rng.uniform(0.05, 0.12)
        shapes: list[Shape] = [
            _rect(-0.5, top, 0.5, bottom, chamfer=0.25 * hb),
            Polygon(
                ((c0, top + 0.01), (c1, top + 0.01), (c1 - slope, top - hc), (c0 + slope, top - hc))
            ),
        ]
        wheels = (-0.5 + rng.uniform(0.16, 0.24), 0.5 - rng.uniform(0.16, 0.24))
    elif kind == 1:  # van or bus: one tall box, only its top front corner cut
        hb = rng.uniform(0.35, 0.5)
        top = bottom - hb
        shapes = [
            _rect(-0.5, top, 0.5, bottom, chamfer=0.06),
            _rect(-0.5, top, 0.3, bottom),
            Polygon(
                ((0.25, top), (0.38, top), (0.5, top + 0.4 * hb), (0.5, bottom), (0.25, bottom))
            ),
        ]
        wheels = (-0.5 + rng.uniform(0.15, 0.22), 0.5 - rng.uniform(0.15, 0.22))
    else:  # truck: cargo box, gap, cab, chassis
        hb = rng.uniform(0.35, 0.5)
        top = bottom - hb
        split = rng.uniform(0.1, 0.2)
        cab_top = bottom - hb * rng.uniform(0.6, 0.8)
        shapes = [
            _rect(-0.5, top, split, bottom - 0.06, chamfer=0.02),
            _rect(-0.5, bottom - 0.1, 0.5, bottom),
            Polygon(
                ((split + 0.03, cab_top), (0.38, cab_top), (0.5, cab_top + 0.12), (0.5, bottom))
                + ((split + 0.03, bottom),)
            ),
        ]
        wheels = (-0.5 + rng.uniform(0.12, 0.18), -0.5 + rng.uniform(0.36, 0.42), 0.5 - 0.16)
    shapes.extend(Ellipse(x, wheel_y, r, r) for x in wheels)
    return shapes


def person_shape(rng: np.random.Generator) -> list[Shape]:
    """A standing or walking person, 1 unit tall: head, torso, two arms, two legs."""
    rh = rng.uniform(0.065, 0.085)
    head_y = -1.0 + rh
    shoulder = head_y + rh + rng.uniform(0.02, 0.04)
    hip = rng.uniform(-0.52, -0.46)
    half_w = rng.uniform(0.09, 0.13)
    shapes: list[Shape] = [
        Ellipse(rng.uniform(-0.01, 0.01), head_y, rh, rh * rng.uniform(1.0, 1.15)),
        _rect(-half_w, shoulder, half_w, shoulder + 0.08, chamfer=0.035),
        Polygon(
            ((-half_w, shoulder + 0.04), (half_w, shoulder + 0.04), (0.8 * half_w, hip + 0.03))
            + ((-0.8 * half_w, hip + 0.03),)
        ),
    ]
    arm_r = rng.uniform(0.032, 0.042)
    for side in (-1, 1):
        upper = rng.uniform(0.15, 0.19)
        a1 = side * rng.uniform(0.05, 0.6) + rng.normal(0, 0.1)
        a2 = a1 + rng.uniform(-0.3, 0.9) * side
        cap, ex, ey = _limb(side * (half_w - 0.01), shoulder + 0.03, upper, a1, arm_r)
        fore, _, _ = _limb(ex, ey, rng.uniform(0.15, 0.19), a2, arm_r * 0.9)
        shapes += [cap, fore]
    leg_r = rng.uniform(0.045, 0.06)
    stride = rng.uniform(0.0, 0.4)
    for side in (-1, 1):
        thigh = -hip * 0.5
        a1 = side * stride + rng.normal(0, 0.05)
        cap, ex, ey = _limb(side * 0.5 * half_w, hip, thigh, a1, leg_r)
        # the shin runs from the knee down to the ground (its round end touches y = 0)
        dx = rng.uniform(-0.05, 0.05) + (ex - side * 0.5 * half_w) * 0.3
        shin = Capsule(ex, ey, ex + dx, -leg_r, leg_r * 0.9)
        shapes += [cap, shin]
    return shapes


def animal_shape(rng: np.random.Generator) -> list[Shape]:
    """A four-legged animal facing right: body, four legs, neck and head, tail."""
    bh = rng.uniform(0.26, 0.4)
    leg_len = rng.uniform(0.22, 0.45)
    body_y = -leg_len - 0.35 * bh
    leg_r = rng.uniform(0.035, 0.055)
    shapes: list[Shape] = [Ellipse(0.0, body_y, 0.5, bh / 2, rng.normal(0, 0.04))]
    gait = rng.uniform(0.0, 0.35)
    for i, x in enumerate((-0.36, -0.24, 0.24, 0.36)):
        angle = gait * (1 if i % 2 else -1) + rng.normal(0, 0.05)
        top_y = body_y + 0.15 * bh
        length = (0.0 - top_y - leg_r) / max(math.cos(angle), 0.5)
        shapes.append(_limb(x + rng.normal(0, 0.02), top_y, length, angle, leg_r)[0])
    neck_angle = rng.uniform(0.5, 1.2)  # from horizontal, upwards
    neck_len = rng.uniform(0.18, 0.32)
    nx, ny = 0.38, body_y - 0.2 * bh
    hx, hy = nx + neck_len * math.cos(neck_angle), ny - neck_len * math.sin(neck_angle)
    neck_r = rng.uniform(0.055, 0.075)
    head_rx, head_ry = rng.uniform(0.1, 0.15), rng.uniform(0.065, 0.085)
    snout = rng.uniform(-0.1, 0.5)
    shapes += [
        Capsule(nx, ny, hx, hy, neck_r),
        Ellipse(
            hx + 0.6 * head_rx * math.cos(snout),
            hy + 0.6 * head_rx * math.sin(snout),
            head_rx,
            head_ry,
            snout,
        ),
        Polygon(
            (
                (hx - 0.05, hy - 0.04),
                (hx + 0.01, hy - 0.04),
                (hx - 0.04, hy - 0.04 - rng.uniform(0.05, 0.1)),
            )
        ),
    ]
    tail_angle = rng.uniform(-0.6, 1.0)  # from horizontal backwards, positive = up
    tail_len = rng.uniform(0.15, 0.3)
    tx, ty = -0.46, body_y - 0.2 * bh
    shapes.append(
        Capsule(
            tx,
            ty,
            tx - tail_len * math.cos(tail_angle),
            ty - tail_len * math.sin(tail_angle),
            rng.uniform(0.025, 0.035),
        )
    )
    return shapes


_SHAPE_BUILDERS = {VEHICLE: vehicle_shape, PERSON: person_shape, ANIMAL: animal_shape}


# --------------------------------------------------------------------------------------
# Rasterising and texturing
# --------------------------------------------------------------------------------------
def _rasterize(
    shapes: list[Shape], affine: np.ndarray, shift: np.ndarray, window: tuple[int, int, int, int]
) -> np.ndarray:
    """Union of `shapes` (object units) placed by pixel = affine @ p + shift, on `window`.

    window = (x0, y0, x1, y1) in pixels; returns a bool (y1 - y0, x1 - x0) mask sampled at
    pixel centres. Each shape is evaluated only on its own bounding sub-window.
    """
    x0, y0, x1, y1 = window
    inv = np.linalg.inv(affine)
    xs = np.arange(x0, x1) + 0.5 - shift[0]
    ys = np.arange(y0, y1) + 0.5 - shift[1]
    u = inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None]  # (h, w) object coordinates
    v = inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None]
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for shape in shapes:
        pix = shape.outline() @ affine.T + shift
        sx0 = max(int(math.floor(pix[:, 0].min())) - 1 - x0, 0)
        sy0 = max(int(math.floor(pix[:, 1].min())) - 1 - y0, 0)
        sx1 = min(int(math.ceil(pix[:, 0].max())) + 1 - x0, x1 - x0)
        sy1 = min(int(math.ceil(pix[:, 1].max())) + 1 - y0, y1 - y0)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        mask[sy0:sy1, sx0:sx1] |= shape.contains(u[sy0:sy1, sx0:sx1], v[sy0:sy1, sx0:sx1])
    return mask


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a coarse (gh, gw, ...) grid to (h, w, ...)."""
    gh, gw = grid.shape[:2]
    y = np.linspace(0.0, gh - 1, h)
    x = np.linspace(0.0, gw - 1, w)
    y0 = np.floor(y).astype(int)
    x0 = np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    extra = (1,) * (grid.ndim - 2)
    wy = (y - y0).astype(grid.dtype).reshape(-1, 1, *extra)
    wx = (x - x0).astype(grid.dtype).reshape(1, -1, *extra)
    rows = grid[y0] * (1 - wy) + grid[y1] * wy  # (h, gw, ...)
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A (h, w) float field in [0, 1] that mixes two colours: solid, stripes, blotches, ramp, checks."""
    kind = rng.integers(5)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    if kind == 0:
        return np.zeros((h, w), dtype=np.float32)
    if kind == 1:
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4.0, 16.0)
        phase = (xx * math.cos(a) + yy * math.sin(a)) * (2 * np.pi / period)
        return (np.sin(phase) > 0).astype(np.float32)
    if kind == 2:
        cells = rng.integers(2, 7)
        return _upsample(rng.random((cells, cells), dtype=np.float32), h, w)
    if kind == 3:
        a = rng.uniform(0, 2 * np.pi)
        ramp = xx * math.cos(a) + yy * math.sin(a)
        return (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    cell = int(rng.integers(4, 12))
    return ((yy // cell + xx // cell) % 2).astype(np.float32)


def _texture(
    rng: np.random.Generator, h: int, w: int, contrast_with: np.ndarray | None
) -> np.ndarray:
    """A (h, w, 3) float texture; its colours are re-drawn while too close to `contrast_with`."""
    field = _pattern(rng, h, w)[..., None]
    best, best_dist = None, -1.0
    for _ in range(4):
        c1, c2 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
        c2 = c1 + (c2 - c1) * rng.uniform(0.3, 0.8)  # keep the two colours of a texture related
        mean = c1 + (c2 - c1) * float(field.mean())
        dist = 1.0 if contrast_with is None else float(np.linalg.norm(mean - contrast_with))
        if dist > best_dist:
            best, best_dist = (c1, c2), dist
        if dist > 0.35:
            break
    c1, c2 = best
    shade = rng.uniform(-0.25, 0.25) * np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None, None]
    return (c1 + (c2 - c1) * field) * (1.0 + shade)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A cluttered (H, W, 3) float background: gradient, colour blotches, distractor shapes."""
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    c1, c2 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    a = rng.uniform(0, 2 * np.pi)
    ramp = np.arange(w, dtype=np.float32)[None, :] * math.cos(a) + np.arange(h, dtype=np.float32)[
        :, None
    ] * math.sin(a)
    ramp = ((ramp - ramp.min()) / (ramp.max() - ramp.min()))[..., None]
    image = c1 + (c2 - c1) * ramp
    cells = int(rng.integers(3, 9))
    image += rng.uniform(0.05, 0.2) * (
        _upsample(rng.random((cells, cells + 2, 3), dtype=np.float32), h, w) - 0.5
    )
    for _ in range(rng.integers(0, 6)):
        _draw_distractor(rng, image)
    return image


def _draw_distractor(rng: np.random.Generator, image: np.ndarray) -> None:
    """Paint one random blob, box, triangle or bar into `image` (in place)."""
    h, w = image.shape[:2]
    size = math.exp(rng.uniform(math.log(8.0), math.log(140.0)))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    kind = rng.integers(4)
    if kind == 0:
        shape: Shape = Ellipse(
            cx, cy, size / 2, size / 2 * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        )
    elif kind == 1:
        a, b = size / 2, size / 2 * rng.uniform(0.3, 1.0)
        t = rng.uniform(0, np.pi)
        c, s = math.cos(t), math.sin(t)
        shape = Polygon(
            tuple(
                (cx + c * x - s * y, cy + s * x + c * y)
                for x, y in ((-a, -b), (a, -b), (a, b), (-a, b))
            )
        )
    elif kind == 2:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 3))
        shape = Polygon(
            tuple((cx + size / 2 * math.cos(t), cy + size / 2 * math.sin(t)) for t in angles)
        )
    else:
        t = rng.uniform(0, np.pi)
        dx, dy = size / 2 * math.cos(t), size / 2 * math.sin(t)
        shape = Capsule(
            cx - dx, cy - dy, cx + dx, cy + dy, max(2.5, size * rng.uniform(0.05, 0.15))
        )
    pix = shape.outline()
    x0, y0 = max(int(pix[:, 0].min()) - 1, 0), max(int(pix[:, 1].min()) - 1, 0)
    x1, y1 = min(int(pix[:, 0].max()) + 2, w), min(int(pix[:, 1].max()) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = _rasterize([shape], np.eye(2), np.zeros(2), (x0, y0, x1, y1))
    tex = _texture(rng, y1 - y0, x1 - x0, None)
    image[y0:y1, x0:x1][mask] = tex[mask]


def _place(rng: np.random.Generator, extent: np.ndarray, placed: list[np.ndarray]) -> np.ndarray:
    """Pick the top-left corner of a box of size `extent` (w, h) that covers little of `placed`.

    Tries a few uniform positions and keeps the first that hides < 40% of every box
    behind it (or the least-hiding one), so that occlusion happens but rarely buries objects.
    """
    w, h = extent
    best, best_cover = None, 2.0
    for _ in range(10):
        corner = np.array([rng.uniform(0, IMAGE_WIDTH - w), rng.uniform(0, IMAGE_HEIGHT - h)])
        cover = 0.0
        for box in placed:
            iw = min(box[2], corner[0] + w) - max(box[0], corner[0])
            ih = min(box[3], corner[1] + h) - max(box[1], corner[1])
            if iw > 0 and ih > 0:
                cover = max(cover, iw * ih / ((box[2] - box[0]) * (box[3] - box[1])))
        if cover < best_cover:
            best, best_cover = corner, cover
        if cover < 0.4:
            break
    return best


def render_image(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw image `index` of the data set with `seed`.

    Returns (image uint8 (3, 300, 400), masks uint8 (n, 300, 400) of the visible parts,
    labels int64 (n,) in 1..3, boxes float64 (n, 4) x1 y1 x2 y2). Box corners are pixel
    edges: a mask spanning columns a..b has x1 = a, x2 = b + 1.
    """
    rng = np.random.default_rng([seed, index])
    image = _background(rng)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    labels = rng.integers(1, 4, size=n)
    sizes = np.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE), size=n))
    order = np.argsort(-(np.log(sizes) + rng.normal(0.0, 0.3, size=n)))  # big ones mostly behind
    owner = np.full((IMAGE_HEIGHT, IMAGE_WIDTH), -1, dtype=np.int16)
    placed: list[np.ndarray] = []
    drawn_labels: list[int] = []
    for label, size in zip(labels[order], sizes[order], strict=True):
        shapes = _SHAPE_BUILDERS[int(label)](rng)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        tilt = rng.normal(0.0, 0.06)
        stretch = math.exp(rng.normal(0.0, 0.12))
        c, s = math.cos(tilt), math.sin(tilt)
        affine = np.array([[c, -s], [s, c]]) @ np.diag([flip * stretch, 1.0 / stretch])
        pts = np.concatenate([shape.outline() for shape in shapes]) @ affine.T
        lo, extent = pts.min(axis=0), np.ptp(pts, axis=0)
        scale = min(
            size / math.sqrt(extent[0] * extent[1]),
            0.97 * IMAGE_WIDTH / extent[0],
            0.97 * IMAGE_HEIGHT / extent[1],
        )
        corner = _place(rng, extent * scale, placed)
        shift = corner - lo * scale
        x0, y0 = int(corner[0]), int(corner[1])
        x1 = min(int(math.ceil(corner[0] + extent[0] * scale)) + 1, IMAGE_WIDTH)
        y1 = min(int(math.ceil(corner[1] + extent[1] * scale)) + 1, IMAGE_HEIGHT)
        mask = _rasterize(shapes, affine * scale, shift, (x0, y0, x1, y1))
        region = image[y0:y1, x0:x1]
        tex = _texture(rng, y1 - y0, x1 - x0, region[mask].mean(axis=0) if mask.any() else None)
        region[mask] = tex[mask]
        owner[y0:y1, x0:x1][mask] = len(drawn_labels)
        placed.append(np.array([corner[0], corner[1], *(corner + extent * scale)]))
        drawn_labels.append(int(label))
    if rng.random() < NOISY_FRACTION:  # sensor noise on some images (noise compresses badly)
        image += rng.uniform(0.005, 0.03) * rng.standard_normal(image.shape, dtype=np.float32)
    image_u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)

    masks, keep_labels, boxes = [], [], []
    for j, label in enumerate(drawn_labels):
        visible = owner == j
        if visible.sum() < MIN_VISIBLE_AREA:
            continue
        cols, rows = np.flatnonzero(visible.any(axis=0)), np.flatnonzero(visible.any(axis=1))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        masks.append(visible)
        keep_labels.append(label)
    masks_u8 = (
        np.stack(masks) if masks else np.zeros((0, IMAGE_HEIGHT, IMAGE_WIDTH), bool)
    ).astype(np.uint8)
    return (
        image_u8,
        masks_u8,
        np.asarray(keep_labels, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
    )


# --------------------------------------------------------------------------------------
# Writing the four files
# --------------------------------------------------------------------------------------
def write_dataset(out_dir: str | os.PathLike, num_images: int, seed: int) -> Path:
    """Write `num_images` synthetic images with `seed` to `out_dir` in the CIS 680 format.

    Files: the two gzip (zlib) compressed h5 files (one chunk per image / mask), the two
    pickled object-array .npy files, and `metadata.json` (generator version, seed, counts).
    The folder is built next to `out_dir` and swapped in at the end, so an interrupted
    run never leaves a half-written data set. Returns `out_dir`.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    out_dir = Path(out_dir)
    shape = (IMAGE_HEIGHT, IMAGE_WIDTH)
    labels = np.empty(num_images, dtype=object)
    bboxes = np.empty(num_images, dtype=object)
    with atomic_directory(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        with h5py.File(tmp / IMAGES_FILE, "w") as fi, h5py.File(tmp / MASKS_FILE, "w") as fm:
            images = fi.create_dataset(
                "data",
                shape=(num_images, 3, *shape),
                dtype="uint8",
                chunks=(1, 3, *shape),
                **_COMPRESSION,
            )
            masks = fm.create_dataset(
                "data",
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype="uint8",
                chunks=(1, *shape),
                **_COMPRESSION,
            )
            total = 0
            for i in range(num_images):
                image, m, labels[i], bboxes[i] = render_image(seed, i)
                images[i] = image
                if len(m):
                    masks.resize(total + len(m), axis=0)
                    masks[total:] = m
                    total += len(m)
        np.save(tmp / LABELS_FILE, labels, allow_pickle=True)
        np.save(tmp / BBOXES_FILE, bboxes, allow_pickle=True)
        metadata = {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "num_images": num_images,
            "num_masks": total,
            "seed": seed,
            "class_names": list(CLASS_NAMES),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return out_dir


def read_metadata(root: str | os.PathLike) -> dict | None:
    """The generator's `metadata.json` in `root`, or None when missing or unreadable."""
    try:
        return json.loads((Path(root) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_current(root: Path, num_images: int, seed: int) -> bool:
    meta = read_metadata(root)
    files_there = all(
        (root / f).is_file() for f in (IMAGES_FILE, MASKS_FILE, LABELS_FILE, BBOXES_FILE)
    )
    return (
        files_there
        and meta is not None
        and (
            meta.get("version") == GENERATOR_VERSION
            and meta.get("num_images") == num_images
            and meta.get("seed") == seed
        )
    )


def ensure_builtin_dataset(
    root: str | os.PathLike = BUILTIN_DATA_DIR, num_images: int = 1000, seed: int = 0
) -> Path:
    """The built-in data set's folder, generated on first use (about 30 s for 1,000 images).

    A folder whose `metadata.json` names another size, seed or generator version is
    regenerated; a folder of other files (e.g. the real CIS 680 data) is never replaced:
    that raises FileExistsError. Safe when several processes call it at once: they take a file lock,
    and the folder is swapped in whole.
    """
    root = Path(root)
    if _is_current(root, num_images, seed):
        return root
    meta = read_metadata(root)
    if (
        root.is_dir()
        and any(root.iterdir())
        and (meta is None or meta.get("generator") != GENERATOR)
    ):
        raise FileExistsError(
            f"{root} holds files that the built-in generator did not write (no {METADATA_FILE} from "
            f"{GENERATOR}); refusing to replace them. Pass another root, or move the folder away."
        )
    with file_lock(root.parent / f".{root.name}.lock"):
        if not _is_current(root, num_images, seed):
            write_dataset(root, num_images, seed)
    return root
