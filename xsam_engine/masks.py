"""Binary-mask helpers shared by the engine, the evaluation, the export checks, the node and the tests."""

from __future__ import annotations

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks of the same shape (anything non-zero is inside).

    Two empty masks have IoU 1.0: nothing to find and nothing found agree perfectly. This is the
    official X-SAM evaluation's convention (``xsam/evaluation/utils/iou.py`` ``IouStat.update``,
    ``np.where(union > 0, intersection / union, 1.0)``, used per sample by the referring and
    reasoning evaluators ``refseg_evaluator.py`` / ``reaseg_evaluator.py`` for gIoU). An empty
    and a non-empty mask have IoU 0.0.

    Args:
        a, b: (H, W) (or any equal shape) bool / integer arrays.

    Raises:
        ValueError: when the shapes differ.
    """
    a, b = np.asarray(a).astype(bool, copy=False), np.asarray(b).astype(bool, copy=False)
    if a.shape != b.shape:
        raise ValueError(f"Mask shapes differ: {a.shape} and {b.shape}; compare masks of the same image size.")
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b) / union)
