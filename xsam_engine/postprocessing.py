"""Decoder logits -> typed results, per task (spec section 8).

All functions take one image's predictions: class logits (Q, C + 1) with the background last and
mask logits (Q, h, w) at mask-feature resolution. Only the masks that can still be selected are
upsampled to the original resolution (128² -> S² bilinear, crop to the scaled size, bilinear to
(H, W), as the released post-processing does); everything else is decided on class scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .results import Instance


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes needed to map mask logits back to the caller's image."""

    input_size: int  # S, the padded square side of the SAM input
    scaled_size: tuple[int, int]  # (h', w') of the image inside the square
    original_size: tuple[int, int]  # (H, W)


def class_probabilities(class_logits: torch.Tensor) -> torch.Tensor:
    """Softmax over C + 1 classes, background column dropped -> (Q, C)."""
    return class_logits.float().softmax(dim=-1)[:, :-1]


def upsample_masks(mask_logits: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(K, h, w) logits -> (K, H, W) logits: bilinear to S², crop to (h', w'), bilinear to (H, W)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *geometry.original_size), dtype=torch.float32)
    logits = mask_logits.float()[None]
    logits = F.interpolate(logits, size=(geometry.input_size, geometry.input_size), mode="bilinear", align_corners=False)
    logits = logits[..., : geometry.scaled_size[0], : geometry.scaled_size[1]]
    logits = F.interpolate(logits, size=geometry.original_size, mode="bilinear", align_corners=False)
    return logits[0]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x0, y0, x1, y1) box of a bool mask, x1/y1 exclusive; zeros for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_instance(mask: np.ndarray, label_index: int, score: float, labels: tuple[str, ...]) -> Instance:
    """An `Instance` whose label and phrase are `labels[label_index]` and whose box is the mask's."""
    label = labels[label_index] if 0 <= label_index < len(labels) else str(label_index)
    return Instance(
        mask=mask, label=label, score=float(score), box_xyxy=mask_box(mask), phrase=label, class_index=label_index
    )


def referring(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    mask_threshold: float = 0.5,
) -> list[Instance]:
    """Best query for the single phrase; score = its probability (the threshold kwarg is ignored)."""
    probabilities = class_probabilities(class_logits)[:, 0]
    best = int(probabilities.argmax())
    mask = (upsample_masks(mask_logits[best : best + 1], geometry)[0].sigmoid() > mask_threshold).cpu().numpy()
    if not mask.any():
        return []
    return [make_instance(mask, 0, float(probabilities[best]), labels)]


def _scored_candidates(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, score_threshold: float,
    mask_threshold: float, keep_best: bool = False,
) -> list[tuple[np.ndarray, int, float]]:
    """Instance-style scoring: top-k (k = Q) over all query x class pairs, mask = prob > mask_threshold,
    score = class prob x mean mask prob inside the mask; non-empty masks with score >= threshold.

    Since the mask factor is at most 1, pairs whose class prob is below the threshold cannot pass
    and are dropped before any upsampling (exact, not an approximation). With `keep_best` the best
    pair is kept regardless of the threshold (interactive).
    """
    probabilities = class_probabilities(class_logits)
    num_queries, num_classes = probabilities.shape
    flat = probabilities.flatten()
    top_scores, top_indices = flat.topk(min(num_queries, flat.numel()))
    eligible = top_scores >= score_threshold
    if keep_best:
        eligible[0] = True
    top_scores, top_indices = top_scores[eligible], top_indices[eligible]
    queries = top_indices // num_classes
    classes = top_indices % num_classes
    unique_queries, inverse = queries.unique(return_inverse=True)
    mask_probs = upsample_masks(mask_logits[unique_queries], geometry).sigmoid()
    candidates = []
    for rank in range(top_scores.shape[0]):
        probs = mask_probs[inverse[rank]]
        mask = probs > mask_threshold
        area = mask.sum()
        if area == 0:
            continue
        score = float(top_scores[rank]) * float((probs * mask).sum() / area)
        if score >= score_threshold or (keep_best and rank == 0):
            candidates.append((mask.cpu().numpy(), int(classes[rank]), score))
    candidates.sort(key=lambda item: -item[2])
    return candidates


