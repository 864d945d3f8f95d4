"""Task samples: every task on many scenes, unique expressions, prompts on their objects."""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine.prompts import (
    GCG_ANSWER_ENDINGS,
    GENERIC_ANSWERS,
    PHRASE_START,
    SEG_ANSWERS,
    SEG_TOKEN,
    question_for,
)
from xsam_engine.requests import PromptKind, Task
from xsam_engine.tabletop import (
    ALL_CLASSES,
    CLASSES,
    describe_object,
    generate_scene,
    parse_expression,
    resolve_expression,
    resolve_reasoning,
    sample_all_tasks,
    sample_task,
)
from xsam_engine.visual_prompts import rasterise_prompt

NUM_SCENES = 50
# Only these tasks may be impossible on a scene (no object can be singled out).
MAY_BE_NONE = {Task.REFERRING, Task.REASONING, Task.GCG}


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed) for seed in range(NUM_SCENES)]


@pytest.fixture(scope="module")
def samples(scenes):
    """(scene, sample) for every task on every scene."""
    rng = np.random.default_rng(0)
    pairs = []
    for scene in scenes:
        for task in Task:
            sample = sample_task(scene, task, rng)
            if sample is None:
                assert task in MAY_BE_NONE, f"{task} failed on a scene with {len(scene.objects)} objects"
                continue
            pairs.append((scene, sample))
    return pairs


def of_task(samples, task):
    selected = [(scene, sample) for scene, sample in samples if sample.task is task]
    assert len(selected) >= 0.9 * NUM_SCENES, f"{task}: only {len(selected)} of {NUM_SCENES} scenes gave a sample"
    return selected


def test_every_sample_is_well_formed(samples):
    for scene, sample in samples:
        assert sample.request.task is sample.task
        assert len(sample.target_masks) == len(sample.target_labels) == len(sample.instance_ids)
        for mask, label in zip(sample.target_masks, sample.target_labels):
            assert mask.dtype == bool and mask.shape == scene.instance_map.shape and mask.any()
            assert 0 <= label < len(sample.labels)
        assert sample.answer.count(SEG_TOKEN) == 1, sample.answer
        conditions = sample.question.count(PHRASE_START) + sample.answer.count(PHRASE_START)
        assert conditions == len(sample.labels), (sample.question, sample.answer, sample.labels)


def test_referring_expressions_are_unique(samples):
    for scene, sample in of_task(samples, Task.REFERRING):
        text = sample.request.text
        assert text == text.lower() and parse_expression(text) is not None
        assert resolve_expression(scene, text) == sample.instance_ids, text
        target = scene.object(sample.instance_ids[0])
        assert target.category in text
        np.testing.assert_array_equal(sample.target_masks[0], scene.mask(target.instance_id))
        assert sample.question.count(f"<p>{text}</p>") == 1
        assert sample.answer in SEG_ANSWERS


def test_referring_favours_bare_colour_category_phrases(samples):
    texts = [sample.request.text for _, sample in of_task(samples, Task.REFERRING)]
    plain = [t for t in texts if len(t.removeprefix("the ").removeprefix("a ").split()) <= 2]
    assert len(plain) >= 0.4 * len(texts)


def test_resolver_reads_the_grammar():
    scene = generate_scene(0, include=[("cup", "red")])
    cups = [obj.instance_id for obj in scene.objects if obj.category == "cup"]
    assert resolve_expression(scene, "The cup!") == cups
    assert resolve_expression(scene, "grasp the zebra") == []
    for obj in scene.objects:
        description = describe_object(scene, obj.instance_id)
        if description is not None:
            assert resolve_expression(scene, description) == [obj.instance_id]


def test_reasoning_sentences_have_one_referent(samples):
    for scene, sample in of_task(samples, Task.REASONING):
        assert resolve_reasoning(scene, sample.request.text) == sample.instance_ids, sample.request.text
        assert sample.answer.endswith(SEG_ANSWERS) and sample.answer.count(".") >= 1
        if sample.explanation:
            assert sample.answer.startswith(sample.explanation)


def test_semantic_targets_partition_the_image(samples):
    for scene, sample in of_task(samples, Task.SEMANTIC):
        vocabulary = sample.request.vocabulary
        assert sorted(vocabulary) == sorted(ALL_CLASSES)
        coverage = np.sum(sample.target_masks, axis=0)
        assert (coverage == 1).all()
        for mask, label in zip(sample.target_masks, sample.target_labels):
            class_id = ALL_CLASSES.index(vocabulary[label])
            np.testing.assert_array_equal(mask, scene.semantic_map == class_id)
        assert sample.target_labels == sorted(sample.target_labels)
        np.testing.assert_array_equal(sample.semantic_map >= 0, True)


