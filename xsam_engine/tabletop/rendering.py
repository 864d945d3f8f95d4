"""Lighting, shading and compositing of objects onto the table, back to front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .backgrounds import TableTexture
from .shapes import ObjectPatch

_MAX_SLOPE = 6.0  # clamp for the steep walls at footprint borders
_SHININESS = 24.0


@dataclass(frozen=True)
class Lighting:
    """One directional light plus ambient light, in the image frame (x right, y down, z to the camera).

    Attributes:
        azimuth: radians; the light comes from direction (cos, sin) in the image plane.
        elevation: radians above the table.
        intensity: strength of the directional light.
        ambient: strength of the ambient light.
        tint: RGB colour of the light.
        falloff_centre: (x, y) in [0, 1] image fractions, where the light is brightest.
        falloff: brightness lost at one image diagonal from the centre.
    """

    azimuth: float
    elevation: float
    intensity: float
    ambient: float
    tint: tuple[float, float, float]
    falloff_centre: tuple[float, float]
    falloff: float

    @property
    def direction(self) -> np.ndarray:
        """(3,) float32 unit vector pointing towards the light."""
        cos_e = np.cos(self.elevation)
        return np.array(
            [cos_e * np.cos(self.azimuth), cos_e * np.sin(self.azimuth), np.sin(self.elevation)], dtype=np.float32
        )


def sample_lighting(rng: np.random.Generator) -> Lighting:
    """A random light: direction, strength, colour temperature and vignetting vary per scene."""
    warmth = rng.uniform(-0.06, 0.06)
    return Lighting(
        azimuth=float(rng.uniform(-np.pi, np.pi)),
        elevation=float(np.radians(rng.uniform(35.0, 75.0))),
        intensity=float(rng.uniform(0.55, 0.95)),
        ambient=float(rng.uniform(0.3, 0.5)),
        tint=(1.0 + warmth, 1.0, 1.0 - warmth),
        falloff_centre=(float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0))),
        falloff=float(rng.uniform(0.0, 0.3)),
    )


@dataclass(eq=False)
class CompositeLayers:
    """The composited scene before camera effects.

    Attributes:
        radiance: (H, W, 3) float32 linear-ish colour, roughly in [0, 1].
        instance_map: (H, W) int32, 0 = table, k = the k-th patch (visible pixels).
        object_height: (H, W) float32 metres of the visible object surface above the table.
        base_heights: per patch, metres above the table of what it rests on (0 = the table).
    """

    radiance: np.ndarray
    instance_map: np.ndarray
    object_height: np.ndarray
    base_heights: list[float]


def composite(
    table: TableTexture, patches: Sequence[ObjectPatch], lighting: Lighting, shadows: bool = True
) -> CompositeLayers:
    """Light the table, then drop each object's shadow and paint the object, in order.

    Later patches occlude earlier ones. An object overlapping earlier ones rests on the highest
    of them (its base is their maximum height under its footprint), so depth stays consistent
    with the occlusion order.
    """
    height, width = table.relief.shape
    tint = np.asarray(lighting.tint, dtype=np.float32)
    radiance = table.albedo * (_table_light(lighting, height, width)[..., None] * tint)
    instance_map = np.zeros((height, width), dtype=np.int32)
    object_height = np.zeros((height, width), dtype=np.float32)
    base_heights = []
    for index, patch in enumerate(patches, start=1):
        window = _clip_window(patch.x0, patch.y0, patch.footprint.shape, height, width)
        if window is None:
            base_heights.append(0.0)
            continue
        image_slice, patch_slice = window
        footprint = patch.footprint[patch_slice]
        under = object_height[image_slice][footprint]
        base = float(under.max()) if under.size else 0.0
        base_heights.append(base)
        if shadows:
            _drop_shadow(radiance, patch, base, lighting)
        colour = _shade(patch, lighting)[patch_slice]
        radiance[image_slice][footprint] = colour[footprint]
        instance_map[image_slice][footprint] = index
        object_height[image_slice][footprint] = base + patch.height[patch_slice][footprint]
    return CompositeLayers(radiance, instance_map, object_height, base_heights)


def stamp_footprints(patches: Sequence[ObjectPatch], height: int, width: int) -> np.ndarray:
    """(H, W) int32 instance map of the patches alone (no shading): the visibility ``composite`` gives."""
    instance_map = np.zeros((height, width), dtype=np.int32)
    for index, patch in enumerate(patches, start=1):
        window = _clip_window(patch.x0, patch.y0, patch.footprint.shape, height, width)
        if window is not None:
            image_slice, patch_slice = window
            instance_map[image_slice][patch.footprint[patch_slice]] = index
    return instance_map


def finish_image(
    radiance: np.ndarray, rng: np.random.Generator, blur_sigma: float, noise_sigma: float
) -> np.ndarray:
    """Camera effects: optical blur and sensor noise; returns (H, W, 3) uint8."""
    image = cv2.GaussianBlur(radiance, (0, 0), blur_sigma) if blur_sigma > 0 else radiance
    if noise_sigma > 0:
        # Luminance noise shared by the channels: a third of the random draws of per-channel noise.
        image = image + noise_sigma * rng.standard_normal(image.shape[:2] + (1,), dtype=np.float32)
    return np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def _table_light(lighting: Lighting, height: int, width: int) -> np.ndarray:
    """(H, W) float32 light on the flat table, with a soft falloff away from the brightest point."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None] - np.float32(lighting.falloff_centre[1])
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :] - np.float32(lighting.falloff_centre[0])
    falloff = 1.0 - np.float32(lighting.falloff / 2.0) * (xs**2 + ys**2)
    direct = np.float32(lighting.intensity * np.sin(lighting.elevation))
    return np.float32(lighting.ambient) + direct * falloff


