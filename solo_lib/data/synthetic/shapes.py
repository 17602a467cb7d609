"""The built-in data set's objects: vehicles, people and animals as unions of simple shapes.

Ellipses, capsules (thick segments) and convex polygons in "object units", x to the
right, y DOWN, the ground at y = 0; every silhouette varies (cars, vans or trucks;
swinging arms and legs; legs, neck, head and tail). `rasterize` draws a union of shapes
into a pixel window. The dense mode's cells are `Blob`s: round or lobed star shapes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("vehicle", "person", "animal")
VEHICLE, PERSON, ANIMAL = 1, 2, 3


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


@dataclass(frozen=True)
class Blob:
    """A round or irregular blob: radius(t) = r * (1 + sum_k a_k cos(k t + phase_k)), k = 2, 3, ...

    Small amplitudes give a near-circle; larger ones elongate it (k = 2) and give it
    lobes (k >= 3). The shape is star-shaped around its centre, so every point has a
    radial position `rho` (0 at the centre, 1 on the outline) that shading can use.
    Keep sum(|a_k|) well below 1 so that the radius stays positive.
    """

    cx: float
    cy: float
    r: float
    amplitudes: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()

    def radius_at(self, angle: np.ndarray | float) -> np.ndarray | float:
        """The outline's distance from the centre in direction `angle` (radians)."""
        factor = 1.0
        for k, (a, phase) in enumerate(zip(self.amplitudes, self.phases, strict=True), start=2):
            factor = factor + a * np.cos(k * angle + phase)
        return self.r * factor

    @functools.cached_property
    def max_radius(self) -> float:
        """An upper bound of `radius_at`, for bounding windows and quick distance checks."""
        return self.r * (1.0 + sum(abs(a) for a in self.amplitudes))

    def rho(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Radial position of the points (u, v): distance from the centre / radius that way."""
        du, dv = u - self.cx, v - self.cy
        return np.hypot(du, dv) / self.radius_at(np.arctan2(dv, du))

    def outline(self) -> np.ndarray:
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        radius = self.radius_at(t)
        return np.stack([self.cx + radius * np.cos(t), self.cy + radius * np.sin(t)], axis=1)

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.rho(u, v) <= 1.0


Shape = Ellipse | Capsule | Polygon | Blob


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


SHAPE_BUILDERS = {VEHICLE: vehicle_shape, PERSON: person_shape, ANIMAL: animal_shape}


def rasterize(
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
