"""Drawing one image of the built-in data set: procedural vehicles, people and animals in the CIS 680 format.

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

import math

import numpy as np

from solo_lib.data.synthetic.shapes import (
    SHAPE_BUILDERS,
    Capsule,
    Ellipse,
    Polygon,
    Shape,
    rasterize,
)

IMAGE_HEIGHT, IMAGE_WIDTH = 300, 400

#: Range of sqrt(w * h) of a full (unoccluded) object, in source pixels. The paper's
#: scale ranges at 800 px input, mapped to 300 px, run from below 36 px to above 144 px.
MIN_SIZE, MAX_SIZE = 10.0, 290.0
MIN_VISIBLE_AREA = 16
MAX_OBJECTS = 6
#: Share of images with per-pixel noise; it would triple the file size on every image.
NOISY_FRACTION = 0.25


# --------------------------------------------------------------------------------------
# Rasterising and texturing
# --------------------------------------------------------------------------------------
def upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
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
        return upsample(rng.random((cells, cells), dtype=np.float32), h, w)
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


def background(rng: np.random.Generator, distractors: bool = True) -> np.ndarray:
    """A cluttered (H, W, 3) float background: gradient, colour blotches, distractor shapes.

    `distractors=False` leaves out the distractor shapes (and their random draws): the
    dense mode's small round cells would be too easily confused with them.
    """
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
        upsample(rng.random((cells, cells + 2, 3), dtype=np.float32), h, w) - 0.5
    )
    if distractors:
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
    mask = rasterize([shape], np.eye(2), np.zeros(2), (x0, y0, x1, y1))
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
    image = background(rng)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    labels = rng.integers(1, 4, size=n)
    sizes = np.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE), size=n))
    order = np.argsort(-(np.log(sizes) + rng.normal(0.0, 0.3, size=n)))  # big ones mostly behind
    owner = np.full((IMAGE_HEIGHT, IMAGE_WIDTH), -1, dtype=np.int16)
    placed: list[np.ndarray] = []
    drawn_labels: list[int] = []
    for label, size in zip(labels[order], sizes[order], strict=True):
        shapes = SHAPE_BUILDERS[int(label)](rng)
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
        mask = rasterize(shapes, affine * scale, shift, (x0, y0, x1, y1))
        region = image[y0:y1, x0:x1]
        tex = _texture(rng, y1 - y0, x1 - x0, region[mask].mean(axis=0) if mask.any() else None)
        region[mask] = tex[mask]
        owner[y0:y1, x0:x1][mask] = len(drawn_labels)
        placed.append(np.array([corner[0], corner[1], *(corner + extent * scale)]))
        drawn_labels.append(int(label))
    return finish_image(rng, image), *visible_objects(owner, drawn_labels)


# --------------------------------------------------------------------------------------
# The last steps, shared by both modes
# --------------------------------------------------------------------------------------
def finish_image(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Add sensor noise to a share `NOISY_FRACTION` of images; return uint8 (3, H, W).

    Only a share is noisy because noise compresses badly: it would triple the files.
    """
    if rng.random() < NOISY_FRACTION:
        image = image + rng.uniform(0.005, 0.03) * rng.standard_normal(
            image.shape, dtype=np.float32
        )
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def visible_objects(
    owner: np.ndarray, labels: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks, labels and boxes of the objects that stay visible in the `owner` map.

    `owner` is an (H, W) map of the index (into `labels`) of the object drawn last on each
    pixel, -1 for background, so the masks are disjoint by construction. Objects with
    fewer than `MIN_VISIBLE_AREA` visible pixels are dropped. Returns (masks uint8
    (n, H, W), labels int64 (n,), boxes float64 (n, 4) x1 y1 x2 y2 at pixel edges).
    """
    masks, keep_labels, boxes = [], [], []
    for j, label in enumerate(labels):
        visible = owner == j
        if visible.sum() < MIN_VISIBLE_AREA:
            continue
        cols, rows = np.flatnonzero(visible.any(axis=0)), np.flatnonzero(visible.any(axis=1))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        masks.append(visible)
        keep_labels.append(label)
    masks_u8 = (np.stack(masks) if masks else np.zeros((0, *owner.shape), bool)).astype(np.uint8)
    return (
        masks_u8,
        np.asarray(keep_labels, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
    )
