"""Rasterise visual prompts (points, boxes, scribbles, masks) into binary prompt masks.

X-SAM turns every region prompt into a mask at the original image resolution before sampling
region features (spec section 6). The rules are those of the official
`xsam/xsam/dataset/utils/vprompt.py` (branch AAAI26_Archive), used by its interactive / VGD
evaluation data (`IntSegDataset._process_visual_prompts`) and by training:

- a click is the pixel it falls on, thickened to a disc of radius ``POINT_RADIUS`` (10 px):
  every pixel at Euclidean distance <= 10 from it (`draw_circle`, `enhance_with_circles`);
- a scribble is its stroke pixels (the polyline rasterised segment by segment with Bresenham's
  algorithm, the pixels of `skimage.draw.line`), each thickened to a disc of radius
  ``SCRIBBLE_RADIUS`` (5 px); a one-vertex scribble is one radius-5 disc;
- a box is its filled rectangle; a mask is used as is.

Radii are in pixels of the original image, whatever its size (they are not scaled).
"""

from __future__ import annotations

import cv2
import numpy as np

from .requests import PromptKind, VisualPrompt

# vprompt.py `generate_point_vprompt(point_radius=10)`; IntSegDataset / VGDSegDataset default 10.
POINT_RADIUS = 10
# vprompt.py `generate_scribble_vprompt(scribble_radius=5)`; IntSegDataset / VGDSegDataset default 5.
SCRIBBLE_RADIUS = 5


