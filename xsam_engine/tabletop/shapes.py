"""Per-class object geometry: sizes, top-surface height profiles and surface appearance.

Objects are seen from above. Each class is a footprint in the image plus a height profile in
metres above the object's base (what the depth map shows) and an albedo pattern that makes
the class recognisable: a cup is a disc with a thin rim, a dark interior and a small handle;
a mug is larger with a thick rim and a big looped handle; a bowl is a wide disc with a concave
interior; a plate is a wide, nearly flat disc with a raised rim; a bottle lies on its side
(rounded body, neck and cap); a box is a bevelled rectangle with a tape strip; a ball is a
sphere cap; a can is a small disc with a metallic rim and a pull tab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalog import CLASSES, COLOURS

SILVER = (0.76, 0.77, 0.80)
_LIQUIDS = ((0.22, 0.12, 0.06), (0.42, 0.23, 0.09), (0.30, 0.17, 0.08))
_CAPS = ((0.92, 0.92, 0.90), (0.12, 0.12, 0.13), (0.55, 0.56, 0.58))
_TAPES = ((0.86, 0.78, 0.60), (0.93, 0.93, 0.90))

# Footprint radius around the centre in units of ``size_m`` (handles stick out).
_EXTENT_FACTOR = {"cup": 1.45, "mug": 1.75}


@dataclass(frozen=True)
class ObjectGeometry:
    """Where an object is and what it looks like; everything needed to render it.

    Attributes:
        category: one of ``CLASSES``.
        colour: key of ``COLOURS``.
        centre_xy: footprint centre in pixels (x, y).
        px_per_m: image scale at the object (fx / table depth).
        size_m: radius for round classes; half-length for bottle and box.
        width_ratio: bottle body radius and box half-width as a fraction of ``size_m``.
        height_m: height of the top above the object's base.
        angle: orientation in radians (handle direction, bottle axis, box long side).
        rgb: body albedo in [0, 1].
        accent_rgb: cap, tape, liquid or ball-seam albedo.
        variant: class-specific switch: cup/mug filled with a drink, ball with a seam.
    """

    category: str
    colour: str
    centre_xy: tuple[float, float]
    px_per_m: float
    size_m: float
    width_ratio: float
    height_m: float
    angle: float
    rgb: tuple[float, float, float]
    accent_rgb: tuple[float, float, float]
    variant: bool = False

    @property
    def extent_m(self) -> float:
        """Radius of a disc around ``centre_xy`` that contains the whole footprint."""
        if self.category == "box":
            return self.size_m * float(np.hypot(1.0, self.width_ratio))
        return self.size_m * _EXTENT_FACTOR.get(self.category, 1.0)

    @property
    def extent_px(self) -> float:
        return self.extent_m * self.px_per_m

    def moved_to(self, centre_xy: tuple[float, float]) -> ObjectGeometry:
        return ObjectGeometry(
            self.category, self.colour, (float(centre_xy[0]), float(centre_xy[1])), self.px_per_m, self.size_m,
            self.width_ratio, self.height_m, self.angle, self.rgb, self.accent_rgb, self.variant,
        )

    def scaled(self, factor: float) -> ObjectGeometry:
        """The same object ``factor`` times larger in every dimension."""
        return ObjectGeometry(
            self.category, self.colour, self.centre_xy, self.px_per_m, self.size_m * factor, self.width_ratio,
            self.height_m * factor, self.angle, self.rgb, self.accent_rgb, self.variant,
        )


@dataclass(eq=False)
class ObjectPatch:
    """An object rendered into a small window of the image.

    Attributes:
        x0, y0: image position of the window's top-left pixel (may be negative near borders).
        footprint: (h, w) bool, the object's pixels in the window.
        height: (h, w) float32 metres of the top surface above the object's base, 0 outside.
        albedo: (h, w, 3) float32 in [0, 1].
        gloss: (h, w) float32 specular strength.
        px_per_m: image scale of the window, to turn height differences into slopes.
    """

    x0: int
    y0: int
    footprint: np.ndarray
    height: np.ndarray
    albedo: np.ndarray
    gloss: np.ndarray
    px_per_m: float

    @property
    def area(self) -> int:
        return int(self.footprint.sum())


def sample_geometry(
    category: str, colour: str, rng: np.random.Generator, centre_xy: tuple[float, float], px_per_m: float
) -> ObjectGeometry:
    """Draw a plausible size, orientation and appearance for one object of ``category``."""
    if category not in CLASSES:
        raise ValueError(f"Unknown category {category!r}; choose one of {CLASSES}.")
    if colour not in COLOURS:
        raise ValueError(f"Unknown colour {colour!r}; choose one of {tuple(COLOURS)}.")
    width_ratio, variant = 1.0, False
    accent = SILVER
    if category == "cup":
        size, height = rng.uniform(0.036, 0.045), rng.uniform(0.07, 0.09)
        variant = bool(rng.random() < 0.25)
        accent = _LIQUIDS[rng.integers(len(_LIQUIDS))]
    elif category == "mug":
        size, height = rng.uniform(0.046, 0.056), rng.uniform(0.09, 0.11)
        variant = bool(rng.random() < 0.5)
        accent = _LIQUIDS[rng.integers(len(_LIQUIDS))]
    elif category == "bowl":
        size, height = rng.uniform(0.066, 0.09), rng.uniform(0.045, 0.065)
    elif category == "bottle":
        size, width_ratio = rng.uniform(0.09, 0.12), rng.uniform(0.3, 0.38)
        height = 2.0 * size * width_ratio
        accent = _CAPS[rng.integers(len(_CAPS))]
    elif category == "box":
        size, width_ratio, height = rng.uniform(0.045, 0.075), rng.uniform(0.55, 1.0), rng.uniform(0.04, 0.1)
        accent = _TAPES[rng.integers(len(_TAPES))]
    elif category == "ball":
        size = rng.uniform(0.032, 0.055)
        height = 2.0 * size
        variant = bool(rng.random() < 0.5)
        accent = (0.95, 0.95, 0.92) if colour != "white" else (0.75, 0.2, 0.2)
    elif category == "can":
        size, height = rng.uniform(0.031, 0.035), rng.uniform(0.11, 0.125)
    else:  # plate
        size, height = rng.uniform(0.095, 0.125), rng.uniform(0.015, 0.02)
    base = np.asarray(COLOURS[colour], dtype=np.float64) / 255.0
    rgb = np.clip(base + rng.normal(0.0, 0.025, size=3), 0.0, 1.0)
    return ObjectGeometry(
        category=category,
        colour=colour,
        centre_xy=(float(centre_xy[0]), float(centre_xy[1])),
        px_per_m=float(px_per_m),
        size_m=float(size),
        width_ratio=float(width_ratio),
        height_m=float(height),
        angle=float(rng.uniform(-np.pi, np.pi)),
        rgb=(float(rgb[0]), float(rgb[1]), float(rgb[2])),
        accent_rgb=tuple(float(c) for c in accent),
        variant=variant,
    )


def render_object(geometry: ObjectGeometry) -> ObjectPatch:
    """Render the footprint, height profile and appearance of one object in its own window."""
    cx, cy = geometry.centre_xy
    reach = geometry.extent_px + 1.0
    x0, x1 = int(np.floor(cx - reach)), int(np.ceil(cx + reach)) + 1
    y0, y1 = int(np.floor(cy - reach)), int(np.ceil(cy + reach)) + 1
    # Local metric coordinates of the pixel centres, rotated into the object's frame.
    xs = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx)) / np.float32(geometry.px_per_m)
    ys = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy)) / np.float32(geometry.px_per_m)
    cos_a, sin_a = np.float32(np.cos(geometry.angle)), np.float32(np.sin(geometry.angle))
    u = xs[None, :] * cos_a + ys[:, None] * sin_a
    v = ys[:, None] * cos_a - xs[None, :] * sin_a
    surface = _SurfaceBuilder(u.shape, geometry)
    _DRAWERS[geometry.category](geometry, u, v, surface)
    return ObjectPatch(x0, y0, surface.footprint, surface.height, surface.albedo, surface.gloss, geometry.px_per_m)


class _SurfaceBuilder:
    """Mutable buffers one class drawer fills in."""

    def __init__(self, shape: tuple[int, int], geometry: ObjectGeometry) -> None:
        self.footprint = np.zeros(shape, dtype=bool)
        self.height = np.zeros(shape, dtype=np.float32)
        self.albedo = np.empty(shape + (3,), dtype=np.float32)
        self.albedo[:] = np.asarray(geometry.rgb, dtype=np.float32)
        self.gloss = np.zeros(shape, dtype=np.float32)

    def paint(self, region: np.ndarray, rgb: tuple[float, float, float] | np.ndarray) -> None:
        self.albedo[region] = np.asarray(rgb, dtype=np.float32)

    def darken(self, region: np.ndarray, factor: np.ndarray | float) -> None:
        factor = np.asarray(factor, dtype=np.float32)
        self.albedo[region] *= factor[..., None] if factor.ndim else factor


def _draw_cup_like(
    g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder,
    rim: float, handle_outer: float, handle_inner: float, handle_offset: float,
) -> None:
    radius, height = g.size_m, g.height_m
    r = np.hypot(u, v)
    body = r <= radius
    inner_radius = radius * (1.0 - rim)
    interior = r < inner_radius
    handle_r = np.hypot(u - radius * (1.0 + handle_offset), v)
    handle = (handle_r <= handle_outer * radius) & (handle_r >= handle_inner * radius) & ~body
    tube = 0.5 * (handle_outer - handle_inner) * radius
    tube_offset = np.abs(handle_r - 0.5 * (handle_outer + handle_inner) * radius)

    s.footprint = body | handle
    s.height[body] = height
    s.height[handle] = (0.55 * height + np.sqrt(np.maximum(tube**2 - tube_offset**2, 0.0)))[handle]
    s.gloss[s.footprint] = 0.4
    if g.variant:  # a drink: a glossy liquid surface inside the (visible) inner wall
        level = 0.7 * height
        liquid_radius = 0.7 * inner_radius
        liquid = r < liquid_radius
        wall = interior & ~liquid
        s.height[wall] = (level + (height - level) * (r - liquid_radius) / (inner_radius - liquid_radius))[wall]
        s.darken(wall, 0.72)
        s.height[liquid] = level
        s.paint(liquid, g.accent_rgb)
        s.gloss[liquid] = 0.6
    else:  # empty: the bottom far below the rim, in the shadow of the walls
        s.height[interior] = 0.12 * height
        shade = 0.62 - 0.18 * (r / inner_radius) ** 4
        s.darken(interior, shade[interior])


def _draw_cup(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    _draw_cup_like(g, u, v, s, rim=0.09, handle_outer=0.30, handle_inner=0.14, handle_offset=0.12)


def _draw_mug(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    _draw_cup_like(g, u, v, s, rim=0.14, handle_outer=0.52, handle_inner=0.30, handle_offset=0.22)


def _draw_bowl(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    radius, height = g.size_m, g.height_m
    r = np.hypot(u, v)
    s.footprint = r <= radius
    inner_radius = 0.93 * radius
    interior = r < inner_radius
    floor = 0.2 * height
    s.height[s.footprint] = height
    # Concave interior: a paraboloid from the floor up to just below the rim.
    s.height[interior] = (floor + 0.9 * (height - floor) * (r / inner_radius) ** 2)[interior]
    s.darken(interior, (0.78 + 0.22 * (r / inner_radius))[interior])
    s.gloss[s.footprint] = 0.3


def _draw_plate(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    radius, height = g.size_m, g.height_m
    t = np.hypot(u, v) / radius
    s.footprint = t <= 1.0
    # Flat centre, a rim rising to the full height, then a short outer lip.
    profile = np.where(
        t < 0.62,
        0.35 * height,
        np.where(t < 0.9, 0.35 * height + 0.65 * height * (t - 0.62) / 0.28, height - 0.3 * height * (t - 0.9) / 0.1),
    )
    s.height[s.footprint] = profile[s.footprint]
    s.darken((t > 0.56) & (t < 0.6), 0.8)  # decorative band where the rim starts
    s.gloss[s.footprint] = 0.35


def _draw_ball(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    radius = g.size_m
    r2 = u**2 + v**2
    s.footprint = r2 <= radius**2
    s.height[s.footprint] = (radius + np.sqrt(np.maximum(radius**2 - r2, 0.0)))[s.footprint]
    if g.variant:  # a curved seam, like a tennis ball
        seam = s.footprint & (np.abs(v - 0.45 * radius * np.sin(np.pi * u / radius)) < 0.07 * radius)
        s.paint(seam, g.accent_rgb)
    s.gloss[s.footprint] = 0.45


def _draw_can(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    radius, height = g.size_m, g.height_m
    r = np.hypot(u, v)
    s.footprint = r <= radius
    rim = s.footprint & (r >= 0.84 * radius)
    groove = (r >= 0.78 * radius) & (r < 0.84 * radius)
    lid = r < 0.78 * radius
    tab = lid & (u > 0.05 * radius) & (u < 0.62 * radius) & (np.abs(v) < 0.17 * radius)
    rivet = r < 0.1 * radius
    s.height[rim] = height
    s.height[groove] = height - 0.007
    s.height[lid] = height - 0.004
    s.height[tab | rivet] = height - 0.002
    s.paint(rim | groove | tab | rivet, SILVER)
    s.gloss[s.footprint] = 0.35
    s.gloss[rim | tab] = 0.9


def _draw_bottle(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    half_length = g.size_m
    body_radius = g.width_ratio * half_length
    neck_radius = 0.38 * body_radius
    corner = 0.3 * body_radius
    shoulder_start, neck_start, cap_start = 0.58 * half_length, 0.76 * half_length, 0.88 * half_length
    # Local radius of the lying bottle along its axis u.
    ease = 0.5 + 0.5 * np.cos(np.pi * np.clip((u - shoulder_start) / (neck_start - shoulder_start), 0.0, 1.0))
    radius = neck_radius + (body_radius - neck_radius) * ease
    radius = np.where(u >= cap_start, 1.2 * neck_radius, radius)
    bottom = -half_length + corner
    rounded = body_radius - corner + np.sqrt(np.maximum(corner**2 - (u - bottom) ** 2, 0.0))
    radius = np.where(u < bottom, rounded, radius)
    s.footprint = (np.abs(u) <= half_length) & (np.abs(v) <= radius)
    # A cylinder lying on the table: its axis is at body-radius height everywhere.
    top = body_radius + np.sqrt(np.maximum(radius**2 - v**2, 0.0))
    s.height[s.footprint] = top[s.footprint]
    cap = s.footprint & (u >= cap_start)
    s.paint(cap, g.accent_rgb)
    s.gloss[s.footprint] = 0.6
    s.gloss[cap] = 0.2


def _draw_box(g: ObjectGeometry, u: np.ndarray, v: np.ndarray, s: _SurfaceBuilder) -> None:
    half_length, half_width, height = g.size_m, g.size_m * g.width_ratio, g.height_m
    s.footprint = (np.abs(u) <= half_length) & (np.abs(v) <= half_width)
    to_edge = np.minimum(half_length - np.abs(u), half_width - np.abs(v))
    bevel = 0.14 * half_width
    s.height[s.footprint] = (height - 0.5 * np.maximum(bevel - to_edge, 0.0))[s.footprint]
    tape = s.footprint & (np.abs(v) < 0.09 * half_width) & (to_edge > 0.5 * bevel)
    s.paint(tape, g.accent_rgb)
    s.darken(s.footprint & (np.abs(v) < 0.02 * half_width), 0.5)  # the seam between the flaps
    s.gloss[s.footprint] = 0.05


_DRAWERS = {
    "cup": _draw_cup,
    "mug": _draw_mug,
    "bowl": _draw_bowl,
    "bottle": _draw_bottle,
    "box": _draw_box,
    "ball": _draw_ball,
    "can": _draw_can,
    "plate": _draw_plate,
}
