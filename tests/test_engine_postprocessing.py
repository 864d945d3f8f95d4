"""Post-processing on hand-made logits: each task's rule gives the value the official X-SAM rule gives.

Official rules: github wanghao9610/X-SAM, branch AAAI26_Archive,
xsam/xsam/dataset/process_fns/postprocess_fns/{refseg,genseg,intseg,gcgseg}_process_fn.py and
xsam/xsam/dataset/utils/process.py (compute_segments, check_segment_validity,
sem_seg_postprocess). Each test states how its expected value follows from the rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xsam_engine import postprocessing
from xsam_engine.postprocessing import ImageGeometry
from xsam_engine.requests import Task, Thresholds

GEOMETRY = ImageGeometry(input_size=16, scaled_size=(16, 16), original_size=(16, 16))
BIG = 20.0


def thresholds(score: float = 0.5, mask: float = 0.5, overlap: float = 0.8) -> Thresholds:
    return Thresholds(score=score, mask=mask, overlap=overlap)


def square_logits(*boxes: tuple[int, int, int, int], size: int = 16, inside: float = BIG) -> torch.Tensor:
    """One mask logit map per (x0, y0, x1, y1) box: `inside` inside, -BIG outside."""
    logits = torch.full((len(boxes), size, size), -BIG)
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        logits[index, y0:y1, x0:x1] = inside
    return logits


def class_logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def logit_for(probability: float) -> float:
    """Class logit against a background logit of 0 that gives `probability` with one class (C = 1)."""
    return math.log(probability / (1.0 - probability))


# -- referring / reasoning --------------------------------------------------------------------------


def test_referring_takes_the_query_most_likely_for_the_phrase() -> None:
    masks = square_logits((0, 0, 4, 4), (8, 8, 12, 12))
    logits = class_logits([[0.0, 2.0], [5.0, 0.0]])  # query 1 is the phrase
    [instance] = postprocessing.referring(logits, masks, GEOMETRY, ("red cup",), thresholds()).instances
    assert instance.box_xyxy == (8, 8, 12, 12) and instance.label == "red cup"
    # score = softmax([5, 0])[0] = 1 / (1 + e^-5) = 0.99331
    assert instance.score == pytest.approx(0.993307, abs=1e-6)


def test_referring_below_the_score_threshold_is_not_found_and_zero_reproduces_the_official_rule() -> None:
    """Best query probability 0.18 (logit ln(0.18 / 0.82) against background 0)."""
    masks = square_logits((0, 0, 16, 16))
    logits = class_logits([[logit_for(0.18), 0.0]])
    absent = postprocessing.referring(logits, masks, GEOMETRY, ("green bottle",), thresholds(score=0.5))
    assert absent.instances == [] and absent.message == "not found: best score 0.18 < 0.50"
    absent = postprocessing.referring(logits, masks, GEOMETRY, ("green bottle",), thresholds(score=0.99))
    assert absent.instances == [] and absent.message == "not found: best score 0.18 < 0.99"
    near = postprocessing.referring(logits, masks, GEOMETRY, ("green bottle",), thresholds(score=0.1805))
    assert near.message == "not found: best score 0.1800 < 0.1805"  # never "0.18 < 0.18"
    # The official refseg post-processing ignores the threshold: always the best mask (threshold 0).
    [instance] = postprocessing.referring(logits, masks, GEOMETRY, ("green bottle",), thresholds(score=0.0)).instances
    assert instance.area == 256 and instance.score == pytest.approx(0.18, abs=1e-6)


def test_referring_mask_threshold_reaches_the_mask() -> None:
    """Mask logit 0.5 -> sigmoid 0.6225: inside at mask threshold 0.5, empty (not found) at 0.7."""
    masks = square_logits((0, 0, 8, 8), inside=0.5)
    logits = class_logits([[5.0, 0.0]])
    [instance] = postprocessing.referring(logits, masks, GEOMETRY, ("cup",), thresholds(mask=0.5)).instances
    assert instance.area == 64
    empty = postprocessing.referring(logits, masks, GEOMETRY, ("cup",), thresholds(mask=0.7))
    assert empty.instances == [] and empty.message.startswith("not found: the best mask (score 0.99) has no pixel")


# -- instance / open-vocabulary / VGD --------------------------------------------------------------------


def test_instance_threshold_drops_unlikely_pairs_and_sorts_by_score() -> None:
    masks = square_logits((0, 0, 4, 4), (8, 8, 12, 12), (0, 8, 4, 12))
    logits = class_logits([[6.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
    instances = postprocessing.instance(logits, masks, GEOMETRY, ("cup", "bowl"), thresholds()).instances
    # cup: softmax([6,0,0])[0] = e^6 / (e^6 + 2) = 0.99505; bowl: softmax([0,3,0])[1] = e^3 / (e^3 + 2)
    # = 0.90944 (times a mask score of sigmoid(20) = 1); query 2 is background for both classes.
    assert [i.label for i in instances] == ["cup", "bowl"]
    assert [round(i.score, 4) for i in instances] == [0.9951, 0.9094]


def test_instance_keeps_empty_mask_pairs_only_at_threshold_zero() -> None:
    """Official `instances` keep = score >= threshold; an empty mask scores 0 (0 / (0 + 1e-6))."""
    masks = torch.cat([square_logits((0, 0, 4, 4)), torch.full((1, 16, 16), -BIG)])
    logits = class_logits([[6.0, 0.0], [6.0, 0.0]])
    at_zero = postprocessing.instance(logits, masks, GEOMETRY, ("cup",), thresholds(score=0.0)).instances
    assert [i.area for i in at_zero] == [16, 0] and at_zero[1].score == 0.0 and at_zero[1].box_xyxy == (0, 0, 0, 0)
    at_half = postprocessing.instance(logits, masks, GEOMETRY, ("cup",), thresholds(score=0.5)).instances
    assert [i.area for i in at_half] == [16]


def test_instance_mask_threshold_and_score_are_class_times_mean_mask_probability() -> None:
    """Inside logit 1.0 -> sigmoid 0.73106; class softmax([6, 0])[0] = 0.99753; score = 0.72925. Mask threshold 0.8
    empties the mask (score 0), so nothing passes threshold 0.5."""
    masks = square_logits((0, 0, 4, 4), inside=1.0)
    logits = class_logits([[6.0, 0.0]])
    [instance] = postprocessing.instance(logits, masks, GEOMETRY, ("cup",), thresholds()).instances
    assert instance.score == pytest.approx(0.99753 * 0.73106, abs=1e-5)
    assert postprocessing.instance(logits, masks, GEOMETRY, ("cup",), thresholds(mask=0.8)).instances == []


# -- interactive ----------------------------------------------------------------------------------


def test_interactive_keeps_the_best_final_score_not_the_best_class_probability() -> None:
    """Issue probe. A: class 0.45, mask logit ln(0.6/0.4) inside -> final 0.45 x 0.6 = 0.27;
    B: class 0.40, confident mask -> final 0.40 x 1.0 = 0.40. Threshold 0.5: nothing reaches it, so
    the official rule keeps the single best by final score: B (the old rule kept A)."""
    masks = torch.cat([square_logits((0, 0, 8, 8), inside=logit_for(0.6)), square_logits((8, 8, 16, 16))])
    logits = class_logits([[logit_for(0.45), 0.0], [logit_for(0.40), 0.0]])
    prompt = np.zeros((16, 16), bool)
    prompt[4:12, 4:12] = True  # overlaps both boxes equally
    [instance] = postprocessing.interactive(logits, masks, GEOMETRY, ("region 0",), prompt, thresholds()).instances
    assert instance.box_xyxy == (8, 8, 16, 16)
    assert instance.score == pytest.approx(0.40, abs=1e-5)


def test_interactive_picks_among_kept_candidates_the_box_that_matches_the_prompt() -> None:
    """Both finals (0.98, 0.95) reach 0.5, so both are kept; the prompt box equals B's box (IoU 1)."""
    masks = square_logits((0, 0, 8, 8), (9, 9, 13, 13))
    logits = class_logits([[4.0, 0.0], [3.0, 0.0]])
    prompt = np.zeros((16, 16), bool)
    prompt[9:13, 9:13] = True
    [instance] = postprocessing.interactive(logits, masks, GEOMETRY, ("region 0",), prompt, thresholds()).instances
    assert instance.box_xyxy == (9, 9, 13, 13)


