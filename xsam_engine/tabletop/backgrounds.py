"""Table textures and the clutter on them that is *not* an object.

Textures are defined in metres on the table and converted with the image scale, so a scene
looks the same at any resolution. Distractors (stains, pen lines, paper scraps, a flat napkin,
crumbs) are painted into the table albedo; they never enter the instance map.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .catalog import COLOURS

TABLE_STYLES: tuple[str, ...] = ("wooden", "dark wooden", "grey", "white", "checkered", "striped", "green")
"""Table looks; the name is also how a caption describes the table ("the checkered table")."""

_PLAIN_COLOURS = {"grey": (0.50, 0.50, 0.52), "white": (0.86, 0.85, 0.81), "green": (0.24, 0.40, 0.28)}
_WOOD_COLOURS = {"wooden": (0.66, 0.47, 0.29), "dark wooden": (0.40, 0.26, 0.15)}
_CLOTH_TONES = ((0.55, 0.62, 0.75), (0.72, 0.50, 0.50), (0.55, 0.68, 0.55), (0.36, 0.36, 0.40), (0.78, 0.70, 0.52))
_CLOTH_LIGHT = (0.90, 0.88, 0.83)
_PAPER_COLOURS = ((0.95, 0.95, 0.92), (0.97, 0.91, 0.52), (0.88, 0.90, 0.95))
_CRUMB_COLOUR = (0.55, 0.38, 0.20)
_STAIN_TINT = (0.55, 0.42, 0.30)  # coffee-coloured: darkens blue most, red least
_PAPER_RELIEF_M = 0.0005
_NAPKIN_RELIEF_M = 0.001


@dataclass(eq=False)
class TableTexture:
    """The table as seen without objects.

    Attributes:
        style: one of ``TABLE_STYLES``.
        albedo: (H, W, 3) float32 in [0, 1], distractors included.
        relief: (H, W) float32 metres above the table plane (paper and napkins are not flat zero).
    """

    style: str
    albedo: np.ndarray
    relief: np.ndarray


def render_table(
    style: str, rng: np.random.Generator, height: int, width: int, px_per_m: float, distractors: bool = True
) -> TableTexture:
    """Render the table texture of ``style`` and, optionally, clutter on it."""
    if style not in TABLE_STYLES:
        raise ValueError(f"Unknown table style {style!r}; choose one of {TABLE_STYLES}.")
    along, across = _table_coordinates(rng, height, width, px_per_m)
    tint = np.float32(rng.uniform(0.9, 1.1))
    if style in _WOOD_COLOURS:
        albedo = _wood(rng, along, across, px_per_m, _WOOD_COLOURS[style])
    elif style == "checkered":
        albedo = _checker(rng, along, across)
    elif style == "striped":
        albedo = _stripes(rng, across)
    else:
        albedo = _plain(rng, height, width, px_per_m, _PLAIN_COLOURS[style])
    albedo *= tint
    # Fine grain common to every surface (fibres, laminate, sensor-independent).
    albedo *= (1.0 + 0.025 * rng.standard_normal((height, width), dtype=np.float32))[..., None]
    relief = np.zeros((height, width), dtype=np.float32)
    if distractors:
        _add_distractors(albedo, relief, rng, px_per_m)
    np.clip(albedo, 0.0, 1.0, out=albedo)
    return TableTexture(style, albedo, relief)


def _table_coordinates(
    rng: np.random.Generator, height: int, width: int, px_per_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Metric coordinates along and across a random texture direction, (H, W) float32 each."""
    theta = rng.uniform(0.0, np.pi)
    x = (np.arange(width, dtype=np.float32) - width / 2) / np.float32(px_per_m)
    y = (np.arange(height, dtype=np.float32) - height / 2) / np.float32(px_per_m)
    cos_t, sin_t = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    along = x[None, :] * cos_t + y[:, None] * sin_t
    across = y[:, None] * cos_t - x[None, :] * sin_t
    return along, across


