"""Decoder logits -> typed results, per task: X-SAM's post-processing rules plus one threshold contract.

Source of every rule: the official X-SAM post-processing of the released weights (github
wanghao9610/X-SAM, branch AAAI26_Archive, `xsam/xsam/dataset/process_fns/postprocess_fns/*.py`
and `xsam/xsam/dataset/utils/process.py`; spec section 8). Each function takes one image's
predictions: class logits (Q, C + 1) with the background last and mask logits (Q, h, w) at
mask-feature resolution. Masks reach the original resolution as the released code does:
bilinear to the padded input square S², crop to the scaled size (h', w'), bilinear to (H, W).
Only masks that can still be selected are upsampled (exact: every pruning below follows from
a score bound).

The threshold contract (`requests.Thresholds`, module table in `requests.py`): every task applies
the request's effective score threshold, and a threshold of 0 reproduces the official output.
Where the official code ignores the threshold (referring, reasoning, semantic, GCG), ours
drops what scores below it and says so in `PostProcessed.message`. Instances come out highest
score first for every task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from .requests import Task, Thresholds
from .results import Instance

_QUERY_CHUNK = 16  # masks upsampled at once (bounds memory at large images)
_CLASS_CHUNK = 32  # semantic score maps resized at once


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes needed to map mask logits back to the caller's image."""

    input_size: int  # S, the padded square side of the SAM input
    scaled_size: tuple[int, int]  # (h', w') of the image inside the square
    original_size: tuple[int, int]  # (H, W)


@dataclass(eq=False)
class PostProcessed:
    """What post-processing makes of one image's logits.

    Attributes:
        instances: highest score first.
        semantic_map: (H, W) int32 class index, -1 = void (SEMANTIC).
        panoptic_map: (H, W) int32, 0 = void, k = instances[k - 1] (PANOPTIC).
        message: why something the request asked for is not in `instances` ("" when nothing is
            missing), e.g. "not found: best score 0.18 < 0.50".
    """

    instances: list[Instance] = field(default_factory=list)
    semantic_map: np.ndarray | None = None
    panoptic_map: np.ndarray | None = None
    message: str = ""


def class_probabilities(class_logits: torch.Tensor) -> torch.Tensor:
    """Softmax over C + 1 classes, background column dropped -> (Q, C)."""
    return class_logits.float().softmax(dim=-1)[:, :-1]