def test_interactive_keeps_the_best_mask_even_below_threshold() -> None:
    masks = square_logits((0, 0, 8, 8))
    [instance] = postprocessing.interactive(
        class_logits([[-1.0, 1.0]]), masks, GEOMETRY, ("region 0",), np.ones((16, 16), bool), thresholds(0.9)
    ).instances
    assert instance.score == pytest.approx(1 / (1 + math.e**2), abs=1e-5)  # softmax([-1, 1])[0] = 0.1192


# -- semantic ---------------------------------------------------------------------------------


def test_semantic_combines_at_input_resolution_before_resizing() -> None:
    """Issue probe (2x2 -> 1x10). Query 0 is class A (p ~ 1) with mask logits [10, -10] per row,
    query 1 class B with [1, 1]. Bilinear 2 -> 10 columns (align_corners=False) samples column
    t = clamp(0.2 j - 0.4, 0, 1) = 0, 0, 0, .2, .4, .6, .8, 1, 1, 1 between the two source columns.
    Official (sigmoid and combine at 2x2, then resize): A = 1 - t, B = sigmoid(1) = 0.731, so A wins
    while t < 0.269: columns 0..3. Resizing logits first would give A = sigmoid(10 - 20 t), winning
    while t < 0.45: columns 0..4 (one pixel of ten differs)."""
    geometry = ImageGeometry(input_size=2, scaled_size=(2, 2), original_size=(1, 10))
    masks = torch.tensor([[[10.0, -10.0], [10.0, -10.0]], [[1.0, 1.0], [1.0, 1.0]]])
    logits = class_logits([[BIG, 0.0, 0.0], [0.0, BIG, 0.0]])
    processed = postprocessing.semantic(logits, masks, geometry, ("a", "b"), thresholds(score=0.0))
    assert processed.semantic_map.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]
    assert [(i.label, i.area) for i in processed.instances] == [("a", 4), ("b", 6)]


