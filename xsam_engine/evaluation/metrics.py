"""Segmentation metrics as X-SAM's evaluators define them, in plain numpy.

- Referring / reasoning: cIoU (cumulative IoU, Σ intersection / Σ union over the dataset) and
  gIoU (mean of per-sample IoUs), as in LISA / X-SAM's ``ReferSegEvaluator``.
- Interactive: mIoU = mean per-sample IoU of the single predicted mask (``miou_binary``).
- Generic semantic: mIoU from a confusion matrix (detectron2 ``SemSegEvaluator``).
- Generic panoptic: PQ / SQ / RQ (panopticapi ``pq_compute``), overall, things and stuff.
- Generic instance and VGD: COCO mask AP@[.50:.05:.95], AP50, AP75 (pycocotools ``COCOeval``,
  101-point interpolation, max 100 detections per image and category).
- GCG: GLaMM-style mask recall (``gcg_mask_recall``).

Masks are (H, W) bool arrays (anything non-zero counts as inside).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..masks import mask_iou

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
_PQ_MATCH_IOU = 0.5
_PQ_VOID_FRACTION = 0.5


# ---------------------------------------------------------------------------------------------
# Binary masks: referring, reasoning, interactive


def ciou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    """Cumulative IoU: Σ intersection / Σ union over all samples (1.0 if every union is empty)."""
    _check_lengths(preds, gts)
    intersection = union = 0
    for pred, gt in zip(preds, gts):
        pred, gt = _binary_pair(pred, gt)
        intersection += np.count_nonzero(pred & gt)
        union += np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else intersection / union


def giou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    """Generalised IoU of LISA / X-SAM: the mean per-sample IoU (empty pred and gt count as 1)."""
    _check_lengths(preds, gts)
    if not preds:
        raise ValueError("giou needs at least one sample.")
    return float(np.mean([mask_iou(pred, gt) for pred, gt in zip(preds, gts)]))


def miou_binary(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    """Interactive segmentation mIoU: the mean per-sample IoU of the predicted masks."""
    return giou(preds, gts)


# ---------------------------------------------------------------------------------------------
# Semantic segmentation


@dataclass(frozen=True, eq=False)
class SemanticIoU:
    """Semantic segmentation scores.

    Attributes:
        miou: mean IoU over classes present in the ground truth or the prediction.
        per_class: (C,) IoU per class, NaN for classes absent from both.
        pixel_accuracy: correctly labelled / labelled ground-truth pixels.
        confusion: (C + 1, C + 1) int64 counts [gt, pred]; the last row / column is "no class"
            (predictions outside 0..C-1, e.g. -1 for void).
    """

    miou: float
    per_class: np.ndarray
    pixel_accuracy: float
    confusion: np.ndarray


def miou(
    pred_maps: Sequence[np.ndarray], gt_maps: Sequence[np.ndarray], num_classes: int, ignore_index: int = 255
) -> SemanticIoU:
    """Semantic mIoU via a confusion matrix (detectron2 ``SemSegEvaluator``).

    Ground-truth pixels equal to ``ignore_index`` are skipped. A predicted label outside
    ``0 .. num_classes - 1`` counts as "no class": a miss for the ground-truth class. IoU_c =
    TP / (TP + FP + FN); classes with an empty union are left out of the mean.
    """
    _check_lengths(pred_maps, gt_maps)
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for pred, gt in zip(pred_maps, gt_maps):
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"Prediction shape {pred.shape} does not match ground truth {gt.shape}.")
        valid = gt != ignore_index
        gt_valid = gt[valid].astype(np.int64)
        if gt_valid.size and (gt_valid.min() < 0 or gt_valid.max() >= num_classes):
            raise ValueError(f"Ground-truth labels must be in 0..{num_classes - 1} or ignore_index {ignore_index}.")
        pred_valid = pred[valid].astype(np.int64)
        pred_valid = np.where((pred_valid >= 0) & (pred_valid < num_classes), pred_valid, num_classes)
        confusion += np.bincount(
            gt_valid * (num_classes + 1) + pred_valid, minlength=(num_classes + 1) ** 2
        ).reshape(num_classes + 1, num_classes + 1)
    true_positive = np.diag(confusion)[:num_classes].astype(np.float64)
    gt_total = confusion[:num_classes, :].sum(axis=1).astype(np.float64)
    pred_total = confusion[:, :num_classes].sum(axis=0).astype(np.float64)
    union = gt_total + pred_total - true_positive
    per_class = np.full(num_classes, np.nan)
    present = union > 0
    per_class[present] = true_positive[present] / union[present]
    labelled = gt_total.sum()
    return SemanticIoU(
        miou=float(np.nanmean(per_class)) if present.any() else float("nan"),
        per_class=per_class,
        pixel_accuracy=float(true_positive.sum() / labelled) if labelled else float("nan"),
        confusion=confusion,
    )


# ---------------------------------------------------------------------------------------------
# Panoptic quality


@dataclass(frozen=True, eq=False)
class PanopticAnnotation:
    """One image's panoptic segmentation (prediction or ground truth).

    Attributes:
        id_map: (H, W) int segment id per pixel; ``void_id`` (default 0) = no segment / void.
        segments: one mapping per segment with "id" and "category_id", optionally "iscrowd" (gt only).
    """

    id_map: np.ndarray
    segments: Sequence[Mapping]


@dataclass(frozen=True)
class PQStat:
    """PQ, SQ and RQ (in [0, 1]) with the counts behind them; ``n`` = categories averaged."""

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    n: int = 1


@dataclass(frozen=True)
class PanopticQuality:
    """Panoptic scores: averaged over all, thing and stuff categories, and per category."""

    all: PQStat
    things: PQStat
    stuff: PQStat
    per_class: dict[int, PQStat] = field(default_factory=dict)


def panoptic_quality(
    predictions: Sequence[PanopticAnnotation],
    ground_truths: Sequence[PanopticAnnotation],
    stuff_category_ids: Collection[int] = (),
    void_id: int = 0,
) -> PanopticQuality:
    """PQ as panopticapi ``pq_compute`` defines it.

    Per image, a predicted and a ground-truth segment of the same category match when their IoU
    is above 0.5, where the union leaves out the predicted pixels on ground-truth void. Unmatched
    ground truths are FN (crowd ones are ignored); an unmatched prediction is FP unless more than
    half of it lies on void or on a crowd region of its category. Per category
    PQ = Σ IoU(TP) / (TP + FP/2 + FN/2) = SQ x RQ. Averages run over the categories that have any
    TP, FP or FN; categories not in ``stuff_category_ids`` are things.
    """
    _check_lengths(predictions, ground_truths)
    iou_sum: dict[int, float] = defaultdict(float)
    counts: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(3, dtype=np.int64))  # tp, fp, fn
    for prediction, truth in zip(predictions, ground_truths):
        _pq_single(prediction, truth, void_id, iou_sum, counts)
    per_class = {}
    for category in sorted(counts):
        tp, fp, fn = (int(v) for v in counts[category])
        per_class[category] = _pq_stat(iou_sum[category], tp, fp, fn)
    stuff = set(stuff_category_ids)
    return PanopticQuality(
        all=_pq_average(per_class, lambda c: True),
        things=_pq_average(per_class, lambda c: c not in stuff),
        stuff=_pq_average(per_class, lambda c: c in stuff),
        per_class=per_class,
    )


def _pq_single(
    prediction: PanopticAnnotation,
    truth: PanopticAnnotation,
    void_id: int,
    iou_sum: dict[int, float],
    counts: dict[int, np.ndarray],
) -> None:
    pred_map, gt_map = np.asarray(prediction.id_map, dtype=np.int64), np.asarray(truth.id_map, dtype=np.int64)
    if pred_map.shape != gt_map.shape:
        raise ValueError(f"Prediction id map {pred_map.shape} does not match ground truth {gt_map.shape}.")
    if pred_map.size and (pred_map.min() < 0 or gt_map.min() < 0):
        raise ValueError("Panoptic id maps must hold non-negative segment ids (void_id for no segment).")
    gt_segments = {int(s["id"]): s for s in truth.segments}
    pred_segments = {int(s["id"]): s for s in prediction.segments}
    for ids, segments, name in ((gt_map, gt_segments, "ground-truth"), (pred_map, pred_segments, "predicted")):
        unknown = set(np.unique(ids).tolist()) - set(segments) - {void_id}
        if unknown:
            raise ValueError(f"{name} id map has segment ids {sorted(unknown)} missing from its segments list.")
    gt_area = dict(zip(*np.unique(gt_map, return_counts=True)))
    pred_area = dict(zip(*np.unique(pred_map, return_counts=True)))
    offset = int(max(pred_map.max(initial=0), void_id)) + 1
    pairs, pair_counts = np.unique(gt_map * offset + pred_map, return_counts=True)
    overlap = {(int(p // offset), int(p % offset)): int(c) for p, c in zip(pairs, pair_counts)}

    gt_matched, pred_matched = set(), set()
    for (gt_id, pred_id), intersection in overlap.items():
        if gt_id not in gt_segments or pred_id not in pred_segments:
            continue
        gt_segment, pred_segment = gt_segments[gt_id], pred_segments[pred_id]
        if gt_segment.get("iscrowd", False) or gt_segment["category_id"] != pred_segment["category_id"]:
            continue
        union = pred_area[pred_id] + gt_area[gt_id] - intersection - overlap.get((void_id, pred_id), 0)
        iou = intersection / union
        if iou > _PQ_MATCH_IOU:
            category = int(gt_segment["category_id"])
            counts[category][0] += 1
            iou_sum[category] += iou
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    crowd_by_category = {}
    for gt_id, segment in gt_segments.items():
        if segment.get("iscrowd", False):
            crowd_by_category[int(segment["category_id"])] = gt_id
        elif gt_id not in gt_matched:
            counts[int(segment["category_id"])][2] += 1
    for pred_id, segment in pred_segments.items():
        if pred_id in pred_matched or pred_id not in pred_area:
            continue
        category = int(segment["category_id"])
        on_void = overlap.get((void_id, pred_id), 0)
        if category in crowd_by_category:
            on_void += overlap.get((crowd_by_category[category], pred_id), 0)
        if on_void / pred_area[pred_id] > _PQ_VOID_FRACTION:
            continue
        counts[category][1] += 1


def _pq_stat(iou_sum: float, tp: int, fp: int, fn: int) -> PQStat:
    denominator = tp + 0.5 * fp + 0.5 * fn
    if denominator == 0:
        return PQStat(0.0, 0.0, 0.0, tp, fp, fn, 0)
    sq = iou_sum / tp if tp else 0.0
    rq = tp / denominator
    return PQStat(iou_sum / denominator, sq, rq, tp, fp, fn)


def _pq_average(per_class: dict[int, PQStat], keep: Callable[[int], bool]) -> PQStat:
    stats = [stat for category, stat in per_class.items() if keep(category) and stat.n]
    if not stats:
        return PQStat(0.0, 0.0, 0.0, 0, 0, 0, 0)
    return PQStat(
        pq=float(np.mean([s.pq for s in stats])),
        sq=float(np.mean([s.sq for s in stats])),
        rq=float(np.mean([s.rq for s in stats])),
        tp=sum(s.tp for s in stats),
        fp=sum(s.fp for s in stats),
        fn=sum(s.fn for s in stats),
        n=len(stats),
    )


# ---------------------------------------------------------------------------------------------
# COCO mask AP (generic instance segmentation, VGD)


@dataclass(frozen=True, eq=False)
class InstancePrediction:
    """A predicted instance: mask, category (class or region index) and confidence."""

    mask: np.ndarray
    category_id: int
    score: float


@dataclass(frozen=True, eq=False)
class InstanceAnnotation:
    """A ground-truth instance; crowd regions may absorb detections without counting them."""

    mask: np.ndarray
    category_id: int
    iscrowd: bool = False


@dataclass(frozen=True, eq=False)
class MaskAP:
    """COCO mask AP.

    Attributes:
        ap: mean over IoU thresholds 0.50:0.05:0.95 and categories with ground truth.
        ap50, ap75: the same at IoU 0.50 / 0.75 only.
        per_class: AP per category with ground truth.
        precision: (T, R, K) interpolated precision, -1 for categories without ground truth
            (T IoU thresholds, R = 101 recall points, K = sorted ``category_ids``).
        category_ids: the categories of the last axis of ``precision``.
    """

    ap: float
    ap50: float
    ap75: float
    per_class: dict[int, float]
    precision: np.ndarray
    category_ids: tuple[int, ...]


def mask_ap(
    predictions: Sequence[Sequence[InstancePrediction]],
    ground_truths: Sequence[Sequence[InstanceAnnotation]],
    max_detections: int = 100,
    iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS,
) -> MaskAP:
    """COCO-style mask AP, following pycocotools ``COCOeval`` (area range "all").

    Per image and category, detections are sorted by score (top ``max_detections`` kept) and
    greedily matched to the unmatched ground truth of highest IoU >= the threshold; crowd
    ground truth (IoU = intersection / detection area) can absorb any number of detections,
    which are then ignored. Per category, precision is made monotone and read at 101 recall
    points; AP is the mean over thresholds, recall points and categories with ground truth.
    """
    _check_lengths(predictions, ground_truths)
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    categories = sorted(
        {int(p.category_id) for image in predictions for p in image}
        | {int(g.category_id) for image in ground_truths for g in image}
    )
    precision = -np.ones((len(thresholds), len(COCO_RECALL_THRESHOLDS), len(categories)))
    for k, category in enumerate(categories):
        scores, matched, ignored, num_gt = [], [], [], 0
        for image_preds, image_gts in zip(predictions, ground_truths):
            dets = sorted((p for p in image_preds if p.category_id == category), key=lambda p: -p.score)
            dets = dets[:max_detections]
            gts = [g for g in image_gts if g.category_id == category]
            num_gt += sum(not g.iscrowd for g in gts)
            if not dets:
                continue
            det_matched, det_ignored = _match_image(dets, gts, thresholds)
            scores.append(np.array([d.score for d in dets]))
            matched.append(det_matched)
            ignored.append(det_ignored)
        if num_gt == 0:
            continue
        if not scores:
            precision[:, :, k] = 0.0
            continue
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        det_matched = np.concatenate(matched, axis=1)[:, order]
        det_ignored = np.concatenate(ignored, axis=1)[:, order]
        true_pos = np.cumsum(det_matched & ~det_ignored, axis=1, dtype=np.float64)
        false_pos = np.cumsum(~det_matched & ~det_ignored, axis=1, dtype=np.float64)
        for t in range(len(thresholds)):
            precision[t, :, k] = _interpolated_precision(true_pos[t], false_pos[t], num_gt)
    valid = precision > -1
    per_class = {
        category: float(precision[:, :, k].mean()) for k, category in enumerate(categories) if valid[0, 0, k]
    }

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(values.mean()) if values.size else float("nan")

    ap50 = mean(precision[np.isclose(thresholds, 0.5)]) if np.isclose(thresholds, 0.5).any() else float("nan")
    ap75 = mean(precision[np.isclose(thresholds, 0.75)]) if np.isclose(thresholds, 0.75).any() else float("nan")
    return MaskAP(mean(precision), ap50, ap75, per_class, precision, tuple(categories))


def _match_image(
    dets: Sequence[InstancePrediction], gts: Sequence[InstanceAnnotation], thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(T, D) bool matched and ignored flags of one image's detections of one category."""
    # Non-crowd ground truth first, as pycocotools sorts it.
    gts = sorted(gts, key=lambda g: bool(g.iscrowd))
    crowd = np.array([bool(g.iscrowd) for g in gts], dtype=bool)
    ious = _iou_matrix([d.mask for d in dets], [g.mask for g in gts], crowd)
    matched = np.zeros((len(thresholds), len(dets)), dtype=bool)
    ignored = np.zeros((len(thresholds), len(dets)), dtype=bool)
    for t, threshold in enumerate(thresholds):
        gt_taken = np.zeros(len(gts), dtype=bool)
        for d in range(len(dets)):
            best_iou, best = min(threshold, 1 - 1e-10), -1
            for g in range(len(gts)):
                if gt_taken[g] and not crowd[g]:
                    continue
                if best > -1 and not crowd[best] and crowd[g]:
                    break  # a real match beats any crowd region
                if ious[d, g] < best_iou:
                    continue
                best_iou, best = ious[d, g], g
            if best > -1:
                gt_taken[best] = True
                matched[t, d] = True
                ignored[t, d] = crowd[best]
    return matched, ignored