def upsample_to_input(mask_logits: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(K, h, w) -> (K, S, S) float32 logits, bilinear (X-SAM's `postprocess_masks_preds`)."""
    size = (geometry.input_size, geometry.input_size)
    return F.interpolate(mask_logits.float()[None], size=size, mode="bilinear", align_corners=False)[0]


def crop_and_resize(maps: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(K, S, S) -> (K, H, W): crop to the scaled size, bilinear to the original size (`sem_seg_postprocess`)."""
    maps = maps[:, : geometry.scaled_size[0], : geometry.scaled_size[1]]
    return F.interpolate(maps[None], size=geometry.original_size, mode="bilinear", align_corners=False)[0]


def upsample_masks(mask_logits: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(K, h, w) logits -> (K, H, W) float32 logits: bilinear to S², crop to (h', w'), bilinear to (H, W)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *geometry.original_size), dtype=torch.float32)
    return crop_and_resize(upsample_to_input(mask_logits, geometry), geometry)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x0, y0, x1, y1) box of a bool mask, x1/y1 exclusive; zeros for an empty mask
    (detectron2's `BitMasks.get_bounding_boxes`, which X-SAM uses)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes; 0 when they do not overlap (detectron2's `pairwise_iou`)."""
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    if inter == 0:
        return 0.0
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def make_instance(mask: np.ndarray, label_index: int, score: float, labels: tuple[str, ...]) -> Instance:
    """An `Instance` whose label and phrase are `labels[label_index]` and whose box is the mask's."""
    label = labels[label_index] if 0 <= label_index < len(labels) else str(label_index)
    return Instance(
        mask=mask, label=label, score=float(score), box_xyxy=mask_box(mask), phrase=label, class_index=label_index
    )


def by_score(instances: list[Instance]) -> list[Instance]:
    """Highest score first; equal scores keep their order."""
    return sorted(instances, key=lambda instance: -instance.score)


def score_below(score: float, threshold: float) -> str:
    """"0.18 < 0.50": two decimals, more where the threshold needs them (0.999) or where two would
    print the two values equal."""
    digits = 2
    while digits < 6 and (round(threshold, digits) != round(threshold, 6)
                          or f"{score:.{digits}f}" == f"{threshold:.{digits}f}"):
        digits += 1
    return f"{score:.{digits}f} < {threshold:.{digits}f}"


def _below(name: str, score: float, threshold: float) -> str:
    return f"{name} best score {score_below(score, threshold)}"


# -- referring / reasoning ----------------------------------------------------------------------


def referring(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    thresholds: Thresholds,
) -> PostProcessed:
    """The best query for the single phrase (official `refseg_postprocess_fn`), or nothing.

    Score = the phrase probability of the best query; mask = sigmoid > mask threshold. Ours
    returns zero instances when the score is below the score threshold or the mask is empty
    (the official code always returns the best mask: score threshold 0).
    """
    probabilities = class_probabilities(class_logits)[:, 0]
    best = int(probabilities.argmax())
    score = float(probabilities[best])
    if score < thresholds.score:
        return PostProcessed(message=f"not found: best score {score_below(score, thresholds.score)}")
    mask = (upsample_masks(mask_logits[best : best + 1], geometry)[0].sigmoid() > thresholds.mask).cpu().numpy()
    if not mask.any():
        return PostProcessed(message=f"not found: the best mask (score {score:.2f}) has no pixel above "
                                     f"mask_threshold {thresholds.mask:.2f}")
    return PostProcessed(instances=[make_instance(mask, 0, score, labels)])


# -- instance, open-vocabulary, VGD, interactive ---------------------------------------------------


@dataclass(eq=False)
class _Candidate:
    mask: np.ndarray
    label: int
    score: float  # class probability x mean mask probability inside the mask


def _top_pairs(class_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top k = Q (query, class) pairs by class probability, highest first -> (probs, queries, classes)."""
    probabilities = class_probabilities(class_logits)
    num_queries, num_classes = probabilities.shape
    top_probs, top_indices = probabilities.flatten().topk(min(num_queries, probabilities.numel()))
    return top_probs, top_indices // num_classes, top_indices % num_classes


def _candidate(mask_logits: torch.Tensor, label: int, probability: float, mask_threshold: float) -> _Candidate:
    """Official instance scoring of one pair: mask = prob > threshold (X-SAM: logit > 0), score =
    class prob x (sum of probs inside / (area + 1e-6)), so an empty mask scores 0."""
    probs = mask_logits.sigmoid()
    mask = probs > mask_threshold
    mask_score = float((probs * mask).sum()) / (float(mask.sum()) + 1e-6)
    return _Candidate(mask.cpu().numpy(), label, probability * mask_score)


def _scored_pairs(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, mask_threshold: float,
    stop: Callable[[float, list[_Candidate]], bool],
) -> list[_Candidate]:
    """Candidates of the top pairs in order of class probability until `stop(prob, so_far)` says no
    later pair can matter (masks are upsampled in chunks of distinct queries)."""
    top_probs, queries, classes = _top_pairs(class_logits)
    candidates: list[_Candidate] = []
    cache: dict[int, torch.Tensor] = {}
    for rank in range(top_probs.shape[0]):
        probability = float(top_probs[rank])
        if stop(probability, candidates):
            break
        query = int(queries[rank])
        if query not in cache:
            upcoming = [int(q) for q in queries[rank:] if int(q) not in cache]
            chunk = list(dict.fromkeys(upcoming))[:_QUERY_CHUNK]
            cache = dict(zip(chunk, upsample_masks(mask_logits[chunk], geometry)))
        candidates.append(_candidate(cache[query], int(classes[rank]), probability, mask_threshold))
    return candidates


def instance(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    thresholds: Thresholds,
) -> PostProcessed:
    """Generic instance segmentation, open-vocabulary and VGD (official `_instance_genseg_postprocess`;
    label = condition / region index).

    Top k = Q pairs over all (query, class) probabilities; keep pairs whose score >= the score
    threshold. Non-empty masks only, except with a threshold <= 0, where empty-mask pairs
    (score 0) are kept as the official evaluation's `instances` keeps them. Pairs whose class
    probability is below the threshold cannot pass (score <= class probability) and are never
    upsampled.
    """
    threshold = thresholds.score
    candidates = _scored_pairs(
        class_logits, mask_logits, geometry, thresholds.mask, stop=lambda probability, _: probability < threshold
    )
    kept = [c for c in candidates if c.score >= threshold and (c.mask.any() or threshold <= 0)]
    return PostProcessed(instances=by_score([make_instance(c.mask, c.label, c.score, labels) for c in kept]))


def interactive(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    prompt_mask: np.ndarray, thresholds: Thresholds,
) -> PostProcessed:
    """The one mask for a visual prompt (official `intseg_postprocess_fn`).

    Candidates = the top pairs with their final score (class probability x mask score); keep
    those whose final score reaches the threshold, or else-also the single best by final score;
    among the kept, the mask whose box has the highest IoU with the prompt mask's box wins (first
    on ties). `prompt_mask` is the (H, W) prompt after the image's resize round trip. Pairs are
    scored in order of class probability until no later one can reach the threshold or beat the
    best final score (final <= class probability), so the result is exact.
    """
    threshold = thresholds.score

    def stop(probability: float, so_far: list[_Candidate]) -> bool:
        best = max((c.score for c in so_far), default=-1.0)
        return probability < threshold and probability <= best

    candidates = _scored_pairs(class_logits, mask_logits, geometry, thresholds.mask, stop)
    if not candidates:
        return PostProcessed(message="no candidate mask")
    best_score = max(c.score for c in candidates)
    kept = [c for c in candidates if c.score >= threshold or c.score == best_score]
    prompt_box = mask_box(prompt_mask)
    ious = [box_iou(mask_box(c.mask), prompt_box) for c in kept]
    chosen = kept[int(np.argmax(ious))]
    if not chosen.mask.any():
        return PostProcessed(message=f"not found: the selected mask has no pixel above mask_threshold "
                                     f"{thresholds.mask:.2f}")
    return PostProcessed(instances=[make_instance(chosen.mask, chosen.label, chosen.score, labels)])


# -- semantic -----------------------------------------------------------------------------------


def semantic(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    thresholds: Thresholds,
) -> PostProcessed:
    """(H, W) label map (official `_semantic_genseg_postprocess`) and one instance per class present.

    Class score maps = sum over queries of p(query, class) x sigmoid(mask) at the input
    resolution S² (X-SAM upsamples the logits to S² first, then combines), then cropped and
    resized bilinearly to (H, W); each pixel takes the argmax class. Each class present gets an
    instance scored by its best query's probability; classes scoring below the score threshold
    are not reported and their pixels become void (-1). Threshold 0 = the official map.
    """
    probabilities = class_probabilities(class_logits)
    num_classes = probabilities.shape[1]
    height, width = geometry.original_size
    best_value = torch.full((height, width), -1.0)
    best_class = torch.zeros((height, width), dtype=torch.long)
    for first_class in range(0, num_classes, _CLASS_CHUNK):
        class_slice = slice(first_class, min(first_class + _CLASS_CHUNK, num_classes))
        scores = None
        for start in range(0, probabilities.shape[0], _QUERY_CHUNK):
            masks = upsample_to_input(mask_logits[start : start + _QUERY_CHUNK], geometry).sigmoid()
            part = torch.einsum("qc,qhw->chw", probabilities[start : start + _QUERY_CHUNK, class_slice].cpu(), masks.cpu())
            scores = part if scores is None else scores + part
        resized = crop_and_resize(scores, geometry)
        value, index = resized.max(dim=0)
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_class = torch.where(better, index + first_class, best_class)
    label_map = best_class.numpy().astype(np.int32)
    class_scores = probabilities.max(dim=0).values
    instances, dropped = [], []
    for index in np.unique(label_map):
        score = float(class_scores[index])
        if score < thresholds.score:
            label_map[label_map == index] = -1
            dropped.append(_below(labels[index], score, thresholds.score))
            continue
        instances.append(make_instance(label_map == index, int(index), score, labels))
    message = ("void where the class scores below score_threshold: " + "; ".join(dropped)) if dropped else ""
    return PostProcessed(instances=by_score(instances), semantic_map=label_map, message=message)


# -- panoptic -----------------------------------------------------------------------------------


def panoptic(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    stuff_labels: frozenset[int], thresholds: Thresholds,
) -> PostProcessed:
    """Panoptic merge (official `_panoptic_genseg_postprocess` -> `compute_segments`).

    1. Each query's score and label = its best class; keep queries with score > the score
       threshold (strictly, `remove_low_and_no_objects`).
    2. Weighted masks = sigmoid(mask) x score; every pixel belongs to the kept query with the
       largest weighted mask (argmax, first on ties).
    3. Kept query k becomes a segment of ALL the pixels it wins if it wins any and
       pixels won / pixels with weighted mask >= mask threshold > overlap threshold
       (`check_segment_validity`); stuff labels merge into one segment per label (score = the
       best of the merged queries).
    Returns the segment map (0 = void, k = instances[k - 1]) with instances ordered by score.
    """
    probabilities = class_probabilities(class_logits)
    scores, classes = probabilities.max(dim=-1)
    keep = (scores > thresholds.score).nonzero().flatten()
    height, width = geometry.original_size
    if keep.numel() == 0:
        return PostProcessed(panoptic_map=np.zeros((height, width), dtype=np.int32))
    weighted = upsample_masks(mask_logits[keep], geometry).sigmoid() * scores[keep, None, None].float()
    owner = weighted.argmax(dim=0)
    segments: list[tuple[np.ndarray, int, float]] = []  # (mask, label, score)
    stuff_segment: dict[int, int] = {}
    for k in range(keep.numel()):
        label, score = int(classes[keep[k]]), float(scores[keep[k]])
        won = owner == k
        won_area = int(won.sum())
        own_area = int((weighted[k] >= thresholds.mask).sum())
        if won_area == 0 or own_area == 0 or not won_area / own_area > thresholds.overlap:
            continue
        mask = won.cpu().numpy()
        if label in stuff_labels and label in stuff_segment:
            index = stuff_segment[label]
            merged, _, merged_score = segments[index]
            segments[index] = (merged | mask, label, max(merged_score, score))
            continue
        if label in stuff_labels:
            stuff_segment[label] = len(segments)
        segments.append((mask, label, score))
    instances = by_score([make_instance(mask, label, score, labels) for mask, label, score in segments])
    segment_map = np.zeros((height, width), dtype=np.int32)
    for index, item in enumerate(instances, start=1):
        segment_map[item.mask] = index
    return PostProcessed(instances=instances, panoptic_map=segment_map)


# -- GCG ----------------------------------------------------------------------------------------


def grounded_phrases(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, labels: tuple[str, ...],
    thresholds: Thresholds,
) -> PostProcessed:
    """GCG (official `gcgseg_postprocess_fn`): per phrase k its best query's mask (sigmoid > mask
    threshold); later phrases overwrite earlier ones where they overlap. Ours leaves out phrases
    whose best query scores below the score threshold (before painting, so they overwrite nothing)."""
    probabilities = class_probabilities(class_logits)
    if probabilities.shape[1] == 0:
        return PostProcessed()
    best_scores, best_queries = probabilities.max(dim=0)
    grounded = [k for k in range(probabilities.shape[1]) if float(best_scores[k]) >= thresholds.score]
    dropped = [_below(repr(labels[k]), float(best_scores[k]), thresholds.score)
               for k in range(probabilities.shape[1]) if k not in grounded]
    owner = np.zeros(geometry.original_size, dtype=np.int32)
    if grounded:
        masks = upsample_masks(mask_logits[best_queries[grounded]], geometry).sigmoid() > thresholds.mask
        for k, mask in zip(grounded, masks):
            owner[mask.cpu().numpy()] = k + 1
    instances = [make_instance(owner == k + 1, k, float(best_scores[k]), labels)
                 for k in grounded if (owner == k + 1).any()]
    message = ("phrases without a mask: " + "; ".join(dropped)) if dropped else ""
    return PostProcessed(instances=by_score(instances), message=message)


# -- dispatch -----------------------------------------------------------------------------------


def postprocess(
    task: Task, class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry,
    labels: tuple[str, ...], thresholds: Thresholds, stuff_labels: frozenset[int] = frozenset(),
    prompt_masks: tuple[np.ndarray, ...] = (),
) -> PostProcessed:
    """The task's post-processing for one image (class logits (Q, C + 1), mask logits (Q, h, w))."""
    if task in (Task.REFERRING, Task.REASONING):
        return referring(class_logits, mask_logits, geometry, labels, thresholds)
    if task is Task.SEMANTIC:
        return semantic(class_logits, mask_logits, geometry, labels, thresholds)
    if task is Task.PANOPTIC:
        return panoptic(class_logits, mask_logits, geometry, labels, stuff_labels, thresholds)
    if task in (Task.INSTANCE, Task.OPEN_VOCABULARY, Task.VGD):
        return instance(class_logits, mask_logits, geometry, labels, thresholds)
    if task is Task.INTERACTIVE:
        if len(prompt_masks) != 1:
            raise ValueError(f"Interactive post-processing needs exactly one prompt mask, got {len(prompt_masks)}.")
        return interactive(class_logits, mask_logits, geometry, labels, prompt_masks[0], thresholds)
    if task is Task.GCG:
        return grounded_phrases(class_logits, mask_logits, geometry, labels, thresholds)
    raise ValueError(f"Unknown task {task!r}")
