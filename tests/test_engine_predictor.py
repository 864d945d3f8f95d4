"""End-to-end predictor behaviour on a tiny random-weight model: every task, caching, conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_fixtures import TASK_REQUESTS as REQUESTS
from engine_fixtures import VOCABULARY, scene_image, tiny_model_and_tokenizer, tiny_predictor
from xsam_engine import SegmentationRequest, Task, VisualPrompt
from xsam_engine.predictor import XSamPredictor
from xsam_engine.prompts import chat_prompt, question_for, template_answer
from xsam_engine.timing import StageTimer
from xsam_engine.tokenization import add_xsam_tokens, encode_with_placeholders

@pytest.fixture(scope="module")
def predictor() -> XSamPredictor:
    predictor = tiny_predictor()
    predictor.set_image(scene_image())
    return predictor


@pytest.mark.parametrize("task", list(Task))
def test_every_task_runs_end_to_end(predictor: XSamPredictor, task: Task) -> None:
    result = predictor.segment(REQUESTS[task])
    assert result.task is task and result.image_size == (80, 96)
    assert result.condition is not None and result.condition.request == REQUESTS[task]
    for instance in result.instances:
        assert instance.mask.shape == (80, 96) and instance.mask.dtype == bool
        assert 0.0 <= instance.score <= 1.0
        x0, y0, x1, y1 = instance.box_xyxy
        assert instance.mask[y0:y1, x0:x1].sum() == instance.mask.sum()
    if task is Task.SEMANTIC:
        assert result.semantic_map.shape == (80, 96)
        assert set(np.unique(result.semantic_map)) <= {-1, 0, 1, 2}  # -1: classes below the score threshold
        painted = np.zeros((80, 96), bool)
        for instance in result.instances:
            painted |= instance.mask
        assert np.array_equal(painted, result.semantic_map >= 0)
    if task is Task.PANOPTIC:
        assert result.panoptic_map.shape == (80, 96)
        assert result.panoptic_map.max() == len(result.instances)
    if task in (Task.REFERRING, Task.INTERACTIVE):
        assert len(result.instances) <= 1
    assert {"mask_encoder", "pixel_decoder", "llm"} <= set(result.timings)
    if not task.generates_text:  # random weights rarely generate <SEG>: only forced tasks surely decode
        assert result.condition.labels and "decoder" in result.timings


def test_cached_image_gives_the_same_result_as_a_fresh_encode() -> None:
    image = scene_image(seed=3)
    cached = tiny_predictor()
    cached.set_image(image)
    first = cached.segment(REQUESTS[Task.INSTANCE])
    second = cached.segment(REQUESTS[Task.INSTANCE])
    fresh = tiny_predictor()
    fresh.set_image(image)
    third = fresh.segment(REQUESTS[Task.INSTANCE])
    for other in (second, third):
        assert len(other.instances) == len(first.instances)
        for a, b in zip(first.instances, other.instances):
            assert np.array_equal(a.mask, b.mask) and a.score == b.score
    torch.testing.assert_close(first.condition.condition_embeds, third.condition.condition_embeds)


@pytest.mark.parametrize("task", [Task.REFERRING, Task.PANOPTIC, Task.INTERACTIVE, Task.VGD])
def test_reapplying_a_condition_to_the_same_image_equals_a_full_run(predictor: XSamPredictor, task: Task) -> None:
    full = predictor.segment(REQUESTS[task])
    reapplied = predictor.decode(full.condition)
    assert "llm" not in reapplied.timings and "vision_encoder" not in reapplied.timings
    assert [i.label for i in reapplied.instances] == [i.label for i in full.instances]
    for a, b in zip(full.instances, reapplied.instances):
        assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score)
    if task is Task.PANOPTIC:
        assert np.array_equal(full.panoptic_map, reapplied.panoptic_map)


def test_condition_applies_to_a_new_image_without_the_language_model() -> None:
    predictor = tiny_predictor()
    predictor.set_image(scene_image(seed=4))
    condition = predictor.encode_request(REQUESTS[Task.REFERRING])
    predictor.set_image(scene_image(seed=5, width=120, height=90))
    result = predictor.decode(condition)
    assert result.image_size == (90, 120)
    assert "llm" not in result.timings and "vision_encoder" not in result.timings


def test_siglip_runs_only_when_the_language_model_needs_it() -> None:
    predictor = tiny_predictor()
    predictor.set_image(scene_image())
    assert predictor._llm_image_tokens is None
    first = predictor.segment(REQUESTS[Task.REFERRING])
    second = predictor.segment(REQUESTS[Task.INSTANCE])
    assert "vision_encoder" in first.timings and "vision_encoder" not in second.timings


def _overfit_to_template(model, tokenizer, image: np.ndarray, answer: str, steps: int = 60) -> None:
    """Teach the tiny LM to answer `answer` to referring prompts (LM loss only)."""
    special = add_xsam_tokens(tokenizer)
    predictor = XSamPredictor(model, tokenizer)
    optimizer = torch.optim.Adam(model.language_model.parameters(), lr=5e-3)
    answer_ids = tokenizer.encode(answer + "<|end|>", add_special_tokens=False)
    predictor.set_image(image)
    with torch.no_grad():
        image_tokens = predictor._image_tokens(StageTimer())
    model.train()
    for step in range(steps):
        phrase = ("red cup", "blue bowl", "green mug")[step % 3]
        prompt = encode_with_placeholders(tokenizer, chat_prompt(question_for(Task.REFERRING, phrase)))
        sequence = model.language_model.splice(prompt + answer_ids, image_tokens.detach())
        states = model.language_model.llm.model(inputs_embeds=sequence.embeds[None]).last_hidden_state[0]
        targets = torch.tensor(answer_ids)
        logits = model.language_model.llm.lm_head(states[-len(answer_ids) - 1 : -1])
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert special.seg in answer_ids


def test_forced_template_path_equals_generation_when_greedy_answer_is_the_template() -> None:
    model, tokenizer = tiny_model_and_tokenizer(seed=1)
    image = scene_image(seed=6)
    answer = template_answer(Task.REFERRING, 1)  # "It is <SEG>."
    _overfit_to_template(model, tokenizer, image, answer)
    model.config.language.template_index = 1
    predictor = XSamPredictor(model, tokenizer)
    predictor.set_image(image)
    request = SegmentationRequest(Task.REFERRING, text="red cup")
    generated = predictor.segment(SegmentationRequest(Task.REFERRING, text="red cup", generate=True))
    assert generated.text.replace(" ", "").lower() == answer.replace(" ", "").lower()  # greedy answer = template
    forced = predictor.segment(request)
    torch.testing.assert_close(forced.condition.seg_embeds, generated.condition.seg_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(forced.condition.condition_embeds, generated.condition.condition_embeds, atol=1e-5, rtol=1e-4)
    assert len(forced.instances) == len(generated.instances)
    for a, b in zip(forced.instances, generated.instances):
        assert np.array_equal(a.mask, b.mask)


def test_errors_say_what_to_fix() -> None:
    predictor = tiny_predictor()
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.segment(REQUESTS[Task.REFERRING])
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(ValueError):
            predictor.set_image(bad)
    predictor.set_image(scene_image())
    # Requests check themselves when built (tests/test_engine_requests.py); what only the image can
    # tell is checked when segmenting:
    with pytest.raises(ValueError, match="covers no pixel"):
        predictor.segment(SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(5000, 5000),)))
    assert predictor.segment(REQUESTS[Task.REFERRING]).task is Task.REFERRING  # still usable
