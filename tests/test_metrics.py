"""Evaluation metrics on small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine.evaluation import metrics


def box_mask(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


# Two 4x4 masks: rows 0-1 and rows 1-2 -> 4 shared pixels of 12.
A = box_mask((4, 4), (0, 2), (0, 4))
B = box_mask((4, 4), (1, 3), (0, 4))
DOT = box_mask((4, 4), (3, 4), (3, 4))
EMPTY = np.zeros((4, 4), dtype=bool)


def test_mask_iou():
    assert metrics.mask_iou(A, B) == pytest.approx(4 / 12)
    assert metrics.mask_iou(A, A) == 1.0
    assert metrics.mask_iou(A, EMPTY) == 0.0
    assert metrics.mask_iou(EMPTY, EMPTY) == 1.0
    with pytest.raises(ValueError, match="shape"):
        metrics.mask_iou(A, np.zeros((3, 3), dtype=bool))


def test_every_iou_in_the_project_is_the_one_mask_iou():
    """One IoU and one convention (two empty masks: 1.0, the official X-SAM evaluation's
    ``np.where(union > 0, intersection / union, 1.0)``), wherever it is used."""
    import node_driver
    from xsam_engine.export import verify
    from xsam_engine.masks import mask_iou as the_one

    assert metrics.mask_iou is the_one and verify.mask_iou is the_one and node_driver.iou is the_one
    assert the_one(EMPTY, EMPTY) == 1.0 and the_one(A, EMPTY) == 0.0 and the_one(EMPTY, A) == 0.0
    assert the_one(A.astype(np.uint8) * 255, B) == pytest.approx(4 / 12)  # non-zero is inside
    # gIoU counts an empty pair as 1 through the same function: mean(1, 0) over (EMPTY, EMPTY), (A, EMPTY).
    assert metrics.giou([EMPTY, A], [EMPTY, EMPTY]) == 0.5


def test_the_tracker_matches_with_the_same_iou():
    """Tracking matches by mask_iou: two frames whose (coarse) masks are both empty match (IoU 1.0, the
    shared convention), so an object too small for the 128-cell matching grid keeps its id."""
    from xsam_engine import Instance
    from xsam_engine.tracking import InstanceTracker

    # A 1-pixel object at (1, 1) of a 1000x1000 image: the coarse grid samples rows/columns
    # 0, 7.87, 15.7, ... (linspace(0, 999, 128) truncated), so pixel 1 is never sampled -> empty.
    mask = np.zeros((1000, 1000), bool)
    mask[1, 1] = True
    instance = Instance(mask=mask, label="crumb", score=0.9, box_xyxy=(1, 1, 2, 2), phrase="crumb", class_index=0)
    tracker = InstanceTracker(min_iou=0.3)
    ids = [tracker.update([instance])[0].instance_id for _ in range(3)]
    assert ids == [1, 1, 1]


def test_ciou_accumulates_and_giou_averages():
    preds, gts = [A, DOT, EMPTY], [B, DOT, EMPTY]
    # cIoU: (4 + 1 + 0) / (12 + 1 + 0); gIoU: mean(1/3, 1, 1) with the empty pair counting as 1.
    assert metrics.ciou(preds, gts) == pytest.approx(5 / 13)
    assert metrics.giou(preds, gts) == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert metrics.miou_binary(preds, gts) == metrics.giou(preds, gts)
    with pytest.raises(ValueError, match="one per sample"):
        metrics.ciou([A], [A, B])


def test_semantic_miou_from_confusion():
    gt = np.array([[0, 0], [1, 1], [2, 255]])
    pred = np.array([[0, 1], [1, 1], [-1, 0]])
    result = metrics.miou([pred], [gt], num_classes=4, ignore_index=255)
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2: predicted as void -> 0;
    # class 3: absent from both -> NaN, left out of the mean.
    np.testing.assert_allclose(result.per_class[:3], [1 / 2, 2 / 3, 0.0])
    assert np.isnan(result.per_class[3])
    assert result.miou == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert result.pixel_accuracy == pytest.approx(3 / 5)
    assert result.confusion[2, 4] == 1  # gt class 2 predicted as "no class"


def _panoptic(id_map, categories, crowd=()):
    segments = [{"id": i, "category_id": c, "iscrowd": i in crowd} for i, c in categories.items()]
    return metrics.PanopticAnnotation(np.asarray(id_map), segments)


def test_panoptic_quality_one_tp_one_fp_one_fn():
    shape = (8, 8)
    gt = np.zeros(shape, dtype=np.int64)
    gt[0:4, 0:4], gt[0:4, 4:8], gt[4:8, :] = 1, 2, 3  # cup (0), bowl (1), table (2, stuff)
    pred = np.zeros(shape, dtype=np.int64)
    pred[0:4, 0:3] = 1  # cup, IoU 12/16 -> TP
    pred[0:4, 3:8] = 2  # labelled cup but covers the bowl: FP for cup, bowl is FN
    pred[4:8, :] = 3  # table, IoU 1 -> TP
    result = metrics.panoptic_quality(
        [_panoptic(pred, {1: 0, 2: 0, 3: 2})], [_panoptic(gt, {1: 0, 2: 1, 3: 2})], stuff_category_ids={2}
    )
    cup, bowl, table = result.per_class[0], result.per_class[1], result.per_class[2]
    assert (cup.tp, cup.fp, cup.fn) == (1, 1, 0)
    assert cup.sq == pytest.approx(0.75) and cup.rq == pytest.approx(1 / 1.5)
    assert cup.pq == pytest.approx(0.75 / 1.5)
    assert (bowl.tp, bowl.fp, bowl.fn, bowl.pq) == (0, 0, 1, 0.0)
    assert table.pq == pytest.approx(1.0)
    assert result.all.pq == pytest.approx((0.5 + 0 + 1) / 3)
    assert result.things.pq == pytest.approx(0.25) and result.things.n == 2
    assert result.stuff.pq == pytest.approx(1.0) and result.stuff.n == 1


def test_panoptic_quality_void_handling():
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[0, 0:4] = 1  # 4 pixels of a cup; the rest is void
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[0:2, 0:4] = 1  # the cup plus 4 void pixels: void is left out of the union -> IoU 1
    pred[3, 0:4] = 2  # entirely on void: neither TP nor FP
    result = metrics.panoptic_quality([_panoptic(pred, {1: 0, 2: 0})], [_panoptic(gt, {1: 0})])
    stat = result.per_class[0]
    assert (stat.tp, stat.fp, stat.fn) == (1, 0, 0) and stat.pq == pytest.approx(1.0)


def test_panoptic_quality_rejects_unlisted_segment_ids():
    gt = _panoptic(np.ones((2, 2), dtype=np.int64), {1: 0})
    with pytest.raises(ValueError, match="missing from its segments"):
        metrics.panoptic_quality([_panoptic(np.full((2, 2), 5), {1: 0})], [gt])


SHAPE = (10, 10)
GT1 = box_mask(SHAPE, (0, 4), (0, 4))
GT2 = box_mask(SHAPE, (6, 10), (6, 10))
ELSEWHERE = box_mask(SHAPE, (0, 3), (6, 9))


def test_mask_ap_perfect_predictions():
    predictions = [[metrics.InstancePrediction(GT1, 0, 0.9), metrics.InstancePrediction(GT2, 1, 0.8)], [metrics.InstancePrediction(GT2, 0, 0.5)]]
    truths = [[metrics.InstanceAnnotation(GT1, 0), metrics.InstanceAnnotation(GT2, 1)], [metrics.InstanceAnnotation(GT2, 0)]]
    result = metrics.mask_ap(predictions, truths)
    assert result.ap == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0) and result.ap75 == pytest.approx(1.0)
    assert result.per_class == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}


def test_mask_ap_known_ranking():
    # Scores rank TP, FP, TP: precision 1 up to recall 0.5, then 2/3 up to recall 1.
    predictions = [[metrics.InstancePrediction(GT1, 0, 0.9), metrics.InstancePrediction(ELSEWHERE, 0, 0.8), metrics.InstancePrediction(GT2, 0, 0.7)]]
    truths = [[metrics.InstanceAnnotation(GT1, 0), metrics.InstanceAnnotation(GT2, 0)]]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101  # recall points 0.00..0.50 and 0.51..1.00
    result = metrics.mask_ap(predictions, truths)
    assert result.ap == pytest.approx(expected) and result.ap50 == pytest.approx(expected)


def test_mask_ap_iou_thresholds():
    # IoU 0.6: a match at thresholds 0.50, 0.55, 0.60 only -> AP = 3 / 10.
    gt = box_mask(SHAPE, (0, 10), (0, 5))
    pred = box_mask(SHAPE, (0, 10), (0, 3))
    result = metrics.mask_ap([[metrics.InstancePrediction(pred, 0, 1.0)]], [[metrics.InstanceAnnotation(gt, 0)]])
    assert (result.ap, result.ap50, result.ap75) == (pytest.approx(0.3), pytest.approx(1.0), pytest.approx(0.0))


def test_mask_ap_crowd_and_missing_categories():
    crowd = box_mask(SHAPE, (5, 10), (0, 10))
    predictions = [[metrics.InstancePrediction(GT1, 0, 0.9), metrics.InstancePrediction(GT2, 0, 0.95), metrics.InstancePrediction(GT1, 3, 0.4)]]
    truths = [[metrics.InstanceAnnotation(GT1, 0), metrics.InstanceAnnotation(crowd, 0, iscrowd=True)]]
    result = metrics.mask_ap(predictions, truths)
    # The detection inside the crowd region is ignored (not a false positive); category 3 has
    # no ground truth and is left out of the mean.
    assert result.ap == pytest.approx(1.0)
    assert set(result.per_class) == {0}
    assert (result.precision[..., result.category_ids.index(3)] == -1).all()


def test_mask_ap_caps_detections_per_image():
    predictions = [[metrics.InstancePrediction(ELSEWHERE, 0, 0.9), metrics.InstancePrediction(GT1, 0, 0.5)]]
    truths = [[metrics.InstanceAnnotation(GT1, 0)]]
    assert metrics.mask_ap(predictions, truths, max_detections=1).ap == pytest.approx(0.0)
    assert metrics.mask_ap(predictions, truths).ap == pytest.approx(0.5)


def test_gcg_mask_recall():
    truths = [[metrics.GroundedPhrase("a red cup", GT1), metrics.GroundedPhrase("the blue bowl", GT2)], [metrics.GroundedPhrase("the table", GT2)]]
    predictions = [
        [metrics.GroundedPhrase("The red cup.", GT1), metrics.GroundedPhrase("a blue bowl", ELSEWHERE)],  # 1 of 2: wrong mask
        [metrics.GroundedPhrase("a green table", GT2)],  # right mask, other phrase
    ]
    result = metrics.gcg_mask_recall(predictions, truths)
    assert (result.matched, result.total) == (1, 3)
    assert result.recall == pytest.approx(1 / 3)
    assert result.mean_matched_iou == pytest.approx(1.0)
    assert metrics.normalise_phrase("An Orange ball!") == "orange ball"


def test_gcg_matching_is_one_to_one():
    truths = [[metrics.GroundedPhrase("cup", GT1), metrics.GroundedPhrase("cup", GT1)]]
    predictions = [[metrics.GroundedPhrase("cup", GT1)]]
    assert metrics.gcg_mask_recall(predictions, truths).matched == 1