def rasterise_prompt(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one visual prompt on an image of ``height`` x ``width`` pixels.

    - POINT: discs of radius ``POINT_RADIUS`` around positive points, minus discs around
      negative ones (negative points are this package's addition; X-SAM has none).
    - BOX: the filled rectangle, pixel columns ``floor(x0) .. ceil(x1) - 1`` (clipped to the image).
    - SCRIBBLE: the stroke pixels of the polyline, each thickened by a ``SCRIBBLE_RADIUS`` disc.
    - MASK: the mask itself; it must already have the image size.

    Coordinates are pixels of the original image; pixel (row v, column u) is centred at (u, v),
    so a point or vertex (x, y) lies on pixel (round(y), round(x)) (halves round up). Parts
    outside the image are clipped, so the result may be empty.

    The prompt itself was checked when it was built (`VisualPrompt`: fields, finite coordinates
    within +-1e6 px, at least one positive point, x0 < x1); what needs the image is checked here.

    Raises:
        ValueError: a non-positive image size or a mask of another size; the message says the fix.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"Image size must be positive, got {height}x{width}.")
    kind = PromptKind(prompt.kind)
    if kind is PromptKind.POINT:
        return _rasterise_points(prompt, height, width)
    if kind is PromptKind.BOX:
        return _rasterise_box(prompt, height, width)
    if kind is PromptKind.SCRIBBLE:
        return _rasterise_scribble(prompt, height, width)
    return _rasterise_mask(prompt, height, width)


def disc_kernel(radius: int) -> np.ndarray:
    """(2r + 1, 2r + 1) bool: offsets (dy, dx) with ``sqrt(dy² + dx²) <= r`` (vprompt.py `draw_circle`)."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def thicken(rows: np.ndarray, cols: np.ndarray, radius: int, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the union of radius-``radius`` discs centred on pixels (rows[i], cols[i]).

    The official `enhance_with_circles(mask, radius)`, computed as one dilation of the centres'
    bounding box (so a click costs a disc, not an image). Centres may lie outside the image (up
    to ``radius`` px away their discs still reach it).
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    near = (rows >= -radius) & (rows < height + radius) & (cols >= -radius) & (cols < width + radius)
    rows, cols = rows[near], cols[near]
    mask = np.zeros((height, width), dtype=bool)
    if rows.size == 0:
        return mask
    # Canvas = the centres' bounding box grown by the radius: every disc fits inside it.
    top, left = int(rows.min()) - radius, int(cols.min()) - radius
    bottom, right = int(rows.max()) + radius + 1, int(cols.max()) + radius + 1
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    canvas[rows - top, cols - left] = 1
    dilated = cv2.dilate(canvas, disc_kernel(radius).astype(np.uint8)).astype(bool)
    row0, col0, row1, col1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if row0 < row1 and col0 < col1:
        mask[row0:row1, col0:col1] = dilated[row0 - top : row1 - top, col0 - left : col1 - left]
    return mask


def line_pixels(
    row0: int, col0: int, row1: int, col1: int, window: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the segment between two pixels, both included: the pixels of `skimage.draw.line`.

    Bresenham as scikit-image implements it: walk the major axis one pixel per step; with
    ``d_major = |Δmajor|`` and ``d_minor = |Δminor|`` the minor offset after ``i`` steps is
    ``floor((2 * d_minor * i + d_major) / (2 * d_major))`` (its error term ``d`` starts at
    ``2 d_minor - d_major`` and steps the minor axis while ``d >= 0``), i.e. ``d_minor * i / d_major``
    rounded half up. The major axis is the columns unless ``|Δrow| > |Δcol|``.

    Args:
        window: optional (row_start, row_stop, col_start, col_stop), stops exclusive: return only
            the pixels inside it (computed without walking the rest of a long segment).
    Returns:
        (rows, cols), int64, in order from (row0, col0) to (row1, col1); without a window each has
        max(|Δrow|, |Δcol|) + 1 entries.
    """
    steep = abs(row1 - row0) > abs(col1 - col0)
    major0, major1, minor0, minor1 = (row0, row1, col0, col1) if steep else (col0, col1, row0, row1)
    d_major, d_minor = abs(major1 - major0), abs(minor1 - minor0)
    step_major = 1 if major1 - major0 > 0 else -1
    step_minor = 1 if minor1 - minor0 > 0 else -1
    first, last = 0, d_major
    if window is not None:
        major_start, major_stop = window[:2] if steep else window[2:]
        # Steps i with major_start <= major0 + step_major * i < major_stop.
        bounds = sorted(((major_start - major0) * step_major, (major_stop - 1 - major0) * step_major))
        first, last = max(first, bounds[0]), min(last, bounds[1])
    steps = np.arange(first, last + 1, dtype=np.int64)
    major = major0 + step_major * steps
    minor = minor0 + step_minor * ((2 * d_minor * steps + d_major) // max(2 * d_major, 1))
    rows, cols = (major, minor) if steep else (minor, major)
    if window is not None:
        inside = (rows >= window[0]) & (rows < window[1]) & (cols >= window[2]) & (cols < window[3])
        rows, cols = rows[inside], cols[inside]
    return rows, cols


def _pixel_indices(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) float (x, y) -> (rows, cols) int64 of the pixels they fall on."""
    pixels = np.floor(points + 0.5).astype(np.int64)
    return pixels[:, 1], pixels[:, 0]


def _rasterise_points(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    rows, cols = _pixel_indices(np.asarray(prompt.points, dtype=np.float64))
    positive = prompt.point_labels.astype(bool)
    # Negative discs carve the positive ones out, whatever the order of the points.
    mask = thicken(rows[positive], cols[positive], POINT_RADIUS, height, width)
    if (~positive).any():
        mask &= ~thicken(rows[~positive], cols[~positive], POINT_RADIUS, height, width)
    return mask


def _rasterise_box(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = prompt.box
    mask = np.zeros((height, width), dtype=bool)
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), width)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), height)
    if c0 < c1 and r0 < r1:
        mask[r0:r1, c0:c1] = True
    return mask


def _rasterise_scribble(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    rows, cols = _pixel_indices(np.asarray(prompt.points, dtype=np.float64))
    # Only stroke pixels whose disc can reach the image matter (a stroke may leave the image).
    margin = SCRIBBLE_RADIUS
    window = (-margin, height + margin, -margin, width + margin)
    stroke = [line_pixels(int(rows[0]), int(cols[0]), int(rows[0]), int(cols[0]), window)]
    for index in range(len(rows) - 1):
        stroke.append(line_pixels(int(rows[index]), int(cols[index]), int(rows[index + 1]), int(cols[index + 1]), window))
    stroke_rows = np.concatenate([segment[0] for segment in stroke])
    stroke_cols = np.concatenate([segment[1] for segment in stroke])
    return thicken(stroke_rows, stroke_cols, SCRIBBLE_RADIUS, height, width)


def _rasterise_mask(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    mask = prompt.mask
    if mask.shape != (height, width):
        raise ValueError(
            f"Mask prompt has shape {mask.shape} but the image is {height}x{width}; "
            "resize the mask to the image size (nearest neighbour) before sending it."
        )
    return mask.astype(bool)
