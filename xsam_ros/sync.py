"""Pairing images with depth and camera_info by stamp, without message_filters (not on PyPI).

Depth and camera_info messages go into short ``StampBuffer``s as they arrive (callbacks only
append). When the worker has finished the image stage of a frame it asks the buffers for the
message whose stamp equals the image's, or is the closest within ``slop``; nothing ever waits,
so a missing depth frame only means "no 3D for this result".
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class StampBuffer(Generic[T]):
    """The last ``capacity`` (stamp_ns, item) pairs; thread-safe."""

    def __init__(self, capacity: int = 10) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[int, T]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            self._items.append((int(stamp_ns), item))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def latest(self) -> tuple[int, T] | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def find(self, stamp_ns: int, slop_ns: int) -> tuple[int, T] | None:
        """The item with exactly ``stamp_ns``, else the closest with |difference| <= ``slop_ns``, else None.

        Ties go to the most recently added item.
        """
        with self._lock:
            items = list(self._items)
        best: tuple[int, T] | None = None
        best_difference = None
        for stamp, item in reversed(items):
            difference = abs(stamp - stamp_ns)
            if difference == 0:
                return stamp, item
            if difference <= slop_ns and (best_difference is None or difference < best_difference):
                best, best_difference = (stamp, item), difference
        return best

    def stamps(self) -> list[int]:
        with self._lock:
            return [stamp for stamp, _ in self._items]
