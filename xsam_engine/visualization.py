"""Overlay rendering: coloured masks, contours, labels and the command on the image."""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Sequence

import cv2
import numpy as np

from .results import Instance


def colour_for(key: int | str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for an instance id or label (same key, same colour, every run)."""
    digest = hashlib.md5(str(key).encode()).digest()
    hue = digest[0] / 255.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def _put_text(canvas: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    thickness = max(1, int(round(scale * 2)))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = origin
    y = max(y, height + 2)
    x = min(max(x, 0), max(0, canvas.shape[1] - width - 2))
    cv2.rectangle(canvas, (x, y - height - 2), (x + width + 2, y + baseline), (0, 0, 0), thickness=-1)
    cv2.putText(canvas, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def draw_overlay(
    image: np.ndarray, instances: Sequence[Instance], caption: str = "", alpha: float = 0.5
) -> np.ndarray:
    """Return an RGB copy of `image` (H, W, 3) uint8 with every instance drawn on it."""
    canvas = image.copy()
    scale = max(0.35, min(canvas.shape[:2]) / 640.0 * 0.6)
    for instance in instances:
        key = instance.instance_id if instance.instance_id else instance.label
        colour = np.array(colour_for(key), dtype=np.float32)
        mask = instance.mask
        if mask.shape != canvas.shape[:2] or not mask.any():
            continue
        canvas[mask] = (canvas[mask] * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in colour), max(1, int(scale * 2)))
    for instance in instances:
        if not instance.mask.any():
            continue
        key = instance.instance_id if instance.instance_id else instance.label
        text = f"{instance.label} {instance.score:.2f}"
        if instance.instance_id:
            text = f"#{instance.instance_id} {text}"
        _put_text(canvas, text, (instance.box_xyxy[0], instance.box_xyxy[1] - 2), colour_for(key), scale)
    if caption:
        _put_text(canvas, caption[:120], (4, canvas.shape[0] - 6), (255, 255, 255), scale)
    return canvas
