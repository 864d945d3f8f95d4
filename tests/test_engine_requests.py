"""The request contract: a SegmentationRequest checks and normalises itself; thresholds resolve
request -> model configuration, and the model's defaults reach the post-processing of every task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_fixtures import scene_image, tiny_model_and_tokenizer
from xsam_engine.configuration_xsam import XSamConfig, XSamPostProcessConfig
from xsam_engine.predictor import XSamPredictor
from xsam_engine.requests import (
    MAX_REGIONS,
    MAX_TEXT_LENGTH,
    MAX_VOCABULARY,
    PromptKind,
    RequestError,
    SegmentationRequest,
    Task,
    Thresholds,
    VisualPrompt,
)
from xsam_engine.results import Condition, Instance, SegmentationResult

POINT = VisualPrompt.point(10, 10)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SegmentationRequest("segment-all"), "Unknown task 'segment-all'"),
        (lambda: SegmentationRequest(Task.REFERRING, text="  "), "needs a non-empty text"),
        (lambda: SegmentationRequest(Task.REASONING, text=""), "needs a non-empty text"),
        (lambda: SegmentationRequest(Task.REFERRING, text="x" * (MAX_TEXT_LENGTH + 1)), "the limit is 1000"),
        (lambda: SegmentationRequest(Task.INSTANCE), "needs a vocabulary"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary=("cup", " ")), "contains an empty name"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary=("cup", "Cup")), r"the same class more than once: \['cup'\]"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary=("coffee-mug", "coffee mug")), "more than once"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary="cup"), "must be a list of names"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary=("x" * 201,)), "the limit is 200"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary=tuple(f"c{i}" for i in range(MAX_VOCABULARY + 1))),
         "the limit is 256"),
        (lambda: SegmentationRequest(Task.PANOPTIC, vocabulary=tuple(f"c{i}" for i in range(MAX_VOCABULARY)),
                                     stuff_vocabulary=("table",)), "257 names together"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", vocabulary=("cup",)), "takes no vocabulary"),
        (lambda: SegmentationRequest(Task.INSTANCE, vocabulary=("cup",), stuff_vocabulary=("table",)),
         "panoptic requests only"),
        (lambda: SegmentationRequest(Task.INTERACTIVE), "exactly one visual prompt, got 0"),
        (lambda: SegmentationRequest(Task.INTERACTIVE, regions=(POINT, POINT)), "exactly one visual prompt, got 2"),
        (lambda: SegmentationRequest(Task.VGD), "at least one visual prompt"),
        (lambda: SegmentationRequest(Task.VGD, regions=(POINT,) * (MAX_REGIONS + 1)), "the limit is 64"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", regions=(POINT,)), "takes no visual prompts"),
        (lambda: SegmentationRequest(Task.VGD, regions=("a point",)), "must be VisualPrompt objects"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", score_threshold=float("nan")), "finite number"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", score_threshold=1.5), r"score_threshold must be in \[0, 1\]"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", score_threshold=-0.1), r"must be in \[0, 1\]"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", score_threshold=True), "finite number"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", mask_threshold=0.0), r"mask_threshold must be in \(0, 1\)"),
        (lambda: SegmentationRequest(Task.REFERRING, text="cup", mask_threshold=1.0), r"\(0, 1\)"),
        (lambda: SegmentationRequest(Task.PANOPTIC, vocabulary=("cup",), overlap_threshold=2.0), "overlap_threshold"),
        (lambda: SegmentationRequest(Task.GCG, max_new_tokens=0), "max_new_tokens"),
        (lambda: SegmentationRequest(Task.GCG, max_new_tokens=5000), "max_new_tokens"),
        (lambda: VisualPrompt.point(float("nan"), 3), r"point prompt coordinates must be finite, got \[\[nan, 3.0\]\]"),
        (lambda: VisualPrompt.points_with_labels(np.array([[1, 2]]), np.array([0])), "at least one positive"),
        (lambda: VisualPrompt.points_with_labels(np.array([[1, 2], [3, 4]]), np.array([1])), "one label per point"),
        (lambda: VisualPrompt.points_with_labels(np.array([[1, 2]]), np.array([2])), "1 \\(positive\\) or 0"),
        (lambda: VisualPrompt.from_box(5, 5, 5, 9), "x0 < x1 and y0 < y1"),
        (lambda: VisualPrompt.from_box(0, 0, float("inf"), 9), "finite"),
        (lambda: VisualPrompt.scribble(np.zeros((0, 2))), "at least one point"),
        (lambda: VisualPrompt.from_mask(np.zeros((4, 4), bool)), "mask prompt is empty"),
        (lambda: VisualPrompt.from_mask(np.ones(4, bool)), "2-D"),
        (lambda: VisualPrompt("lasso"), "Unknown visual prompt kind"),
    ],
)
def test_a_request_that_cannot_run_is_refused_when_built(build, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        build()


def test_requests_are_normalised() -> None:
    request = SegmentationRequest("referring", text="  the Red cup \n")
    assert request.task is Task.REFERRING and request.text == "the Red cup" and request.labels == ("the Red cup",)
    generic = SegmentationRequest(Task.INSTANCE, vocabulary=[" Coffee-Mug ", "bowl"])
    assert generic.vocabulary == ("Coffee-Mug", "bowl") and generic.labels == ("coffee mug", "bowl")
    # Stuff classes missing from the vocabulary are appended (cleaned names compared), once.
    panoptic = SegmentationRequest(Task.PANOPTIC, vocabulary=("cup", "Table"), stuff_vocabulary=("table", "floor"))
    assert panoptic.vocabulary == ("cup", "Table", "floor")
    assert panoptic.labels == ("cup", "table", "floor") and panoptic.stuff_indices == frozenset({1, 2})
    only_stuff = SegmentationRequest(Task.PANOPTIC, stuff_vocabulary=("table",))
    assert only_stuff.labels == ("table",) and only_stuff.stuff_indices == frozenset({0})
    vgd = SegmentationRequest(Task.VGD, regions=[POINT, VisualPrompt.from_box(0, 0, 4, 4)])
    assert vgd.regions[1].kind is PromptKind.BOX and vgd.labels == ("region 0", "region 1")
    assert SegmentationRequest(Task.GCG).labels == ()


def test_describe_says_what_was_asked() -> None:
    assert SegmentationRequest(Task.REFERRING, text="red cup").describe() == "red cup"
    assert SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(12.4, 8),)).describe() == "click (12, 8)"
    assert SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.from_box(1, 2, 30, 40),)).describe() == \
        "box (1, 2, 30, 40)"
    assert SegmentationRequest(Task.VGD, regions=(POINT, POINT)).describe() == "vgd: 2 visual prompts"
    assert SegmentationRequest(Task.INSTANCE, vocabulary=("cup", "bowl")).describe() == "instance: cup, bowl"


def test_thresholds_come_from_the_request_else_from_the_model_configuration() -> None:
    config = XSamPostProcessConfig(score_threshold=0.4, task_score_thresholds={"referring": 0.3},
                                   mask_threshold=0.45, overlap_threshold=0.7)
    assert config.thresholds_for(Task.REFERRING) == Thresholds(0.3, 0.45, 0.7)
    assert config.thresholds_for(Task.PANOPTIC) == Thresholds(0.4, 0.45, 0.7)
    request = SegmentationRequest(Task.REFERRING, text="cup", mask_threshold=0.6)
    assert request.thresholds(config.thresholds_for(request.task)) == Thresholds(0.3, 0.6, 0.7)
    assert SegmentationRequest(Task.REFERRING, text="cup", score_threshold=0.0).thresholds(
        config.thresholds_for(Task.REFERRING)).score == 0.0
    released = XSamConfig.released().postprocess
    assert all(released.thresholds_for(task) == Thresholds(0.5, 0.5, 0.8) for task in Task)
    with pytest.raises(ValueError, match="unknown task 'refering'"):
        XSamPostProcessConfig(task_score_thresholds={"refering": 0.3})
    with pytest.raises(ValueError, match="mask_threshold"):
        XSamPostProcessConfig(mask_threshold=0.0)
    # Saved with the model: config.json round trip.
    config_copy = XSamConfig.from_dict({**XSamConfig.tiny().to_dict(), "postprocess": {
        "score_threshold": 0.4, "task_score_thresholds": {"referring": 0.3}, "mask_threshold": 0.45,
        "overlap_threshold": 0.7}})
    assert config_copy.postprocess == config


def test_the_model_default_threshold_decides_not_found_and_the_request_overrides_it() -> None:
    """Tiny random model: the best query's phrase probability p is some value in (0, 1); a model
    default above p answers "not found: best score p < default", a request threshold of 0 gives
    the best mask (the official refseg rule), and the result reports the thresholds it used."""
    model, tokenizer = tiny_model_and_tokenizer()
    predictor = XSamPredictor(model, tokenizer)
    predictor.set_image(scene_image())
    best = predictor.segment(SegmentationRequest(Task.REFERRING, text="red cup", score_threshold=0.0))
    [instance] = best.instances
    assert best.message == "" and best.thresholds == Thresholds(0.0, 0.5, 0.8)
    model.config.postprocess = XSamPostProcessConfig(task_score_thresholds={"referring": 0.999})
    absent = predictor.segment(SegmentationRequest(Task.REFERRING, text="red cup"))
    assert absent.instances == [] and absent.thresholds.score == 0.999
    assert absent.message == f"not found: best score {instance.score:.3f} < 0.999"
    again = predictor.decode(absent.condition, score_threshold=0.0)  # tracking overrides, same rule
    assert len(again.instances) == 1 and again.instances[0].score == pytest.approx(instance.score)
    assert predictor.decode(absent.condition).instances == []


def test_value_objects_holding_arrays_compare_by_identity_without_raising() -> None:
    mask = np.ones((2, 2), bool)
    instance = Instance(mask=mask, label="cup", score=0.9, box_xyxy=(0, 0, 2, 2), phrase="cup", class_index=0)
    request = SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.from_mask(mask),))
    condition = Condition(request=request, condition_embeds=torch.zeros(1, 4), seg_embeds=torch.zeros(1, 4),
                          labels=("region 0",))
    result = SegmentationResult(task=Task.INTERACTIVE, instances=[instance], labels=("region 0",), image_size=(2, 2))
    for value in (instance, request.regions[0], condition, result):
        assert value == value and value != type(value).__new__(type(value)) and isinstance(hash(value), int)
    assert request == SegmentationRequest(Task.INTERACTIVE, regions=request.regions)  # same prompt object
    assert hash(request) == hash(SegmentationRequest(Task.INTERACTIVE, regions=request.regions))
