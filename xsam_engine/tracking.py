"""Stable instance ids across frames: greedy mask-IoU matching per label."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .masks import mask_iou
from .results import Instance

_MATCH_GRID = 128  # masks are compared on a coarse grid: ids need overlap, not pixels


def _coarse(mask: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    rows = np.linspace(0, height - 1, min(height, _MATCH_GRID)).astype(int)
    cols = np.linspace(0, width - 1, min(width, _MATCH_GRID)).astype(int)
    return mask[np.ix_(rows, cols)]


@dataclass(eq=False)
class _Track:
    track_id: int
    class_index: int
    mask: np.ndarray  # coarse
    missed: int = 0


class InstanceTracker:
    """Assigns ids >= 1 that persist while an object keeps overlapping its previous mask.

    Each new frame's instances are matched to live tracks of the same class index, best IoU
    first, when IoU >= `min_iou`; unmatched instances start new tracks (ids are never reused
    until `reset`), and tracks unseen for more than `max_missed` frames are dropped.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 15) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, instances: list[Instance]) -> list[Instance]:
        """Return the instances with `instance_id` set; call once per frame in order."""
        coarse = [_coarse(instance.mask) for instance in instances]
        pairs = []
        for i, (instance, mask) in enumerate(zip(instances, coarse)):
            for t, track in enumerate(self._tracks):
                if track.class_index != instance.class_index or track.mask.shape != mask.shape:
                    continue
                iou = mask_iou(mask, track.mask)
                if iou >= self.min_iou:
                    pairs.append((iou, i, t))
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for _, i, t in sorted(pairs, reverse=True):
            if i not in assigned and t not in used_tracks:
                assigned[i] = t
                used_tracks.add(t)
        for t, track in enumerate(self._tracks):
            if t not in used_tracks:
                track.missed += 1
        result = []
        for i, instance in enumerate(instances):
            if i in assigned:
                track = self._tracks[assigned[i]]
                track.mask, track.missed = coarse[i], 0
            else:
                track = _Track(self._next_id, instance.class_index, coarse[i])
                self._next_id += 1
                self._tracks.append(track)
            result.append(replace(instance, instance_id=track.track_id))
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        return result
