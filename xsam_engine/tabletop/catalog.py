"""What a tabletop scene can contain: object classes, the stuff class and named colours."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("cup", "mug", "bowl", "bottle", "box", "ball", "can", "plate")
"""Thing classes; the index is the class id used in ``Scene.semantic_map``."""

STUFF_CLASSES: tuple[str, ...] = ("table",)
"""Amorphous classes; ``table`` covers every pixel that is not an object."""

ALL_CLASSES: tuple[str, ...] = CLASSES + STUFF_CLASSES
TABLE_CLASS_ID: int = len(CLASSES)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 32, 36),
    "green": (42, 158, 64),
    "blue": (36, 84, 205),
    "yellow": (236, 204, 36),
    "orange": (242, 122, 22),
    "purple": (128, 52, 162),
    "white": (234, 234, 228),
    "black": (34, 34, 38),
}
"""Object colours by the name a user says, as sRGB 0..255."""