def instance(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    score_threshold: float = 0.5, mask_threshold: float = 0.5,
) -> list[Instance]:
    """Generic instance segmentation, open-vocabulary and VGD (label = condition / region index)."""
    return [
        make_instance(mask, label, score, labels)
        for mask, label, score in _scored_candidates(class_logits, mask_logits, geometry, score_threshold, mask_threshold)
    ]


def interactive(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    prompt_mask: np.ndarray, score_threshold: float = 0.5, mask_threshold: float = 0.5,
) -> list[Instance]:
    """Keep masks with score >= threshold or the best one; pick the one whose box best matches the prompt's box."""
    candidates = _scored_candidates(
        class_logits, mask_logits, geometry, score_threshold, mask_threshold, keep_best=True
    )
    if not candidates:
        return []
    prompt_box = mask_box(prompt_mask)
    mask, label, score = max(candidates, key=lambda item: box_iou(mask_box(item[0]), prompt_box))
    return [make_instance(mask, label, score, labels)]


def semantic(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, chunk: int = 16
) -> np.ndarray:
    """(H, W) int32 label map: argmax over classes of sum_q p(q, c) · sigmoid(mask_q); no void."""
    probabilities = class_probabilities(class_logits)
    height, width = geometry.original_size
    scores = torch.zeros(probabilities.shape[1], height, width)
    for start in range(0, probabilities.shape[0], chunk):
        masks = upsample_masks(mask_logits[start : start + chunk], geometry).sigmoid()
        scores += torch.einsum("qc,qhw->chw", probabilities[start : start + chunk].cpu(), masks.cpu())
    return scores.argmax(dim=0).numpy().astype(np.int32)


def panoptic(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    stuff_labels: frozenset[int] = frozenset(), score_threshold: float = 0.5, overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, list[Instance]]:
    """Panoptic merge: (H, W) int32 segment map (0 = void, k = instances[k - 1]) and the segments."""
    probabilities = class_probabilities(class_logits)
    scores, classes = probabilities.max(dim=-1)
    keep = (scores > score_threshold).nonzero().flatten()
    height, width = geometry.original_size
    segment_map = np.zeros((height, width), dtype=np.int32)
    if keep.numel() == 0:
        return segment_map, []
    weighted = upsample_masks(mask_logits[keep], geometry).sigmoid() * scores[keep, None, None].float()
    owner = weighted.argmax(dim=0)
    instances: list[Instance] = []
    stuff_segment: dict[int, int] = {}
    for k in range(keep.numel()):
        label = int(classes[keep[k]])
        original = weighted[k] >= 0.5
        owned = owner == k
        mask = owned & original
        owned_area, original_area = int(owned.sum()), int(original.sum())
        if owned_area == 0 or original_area == 0 or int(mask.sum()) == 0:
            continue
        if owned_area / original_area <= overlap_threshold:
            continue
        mask_np = mask.cpu().numpy()
        if label in stuff_labels and label in stuff_segment:
            index = stuff_segment[label]
            merged = instances[index].mask | mask_np
            instances[index] = make_instance(merged, label, instances[index].score, labels)
            segment_map[mask_np] = index + 1
            continue
        instances.append(make_instance(mask_np, label, float(scores[keep[k]]), labels))
        segment_map[mask_np] = len(instances)
        if label in stuff_labels:
            stuff_segment[label] = len(instances) - 1
    return segment_map, instances


def grounded_phrases(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    mask_threshold: float = 0.5,
) -> list[Instance]:
    """GCG: per phrase k the best query's mask; later phrases overwrite earlier ones where they overlap."""
    probabilities = class_probabilities(class_logits)
    if probabilities.shape[1] == 0:
        return []
    best_queries = probabilities.argmax(dim=0)
    masks = upsample_masks(mask_logits[best_queries], geometry).sigmoid() > mask_threshold
    owner = np.zeros(geometry.original_size, dtype=np.int32)
    for k in range(masks.shape[0]):
        owner[masks[k].cpu().numpy()] = k + 1
    instances = []
    for k in range(masks.shape[0]):
        mask = owner == k + 1
        if mask.any():
            instances.append(make_instance(mask, k, float(probabilities[best_queries[k], k]), labels))
    return instances
