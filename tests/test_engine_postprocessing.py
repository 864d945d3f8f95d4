"""Post-processing on hand-made logits: every task's selection rule gives the expected answer."""

from __future__ import annotations

import numpy as np
import torch

from xsam_engine import postprocessing
from xsam_engine.postprocessing import ImageGeometry

GEOMETRY = ImageGeometry(input_size=16, scaled_size=(16, 16), original_size=(16, 16))
BIG = 20.0


def square_logits(*boxes: tuple[int, int, int, int], size: int = 16) -> torch.Tensor:
    """One mask logit map per (x0, y0, x1, y1) box: +BIG inside, -BIG outside."""
    logits = torch.full((len(boxes), size, size), -BIG)
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        logits[index, y0:y1, x0:x1] = BIG
    return logits


def class_logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_referring_takes_the_query_most_likely_for_the_phrase() -> None:
    masks = square_logits((0, 0, 4, 4), (8, 8, 12, 12))
    logits = class_logits([[0.0, 2.0], [5.0, 0.0]])  # query 1 is the phrase
    [instance] = postprocessing.referring(logits, masks, GEOMETRY, ("red cup",))
    assert instance.box_xyxy == (8, 8, 12, 12) and instance.label == "red cup"
    assert abs(instance.score - torch.softmax(torch.tensor([5.0, 0.0]), 0)[0].item()) < 1e-6


def test_instance_threshold_drops_unlikely_queries_and_sorts_by_score() -> None:
    masks = square_logits((0, 0, 4, 4), (8, 8, 12, 12), (0, 8, 4, 12))
    logits = class_logits([[6.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
    instances = postprocessing.instance(logits, masks, GEOMETRY, ("cup", "bowl"), score_threshold=0.5)
    assert [i.label for i in instances] == ["cup", "bowl"]
    assert instances[0].score > instances[1].score
    assert all(i.box_xyxy != (0, 8, 4, 12) for i in instances)  # the background-like query is gone


def test_interactive_picks_the_mask_whose_box_matches_the_prompt() -> None:
    masks = square_logits((0, 0, 8, 8), (9, 9, 13, 13))
    logits = class_logits([[4.0, 0.0], [3.0, 0.0]])
    prompt = np.zeros((16, 16), bool)
    prompt[9:13, 9:13] = True
    [instance] = postprocessing.interactive(logits, masks, GEOMETRY, ("region 0",), prompt, score_threshold=0.5)
    assert instance.box_xyxy == (9, 9, 13, 13)


def test_interactive_keeps_the_best_mask_even_below_threshold() -> None:
    masks = square_logits((0, 0, 8, 8))
    [instance] = postprocessing.interactive(
        class_logits([[-1.0, 1.0]]), masks, GEOMETRY, ("region 0",), np.ones((16, 16), bool), score_threshold=0.9
    )
    assert instance.score < 0.9


def test_semantic_assigns_each_pixel_its_most_likely_class() -> None:
    masks = square_logits((0, 0, 8, 16), (8, 0, 16, 16))
    logits = class_logits([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    semantic = postprocessing.semantic(logits, masks, GEOMETRY)
    assert (semantic[:, :8] == 0).all() and (semantic[:, 8:] == 1).all()


def test_panoptic_merges_stuff_segments_and_numbers_things() -> None:
    masks = square_logits((0, 0, 4, 4), (0, 8, 16, 12), (0, 12, 16, 16))
    logits = class_logits([[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 6.0, 0.0]])
    segment_map, instances = postprocessing.panoptic(
        logits, masks, GEOMETRY, ("cup", "table"), stuff_labels=frozenset({1}), score_threshold=0.5
    )
    assert [i.label for i in instances] == ["cup", "table"]
    assert (segment_map[8:16] == 2).all()  # both table queries merged into segment 2
    assert (segment_map[0:4, 0:4] == 1).all() and (segment_map[4:8] == 0).all()


def test_gcg_later_phrases_overwrite_earlier_ones() -> None:
    masks = square_logits((0, 0, 8, 8), (4, 4, 12, 12))
    logits = class_logits([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    first, second = postprocessing.grounded_phrases(logits, masks, GEOMETRY, ("a cup", "a bowl"))
    assert second.mask[4:12, 4:12].all() and not first.mask[4:8, 4:8].any()


def test_upsampling_crops_the_padding_before_resizing_to_the_original() -> None:
    geometry = ImageGeometry(input_size=16, scaled_size=(8, 16), original_size=(40, 80))
    logits = torch.full((1, 16, 16), -BIG)
    logits[0, :8, :8] = BIG  # left half of the image part (rows 0..7 are the image, 8.. padding)
    upsampled = postprocessing.upsample_masks(logits, geometry)[0] > 0
    assert upsampled.shape == (40, 80)
    assert upsampled[:, :38].all() and not upsampled[:, 42:].any()