def test_instance_and_panoptic_targets(samples):
    for scene, sample in of_task(samples, Task.INSTANCE):
        assert sorted(sample.request.vocabulary) == sorted(CLASSES)
        assert sample.instance_ids == [obj.instance_id for obj in scene.objects]
        for label, instance_id in zip(sample.target_labels, sample.instance_ids):
            assert sample.request.vocabulary[label] == scene.object(instance_id).category
    for scene, sample in of_task(samples, Task.PANOPTIC):
        assert sample.request.stuff_vocabulary == ("table",)
        assert (sample.panoptic_map > 0).all()
        assert len(sample.segments) == len(sample.target_masks)
        for segment, mask, label in zip(sample.segments, sample.target_masks, sample.target_labels):
            np.testing.assert_array_equal(sample.panoptic_map == segment["id"], mask)
            assert segment["category_id"] == label
            assert segment["isthing"] == (sample.request.vocabulary[label] != "table")


def test_open_vocabulary_lists_present_and_absent_classes(samples):
    saw_absent = False
    for scene, sample in of_task(samples, Task.OPEN_VOCABULARY):
        vocabulary = sample.request.vocabulary
        present = {obj.category for obj in scene.objects}
        assert set(vocabulary) & present
        saw_absent |= bool(set(vocabulary) - present)
        expected = [obj.instance_id for obj in scene.objects if obj.category in vocabulary]
        assert sample.instance_ids == expected
    assert saw_absent


def test_interactive_prompts_lie_on_their_object(scenes):
    rng = np.random.default_rng(1)
    for scene in scenes[:25]:
        for kind in PromptKind:
            sample = sample_task(scene, Task.INTERACTIVE, rng, prompt_kind=kind)
            (region,) = sample.request.regions
            target = sample.target_masks[0]
            prompt_mask = rasterise_prompt(region, scene.height, scene.width)
            np.testing.assert_array_equal(prompt_mask, sample.prompt_masks[0])
            assert sample.labels == ("region 0",) and sample.target_labels == [0]
            if kind is PromptKind.POINT:
                x, y = region.points[0]
                assert target[int(y), int(x)], "click centre off the object"
                assert prompt_mask.sum() <= 317  # at most the whole radius-10 disc
            elif kind is PromptKind.BOX:
                x0, y0, x1, y1 = scene.object(sample.instance_ids[0]).box_xyxy
                bx0, by0, bx1, by1 = region.box
                overlap = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
                union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - overlap
                assert overlap / union > 0.65
                assert (prompt_mask & target).sum() >= 0.75 * target.sum()
            elif kind is PromptKind.SCRIBBLE:
                assert (prompt_mask & target).sum() >= 0.6 * prompt_mask.sum()
            else:
                iou = (prompt_mask & target).sum() / (prompt_mask | target).sum()
                assert iou > 0.8


def test_vgd_targets_every_instance_of_the_prompted_class(samples):
    for scene, sample in of_task(samples, Task.VGD):
        num_regions = len(sample.request.regions)
        assert 1 <= num_regions <= 3 and len(sample.prompt_masks) == num_regions
        assert sample.labels == tuple(f"region {i}" for i in range(num_regions))
        for region_index, prompt_mask in enumerate(sample.prompt_masks):
            ids = [i for i, label in zip(sample.instance_ids, sample.target_labels) if label == region_index]
            prompted = max(ids, key=lambda i: (prompt_mask & scene.mask(i)).sum())
            category = scene.object(prompted).category
            assert ids == [o.instance_id for o in scene.objects if o.category == category]
        assert sample.answer in GENERIC_ANSWERS


def test_gcg_captions_ground_every_phrase(samples):
    for scene, sample in of_task(samples, Task.GCG):
        assert sample.answer.endswith(GCG_ANSWER_ENDINGS)
        assert len(sample.phrases) == sample.answer.count(PHRASE_START) == len(sample.target_masks)
        assert sample.target_labels == list(range(len(sample.phrases)))
        for phrase, instance_id, mask in zip(sample.phrases, sample.instance_ids, sample.target_masks):
            assert f"<p>{phrase}</p>" in sample.answer
            np.testing.assert_array_equal(mask, scene.mask(instance_id))
            if instance_id:
                assert resolve_expression(scene, phrase) == [instance_id], phrase
            else:
                assert phrase.endswith("table")


def test_fixed_template_index_uses_that_template(scenes):
    scene = scenes[0]
    for task in Task:
        sample = sample_task(scene, task, np.random.default_rng(0), template_index=0)
        if sample is None:
            continue
        request = sample.request
        expected = question_for(task, request.text, request.vocabulary, len(request.regions), template_index=0)
        assert sample.question == expected
        if task is Task.GCG:
            assert sample.answer.endswith(" " + GCG_ANSWER_ENDINGS[0])
        else:
            assert sample.answer == SEG_ANSWERS[0] == GENERIC_ANSWERS[0]


def test_samples_are_deterministic(scenes):
    first = sample_all_tasks(scenes[3], np.random.default_rng(5))
    second = sample_all_tasks(scenes[3], np.random.default_rng(5))
    assert [(s.task, s.question, s.answer, s.target_labels) for s in first] == [
        (s.task, s.question, s.answer, s.target_labels) for s in second
    ]
    assert {s.task for s in first} >= set(Task) - MAY_BE_NONE