def _iou_matrix(dets: Sequence[np.ndarray], gts: Sequence[np.ndarray], crowd: np.ndarray) -> np.ndarray:
    """(D, G) mask IoUs; against crowd regions, intersection / detection area."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    det_flat = np.stack([np.asarray(m, dtype=bool).ravel() for m in dets]).astype(np.float32)
    gt_flat = np.stack([np.asarray(m, dtype=bool).ravel() for m in gts]).astype(np.float32)
    if det_flat.shape[1] != gt_flat.shape[1]:
        raise ValueError("Predicted and ground-truth masks of one image must have the same size.")
    intersection = det_flat @ gt_flat.T
    det_area = det_flat.sum(axis=1)[:, None]
    gt_area = gt_flat.sum(axis=1)[None, :]
    union = np.where(crowd[None, :], det_area, det_area + gt_area - intersection)
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0).astype(np.float64)


def _interpolated_precision(true_pos: np.ndarray, false_pos: np.ndarray, num_gt: int) -> np.ndarray:
    """(R,) precision at the COCO recall thresholds (0 where the recall is never reached)."""
    recall = true_pos / num_gt
    precision = true_pos / (true_pos + false_pos + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone non-increasing in recall
    indices = np.searchsorted(recall, COCO_RECALL_THRESHOLDS, side="left")
    result = np.zeros(len(COCO_RECALL_THRESHOLDS))
    reached = indices < len(precision)
    result[reached] = precision[indices[reached]]
    return result


# ---------------------------------------------------------------------------------------------
# Grounded conversation generation


@dataclass(frozen=True, eq=False)
class GroundedPhrase:
    """A phrase of a caption and the mask it grounds."""

    phrase: str
    mask: np.ndarray


@dataclass(frozen=True)
class GCGRecall:
    """GCG mask recall: matched ground-truth phrases / all ground-truth phrases."""

    recall: float
    matched: int
    total: int
    mean_matched_iou: float


def normalise_phrase(phrase: str) -> str:
    """Lower case, no punctuation, no leading article: 'A red cup.' -> 'red cup'."""
    words = re.sub(r"[^a-z0-9 ]+", " ", phrase.lower()).split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def gcg_mask_recall(
    predictions: Sequence[Sequence[GroundedPhrase]],
    ground_truths: Sequence[Sequence[GroundedPhrase]],
    iou_threshold: float = 0.5,
) -> GCGRecall:
    """GLaMM-style GCG mask recall.

    Per image, predicted and ground-truth phrases are matched one-to-one, greedily by highest mask
    IoU; a pair is admissible when IoU >= ``iou_threshold`` and the phrases are similar. A
    ground-truth phrase counts as recalled when it is matched.

    Simplification: GLaMM scores phrase similarity with BERT embeddings (cosine >= 0.5); our
    synthetic language is closed, so phrases are similar when they are equal after
    ``normalise_phrase`` (case, punctuation and a leading article do not matter). Unlike GLaMM's
    loop, which stops at the first inadmissible highest-IoU pair, we skip inadmissible pairs.
    """
    _check_lengths(predictions, ground_truths)
    matched = total = 0
    matched_ious: list[float] = []
    for image_preds, image_gts in zip(predictions, ground_truths):
        total += len(image_gts)
        if not image_preds or not image_gts:
            continue
        ious = np.array([[mask_iou(p.mask, g.mask) for g in image_gts] for p in image_preds])
        same_text = np.array(
            [[normalise_phrase(p.phrase) == normalise_phrase(g.phrase) for g in image_gts] for p in image_preds]
        )
        admissible = np.where((ious >= iou_threshold) & same_text, ious, -1.0)
        while admissible.size and admissible.max() >= 0:
            p, g = np.unravel_index(np.argmax(admissible), admissible.shape)
            matched += 1
            matched_ious.append(float(ious[p, g]))
            admissible[p, :] = -1.0
            admissible[:, g] = -1.0
    recall = matched / total if total else float("nan")
    return GCGRecall(recall, matched, total, float(np.mean(matched_ious)) if matched_ious else float("nan"))


# ---------------------------------------------------------------------------------------------


def _binary_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"Prediction mask {pred.shape} and ground-truth mask {gt.shape} differ in shape.")
    return pred, gt


def _check_lengths(preds: Sequence, gts: Sequence) -> None:
    if len(preds) != len(gts):
        raise ValueError(f"Got {len(preds)} predictions for {len(gts)} ground truths; pass one per sample.")