def test_semantic_classes_below_the_score_threshold_are_void() -> None:
    """Class b's best query has probability softmax([0, 0.5, 0])[1] = 0.4519 < 0.5: its half is void."""
    masks = square_logits((0, 0, 8, 16), (8, 0, 16, 16))
    logits = class_logits([[5.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    processed = postprocessing.semantic(logits, masks, GEOMETRY, ("a", "b"), thresholds())
    assert (processed.semantic_map[:, :8] == 0).all() and (processed.semantic_map[:, 8:] == -1).all()
    assert [i.label for i in processed.instances] == ["a"]
    assert processed.message == "void where the class scores below score_threshold: b best score 0.45 < 0.50"


# -- panoptic ---------------------------------------------------------------------------------


def test_panoptic_mask_threshold_reaches_the_validity_test() -> None:
    """Issue probe: 1 query, class probability 0.45, mask logit +5 on an 8x8 map, thresholds 0.2 / 0.2.
    Kept (0.45 > 0.2); weighted mask = 0.45 x sigmoid(5) = 0.447 >= 0.2 everywhere, so its own
    area is 64, it wins all 64 pixels, 64 / 64 = 1 > 0.8: one segment of all 64 pixels."""
    geometry = ImageGeometry(input_size=8, scaled_size=(8, 8), original_size=(8, 8))
    masks = torch.full((1, 8, 8), 5.0)
    logits = class_logits([[logit_for(0.45), 0.0]])
    processed = postprocessing.panoptic(logits, masks, geometry, ("cup",), frozenset(), thresholds(0.2, 0.2, 0.8))
    [segment] = processed.instances
    assert segment.area == 64 and (processed.panoptic_map == 1).all()


def test_panoptic_segment_is_every_pixel_the_query_wins() -> None:
    """Issue probe: class probability 0.9, logits +5 on the left half and -5 on the right,
    thresholds 0.5 / 0.5 / 0.8. The only kept query wins all 64 pixels (argmax over one query);
    own area = pixels with 0.9 x sigmoid(logit) >= 0.5 = the left 32; 64 / 32 = 2 > 0.8, so the
    segment is all 64 won pixels (not only the 32 above the mask threshold)."""
    geometry = ImageGeometry(input_size=8, scaled_size=(8, 8), original_size=(8, 8))
    masks = torch.full((1, 8, 8), -5.0)
    masks[0, :, :4] = 5.0
    logits = class_logits([[logit_for(0.9), 0.0]])
    processed = postprocessing.panoptic(logits, masks, geometry, ("cup",), frozenset(), thresholds(0.5, 0.5, 0.8))
    assert [i.area for i in processed.instances] == [64]


def test_panoptic_overlap_threshold_rejects_a_query_that_wins_too_little_of_its_mask() -> None:
    """Query 0 (p = e^4 / (e^4 + 2) = 0.9647) covers columns 0..11, query 1 (p = 0.9867) columns 8..15, both with
    logit +BIG. Where they overlap (columns 8..11) query 1 has the larger weighted mask, so query 0
    wins 8 of its 12 columns: 8/12 = 0.667. Overlap threshold 0.8 rejects it; 0.6 accepts it."""
    masks = square_logits((0, 0, 12, 16), (8, 0, 16, 16))
    logits = class_logits([[4.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    strict = postprocessing.panoptic(logits, masks, GEOMETRY, ("cup", "bowl"), frozenset(), thresholds(overlap=0.8))
    assert [(i.label, i.area) for i in strict.instances] == [("bowl", 128)]
    loose = postprocessing.panoptic(logits, masks, GEOMETRY, ("cup", "bowl"), frozenset(), thresholds(overlap=0.6))
    assert [(i.label, i.area) for i in loose.instances] == [("bowl", 128), ("cup", 128)]


def test_panoptic_orders_segments_by_score_and_merges_stuff() -> None:
    """Query order cup (p = e^4 / (e^4 + 3) = 0.9479), table (e^6 / (e^6 + 3) = 0.9926), table
    (0.9926), bowl (e^5 / (e^5 + 3) = 0.9802): instances come highest score first and the map's
    ids follow that order; the two table queries merge into one stuff segment. Pixels outside
    every mask still belong to the query with the largest weighted mask p x sigmoid(-20): the
    first table query, which stays valid (it wins 64 + 64 + 32 = 160 pixels of its own 64), so
    the table segment is every pixel but the cup's and the bowl's 16."""
    masks = square_logits((0, 0, 4, 4), (0, 8, 16, 12), (0, 12, 16, 16), (8, 0, 12, 4))
    logits = class_logits([[4.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]])
    processed = postprocessing.panoptic(
        logits, masks, GEOMETRY, ("cup", "table", "bowl"), frozenset({1}), thresholds(0.5, 0.5, 0.8)
    )
    assert [i.label for i in processed.instances] == ["table", "bowl", "cup"]
    assert (processed.panoptic_map[8:16] == 1).all()
    assert (processed.panoptic_map[0:4, 8:12] == 2).all()
    assert [i.area for i in processed.instances] == [256 - 32, 16, 16]
    assert (processed.panoptic_map[0:4, 0:4] == 3).all()


# -- GCG ----------------------------------------------------------------------------------------


def test_gcg_later_phrases_overwrite_earlier_ones() -> None:
    masks = square_logits((0, 0, 8, 8), (4, 4, 12, 12))
    logits = class_logits([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    first, second = sorted(
        postprocessing.grounded_phrases(logits, masks, GEOMETRY, ("a cup", "a bowl"), thresholds()).instances,
        key=lambda i: i.class_index)
    assert second.mask[4:12, 4:12].all() and not first.mask[4:8, 4:8].any()


def test_gcg_phrases_below_the_threshold_get_no_mask_and_overwrite_nothing() -> None:
    """Phrase 1's best query has probability softmax([0, 0.2, 0])[1] = 0.3775 < 0.5: left out, so
    phrase 0 keeps its whole mask."""
    masks = square_logits((0, 0, 8, 8), (4, 4, 12, 12))
    logits = class_logits([[5.0, 0.0, 0.0], [0.0, 0.2, 0.0]])
    processed = postprocessing.grounded_phrases(logits, masks, GEOMETRY, ("a cup", "a bowl"), thresholds())
    assert [(i.label, i.area) for i in processed.instances] == [("a cup", 64)]
    assert processed.message == "phrases without a mask: 'a bowl' best score 0.38 < 0.50"


def test_gcg_orders_phrases_by_score() -> None:
    masks = square_logits((0, 0, 4, 4), (8, 8, 12, 12))
    logits = class_logits([[3.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    processed = postprocessing.grounded_phrases(logits, masks, GEOMETRY, ("a cup", "a bowl"), thresholds())
    assert [i.label for i in processed.instances] == ["a bowl", "a cup"]


# -- every task -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(Task))
def test_every_task_orders_by_score_and_a_threshold_of_one_keeps_only_interactive(task: Task) -> None:
    """Three queries, three labels (one for referring / interactive), every mask confident. At
    score threshold 0 instances come out highest score first; at threshold 1.0 nothing scores high
    enough, except interactive, whose official rule always keeps the best candidate."""
    masks = square_logits((0, 0, 4, 4), (6, 6, 10, 10), (12, 12, 16, 16))
    single = task in (Task.REFERRING, Task.REASONING, Task.INTERACTIVE)
    labels = ("x",) if single else ("a", "b", "c")
    rows = [[2.0, 0.0], [4.0, 0.0], [3.0, 0.0]] if single else [
        [2.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]
    prompt = (np.ones((16, 16), bool),)
    everything = postprocessing.postprocess(task, class_logits(rows), masks, GEOMETRY, labels, thresholds(0.0),
                                            prompt_masks=prompt)
    scores = [i.score for i in everything.instances]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 1
    nothing = postprocessing.postprocess(task, class_logits(rows), masks, GEOMETRY, labels, thresholds(1.0),
                                         prompt_masks=prompt)
    assert len(nothing.instances) == (1 if task is Task.INTERACTIVE else 0)


def test_upsampling_crops_the_padding_before_resizing_to_the_original() -> None:
    geometry = ImageGeometry(input_size=16, scaled_size=(8, 16), original_size=(40, 80))
    logits = torch.full((1, 16, 16), -BIG)
    logits[0, :8, :8] = BIG  # left half of the image part (rows 0..7 are the image, 8.. padding)
    upsampled = postprocessing.upsample_masks(logits, geometry)[0] > 0
    assert upsampled.shape == (40, 80)
    assert upsampled[:, :38].all() and not upsampled[:, 42:].any()
