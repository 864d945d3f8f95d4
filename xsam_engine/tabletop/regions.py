"""Visual prompts on scene objects, drawn the way X-SAM's evaluation data draws them (spec §6).

- point: a random pixel of the object (away from its border by half a click radius when the
  object allows), rasterised as a disc;
- box: the object's box with width and height scaled by U(0.9, 1.1) about its centre;
- scribble: a sine-perturbed stroke along a diagonal of the object's box, kept where it lies on
  the object;
- mask: the object mask blurred with a Gaussian (sigma 2 px at 640 px) and re-thresholded at 0.5.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..requests import PromptKind, VisualPrompt
from ..visual_prompts import POINT_RADIUS
from .scenes import Scene

_SCRIBBLE_POINTS = 24
_REFERENCE_SIZE = 640


def sample_visual_prompt(scene: Scene, instance_id: int, kind: PromptKind, rng: np.random.Generator) -> VisualPrompt:
    """One prompt of ``kind`` on object ``instance_id``, in the scene's pixel coordinates."""
    mask = scene.mask(instance_id)
    if not mask.any():
        raise ValueError(f"Object {instance_id} has no visible pixel to prompt.")
    kind = PromptKind(kind)
    if kind is PromptKind.POINT:
        return _point(mask, rng)
    if kind is PromptKind.BOX:
        return _box(scene, instance_id, rng)
    if kind is PromptKind.SCRIBBLE:
        return _scribble(scene, instance_id, mask, rng)
    return _mask(mask)


def _interior(mask: np.ndarray, depth: int) -> np.ndarray:
    """The mask eroded by ``depth`` pixels, or the mask itself if erosion would empty it."""
    if depth <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * depth + 1, 2 * depth + 1))
    eroded = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    return eroded if eroded.any() else mask


def _point(mask: np.ndarray, rng: np.random.Generator) -> VisualPrompt:
    rows, cols = np.nonzero(_interior(mask, POINT_RADIUS // 2))
    pick = int(rng.integers(rows.size))
    return VisualPrompt.point(float(cols[pick]), float(rows[pick]))


def _box(scene: Scene, instance_id: int, rng: np.random.Generator) -> VisualPrompt:
    x0, y0, x1, y1 = scene.object(instance_id).box_xyxy
    centre_x, centre_y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half_w = (x1 - x0) / 2.0 * rng.uniform(0.9, 1.1)
    half_h = (y1 - y0) / 2.0 * rng.uniform(0.9, 1.1)
    return VisualPrompt.from_box(
        max(centre_x - half_w, 0.0),
        max(centre_y - half_h, 0.0),
        min(centre_x + half_w, float(scene.width)),
        min(centre_y + half_h, float(scene.height)),
    )


def _scribble(scene: Scene, instance_id: int, mask: np.ndarray, rng: np.random.Generator) -> VisualPrompt:
    x0, y0, x1, y1 = scene.object(instance_id).box_xyxy
    # Jitter the box, then walk one of its diagonals with a sine wobble across it.
    jitter = 0.1 * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0]) * rng.uniform(-1.0, 1.0, size=4)
    bx0, by0, bx1, by1 = np.array([x0, y0, x1 - 1, y1 - 1], dtype=np.float64) + jitter
    if rng.random() < 0.5:
        by0, by1 = by1, by0
    t = np.linspace(0.0, 1.0, _SCRIBBLE_POINTS)
    direction = np.array([bx1 - bx0, by1 - by0])
    normal = np.array([-direction[1], direction[0]]) / max(np.linalg.norm(direction), 1e-6)
    wobble = 0.12 * np.linalg.norm(direction) * np.sin(2.0 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, np.pi))
    points = np.array([bx0, by0]) + t[:, None] * direction + wobble[:, None] * normal
    inside = _inside(_interior(mask, 1), points)
    run = _longest_run(inside)
    if run is None or run[1] - run[0] < 2:
        # The stroke missed the object (thin or hollow shapes): a short stroke through a point.
        centre = _point(mask, rng).points[0]
        return VisualPrompt.scribble(
            np.array([centre - [POINT_RADIUS, 0.0], centre, centre + [POINT_RADIUS, 0.0]]).clip(0)
        )
    return VisualPrompt.scribble(points[run[0] : run[1]])


def _inside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, mask.shape[0] - 1)
    within = (points[:, 0] >= 0) & (points[:, 0] <= mask.shape[1] - 1) & (points[:, 1] >= 0) & (points[:, 1] <= mask.shape[0] - 1)
    return within & mask[rows, cols]


def _longest_run(flags: np.ndarray) -> tuple[int, int] | None:
    """[start, stop) of the longest run of True, or None."""
    best: tuple[int, int] | None = None
    start = None
    for index, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if best is None or index - start > best[1] - best[0]:
                best = (start, index)
            start = None
    return best


def _mask(mask: np.ndarray) -> VisualPrompt:
    sigma = max(1.0, 2.0 * min(mask.shape) / _REFERENCE_SIZE)
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    smooth = blurred >= 0.5
    return VisualPrompt.from_mask(smooth if smooth.any() else mask)