def _shade(patch: ObjectPatch, lighting: Lighting) -> np.ndarray:
    """(h, w, 3) float32 Lambert + Blinn-Phong colour of a patch from its height profile."""
    grad_y, grad_x = np.gradient(patch.height)
    scale = np.float32(patch.px_per_m)
    slope_x = np.clip(grad_x * scale, -_MAX_SLOPE, _MAX_SLOPE)
    slope_y = np.clip(grad_y * scale, -_MAX_SLOPE, _MAX_SLOPE)
    norm = np.sqrt(slope_x**2 + slope_y**2 + 1.0)
    light = lighting.direction
    diffuse = np.maximum((-slope_x * light[0] - slope_y * light[1] + light[2]) / norm, 0.0)
    half = light + np.array([0.0, 0.0, 1.0], dtype=np.float32)
    half /= np.linalg.norm(half)
    specular = np.maximum((-slope_x * half[0] - slope_y * half[1] + half[2]) / norm, 0.0) ** _SHININESS
    tint = np.asarray(lighting.tint, dtype=np.float32)
    shading = (np.float32(lighting.ambient) + np.float32(lighting.intensity) * diffuse)[..., None]
    highlight = (np.float32(0.6 * lighting.intensity) * patch.gloss * specular)[..., None]
    return (patch.albedo * shading + highlight) * tint


def _drop_shadow(radiance: np.ndarray, patch: ObjectPatch, base: float, lighting: Lighting) -> None:
    """Darken what lies under the soft shadow of ``patch``, in place.

    The shadow is the footprint swept from the object's base to the projection of its top,
    i.e. the shadow of the footprint extruded to the object's height.
    """
    top = base + float(patch.height.max())
    h, w = patch.footprint.shape
    length_px = min(top * patch.px_per_m / np.tan(lighting.elevation), 2.0 * max(h, w))
    dx = int(round(-np.cos(lighting.azimuth) * length_px))
    dy = int(round(-np.sin(lighting.azimuth) * length_px))
    sigma = max(0.7, 0.004 * patch.px_per_m * (1.0 + 10.0 * top))
    pad = int(np.ceil(3 * sigma))
    origin_x, origin_y = pad + max(0, -dx), pad + max(0, -dy)
    canvas = np.zeros((h + abs(dy) + 2 * pad, w + abs(dx) + 2 * pad), dtype=np.uint8)
    steps = max(1, int(np.ceil(length_px / max(1.0, 0.25 * min(h, w)))))
    for t in np.linspace(0.0, 1.0, steps + 1):
        x, y = origin_x + int(round(t * dx)), origin_y + int(round(t * dy))
        canvas[y : y + h, x : x + w] |= patch.footprint
    shadow = _soft(canvas.astype(np.float32), sigma)
    strength = 0.55 * lighting.intensity / (lighting.intensity + lighting.ambient)
    height, width = radiance.shape[:2]
    window = _clip_window(patch.x0 - origin_x, patch.y0 - origin_y, shadow.shape, height, width)
    if window is not None:
        image_slice, shadow_slice = window
        radiance[image_slice] *= (1.0 - strength * shadow[shadow_slice])[..., None]


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide blurs run on a downsampled copy (a penumbra has no fine detail)."""
    factor = max(1, int(sigma // 2))
    if factor == 1:
        return cv2.GaussianBlur(mask, (0, 0), sigma)
    height, width = mask.shape
    small = cv2.resize(mask, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _clip_window(
    x0: int, y0: int, shape: tuple[int, ...], height: int, width: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices of the image and of a window at (x0, y0) that overlap; None when they do not."""
    h, w = shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    image_slice = (slice(iy0, iy1), slice(ix0, ix1))
    patch_slice = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    return image_slice, patch_slice