def smooth_noise(rng: np.random.Generator, height: int, width: int, feature_px: float) -> np.ndarray:
    """(H, W) float32 zero-mean noise with blobs about ``feature_px`` pixels wide."""
    cells_y = max(2, int(round(height / max(feature_px, 1.0))) + 1)
    cells_x = max(2, int(round(width / max(feature_px, 1.0))) + 1)
    coarse = rng.standard_normal((cells_y, cells_x), dtype=np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _wood(
    rng: np.random.Generator, along: np.ndarray, across: np.ndarray, px_per_m: float, colour: tuple[float, float, float]
) -> np.ndarray:
    height, width = along.shape
    period = rng.uniform(0.005, 0.012)
    warp = 0.006 * smooth_noise(rng, height, width, 0.08 * px_per_m)
    rings = np.sin((2.0 * np.pi / period) * (across + warp + 0.04 * np.sin(along * 9.0)))
    brightness = 0.86 + 0.1 * rings
    plank_width = rng.uniform(0.1, 0.2)
    plank = (across + rng.uniform(0.0, plank_width)) / plank_width
    plank_tone = rng.uniform(0.85, 1.12, size=64).astype(np.float32)
    brightness *= plank_tone[np.floor(plank).astype(np.int64) % 64]
    seam = np.abs(plank - np.round(plank)) * plank_width * px_per_m < 0.6
    brightness[seam] *= 0.55
    return brightness[..., None] * np.asarray(colour, dtype=np.float32)


def _checker(rng: np.random.Generator, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    cell = rng.uniform(0.03, 0.06)
    parity = (np.floor(along / cell).astype(np.int64) + np.floor(across / cell).astype(np.int64)) % 2
    dark = np.asarray(_CLOTH_TONES[rng.integers(len(_CLOTH_TONES))], dtype=np.float32)
    light = np.asarray(_CLOTH_LIGHT, dtype=np.float32)
    return np.where(parity[..., None] == 1, dark, light).astype(np.float32)


def _stripes(rng: np.random.Generator, across: np.ndarray) -> np.ndarray:
    period = rng.uniform(0.03, 0.08)
    duty = rng.uniform(0.3, 0.6)
    stripe = np.mod(across / period, 1.0) < duty
    dark = np.asarray(_CLOTH_TONES[rng.integers(len(_CLOTH_TONES))], dtype=np.float32)
    light = np.asarray(_CLOTH_LIGHT, dtype=np.float32)
    return np.where(stripe[..., None], dark, light).astype(np.float32)


def _plain(
    rng: np.random.Generator, height: int, width: int, px_per_m: float, colour: tuple[float, float, float]
) -> np.ndarray:
    blotches = 1.0 + 0.05 * smooth_noise(rng, height, width, 0.1 * px_per_m)
    return blotches[..., None] * np.asarray(colour, dtype=np.float32)


def _add_distractors(albedo: np.ndarray, relief: np.ndarray, rng: np.random.Generator, px_per_m: float) -> None:
    """Stains, pen lines, paper scraps, an occasional napkin and crumbs, in place."""
    height, width = relief.shape

    def random_point() -> tuple[int, int]:
        return int(rng.integers(0, width)), int(rng.integers(0, height))

    def metres(value: float) -> int:
        return max(1, int(round(value * px_per_m)))

    num_stains = int(rng.integers(0, 4))
    if num_stains:
        stains = np.zeros((height, width), dtype=np.float32)
        for _ in range(num_stains):
            axes = (metres(rng.uniform(0.01, 0.05)), metres(rng.uniform(0.01, 0.04)))
            cv2.ellipse(stains, random_point(), axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.3, 0.7)), -1)
        stains = cv2.GaussianBlur(stains, (0, 0), max(0.5, 0.002 * px_per_m))[..., None]
        albedo *= 1.0 - stains * (1.0 - np.asarray(_STAIN_TINT, dtype=np.float32))

    for _ in range(int(rng.integers(0, 3))):
        shade = float(rng.choice([0.25, 0.9]))
        cv2.line(albedo, random_point(), random_point(), (shade, shade, shade * 1.05), metres(0.002))

    for _ in range(int(rng.integers(0, 4))):
        polygon = _random_polygon(rng, random_point(), rng.uniform(0.012, 0.035) * px_per_m)
        colour = _PAPER_COLOURS[rng.integers(len(_PAPER_COLOURS))]
        cv2.fillConvexPoly(albedo, polygon, colour)
        cv2.fillConvexPoly(relief, polygon, _PAPER_RELIEF_M)

    if rng.random() < 0.15:
        # A flat napkin in a washed-out object colour: a hard negative for "box".
        names = tuple(COLOURS)
        colour = np.asarray(COLOURS[names[rng.integers(len(names))]], dtype=np.float32) / 255.0
        colour = 0.5 * colour + 0.5 * np.float32(0.7)
        half = rng.uniform(0.04, 0.06) * px_per_m
        box = cv2.boxPoints((random_point(), (2 * half, 2 * half), float(rng.uniform(0, 90))))
        polygon = np.round(box).astype(np.int32)
        cv2.fillConvexPoly(albedo, polygon, tuple(float(c) for c in colour))
        cv2.fillConvexPoly(relief, polygon, _NAPKIN_RELIEF_M)

    for _ in range(int(rng.integers(0, 20))):
        cv2.circle(albedo, random_point(), metres(rng.uniform(0.001, 0.003)), _CRUMB_COLOUR, -1)


def _random_polygon(rng: np.random.Generator, centre: tuple[int, int], radius_px: float) -> np.ndarray:
    """A convex polygon (k, 2) int32 of 3-6 vertices around ``centre``."""
    angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, size=int(rng.integers(3, 7))))
    radii = radius_px * rng.uniform(0.6, 1.0, size=angles.size)
    points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
    return cv2.convexHull(np.round(points).astype(np.int32)).reshape(-1, 2)
