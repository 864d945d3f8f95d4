"""Rasterise visual prompts (points, boxes, scribbles, masks) into binary prompt masks.

X-SAM turns every region prompt into a mask at the original image resolution before sampling
region features (spec section 6): a click is a disc of radius 10 px (at COCO resolution, about
640 px), a box is its filled rectangle, a scribble is a stroke of radius 5 px and a mask is used
as is. Radii here scale with the image: ``max(3, round(10 * min(H, W) / 640))``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .requests import PromptKind, VisualPrompt

_REFERENCE_SIZE = 640
_REFERENCE_POINT_RADIUS = 10
_SUBPIXEL_BITS = 4  # cv2 fixed-point precision for scribble vertices


def default_point_radius(height: int, width: int) -> int:
    """Disc radius in pixels for clicks on an image of this size (10 px at 640 px)."""
    return max(3, int(round(_REFERENCE_POINT_RADIUS * min(height, width) / _REFERENCE_SIZE)))


def scribble_radius(point_radius: int) -> int:
    """Stroke radius for scribbles: half the click radius (X-SAM: 5 px next to 10 px clicks)."""
    return max(1, int(round(point_radius / 2)))


def rasterise_prompt(prompt: VisualPrompt, height: int, width: int, point_radius: int | None = None) -> np.ndarray:
    """(H, W) bool mask of one visual prompt on an image of ``height`` x ``width`` pixels.

    - POINT: discs of ``point_radius`` around positive points, minus discs around negative ones.
    - BOX: the filled rectangle, pixel columns ``floor(x0) .. ceil(x1) - 1`` (clipped to the image).
    - SCRIBBLE: the polyline drawn with thickness ``2 * scribble_radius + 1``.
    - MASK: the mask itself; it must already have the image size.

    Coordinates are pixels of the original image; pixel (row v, column u) is centred at (u, v).
    Parts outside the image are clipped, so the result may be empty.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"Image size must be positive, got {height}x{width}.")
    radius = default_point_radius(height, width) if point_radius is None else int(point_radius)
    if radius < 0:
        raise ValueError(f"point_radius must be >= 0, got {point_radius}.")
    kind = PromptKind(prompt.kind)
    if kind is PromptKind.POINT:
        return _rasterise_points(prompt, height, width, radius)
    if kind is PromptKind.BOX:
        return _rasterise_box(prompt, height, width)
    if kind is PromptKind.SCRIBBLE:
        return _rasterise_scribble(prompt, height, width, scribble_radius(radius))
    return _rasterise_mask(prompt, height, width)


def _rasterise_points(prompt: VisualPrompt, height: int, width: int, radius: int) -> np.ndarray:
    if prompt.points is None or len(prompt.points) == 0:
        raise ValueError("A POINT prompt needs points; build it with VisualPrompt.point(x, y).")
    points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
    labels = np.ones(len(points), dtype=np.int64) if prompt.point_labels is None else np.asarray(prompt.point_labels)
    if labels.shape != (len(points),):
        raise ValueError(f"point_labels must have one label per point ({len(points)}), got shape {labels.shape}.")
    mask = np.zeros((height, width), dtype=bool)
    # Positive discs first, then negative ones carve them out, whatever the order of the points.
    for positive in (True, False):
        for (x, y), label in zip(points, labels):
            if bool(label) == positive:
                _paint_disc(mask, x, y, radius, positive)
    return mask


def _paint_disc(mask: np.ndarray, x: float, y: float, radius: int, value: bool) -> None:
    height, width = mask.shape
    x0, x1 = max(int(np.floor(x - radius)), 0), min(int(np.ceil(x + radius)) + 1, width)
    y0, y1 = max(int(np.floor(y - radius)), 0), min(int(np.ceil(y + radius)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    cols = np.arange(x0, x1, dtype=np.float64) - x
    rows = np.arange(y0, y1, dtype=np.float64) - y
    disc = rows[:, None] ** 2 + cols[None, :] ** 2 <= radius**2
    mask[y0:y1, x0:x1][disc] = value


def _rasterise_box(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    if prompt.box is None:
        raise ValueError("A BOX prompt needs box=(x0, y0, x1, y1); build it with VisualPrompt.from_box(...).")
    x0, y0, x1, y1 = (float(v) for v in prompt.box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"Box must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {prompt.box}.")
    mask = np.zeros((height, width), dtype=bool)
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), width)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), height)
    if c0 < c1 and r0 < r1:
        mask[r0:r1, c0:c1] = True
    return mask


def _rasterise_scribble(prompt: VisualPrompt, height: int, width: int, radius: int) -> np.ndarray:
    if prompt.points is None or len(prompt.points) == 0:
        raise ValueError("A SCRIBBLE prompt needs a polyline; build it with VisualPrompt.scribble(points).")
    points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
    canvas = np.zeros((height, width), dtype=np.uint8)
    fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2)
    if len(points) == 1:
        cv2.circle(canvas, tuple(int(v) for v in fixed[0, 0]), radius, 1, -1, cv2.LINE_8, _SUBPIXEL_BITS)
    else:
        cv2.polylines(canvas, [fixed], False, 1, 2 * radius + 1, cv2.LINE_8, _SUBPIXEL_BITS)
    return canvas.astype(bool)


def _rasterise_mask(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    if prompt.mask is None:
        raise ValueError("A MASK prompt needs a mask; build it with VisualPrompt.from_mask(mask).")
    mask = np.asarray(prompt.mask)
    if mask.shape != (height, width):
        raise ValueError(
            f"Mask prompt has shape {mask.shape} but the image is {height}x{width}; "
            "resize the mask to the image size (nearest neighbour) before sending it."
        )
    return mask.astype(bool)
