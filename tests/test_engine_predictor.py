"""End-to-end predictor behaviour on a tiny random-weight model: every task, caching, conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_fixtures import TASK_REQUESTS as REQUESTS
from engine_fixtures import VOCABULARY, scene_image, tiny_model_and_tokenizer, tiny_predictor
from xsam_engine import SegmentationRequest, Task, VisualPrompt
from xsam_engine.predictor import XSamPredictor
from xsam_engine.prompts import chat_prompt, has_template_answer, question_for, template_answer
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
    if has_template_answer(task):  # random weights rarely generate <SEG>: only forced tasks surely decode
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
        prompt = encode_with_placeholders(
            tokenizer, chat_prompt(question_for(Task.REFERRING, phrase)), add_bos=model.config.language.add_bos
        )
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


def _scene_crop(height: int, width: int) -> np.ndarray:
    """The top-left height x width pixels of a rendered scene (scenes are at least 64x64)."""
    return np.ascontiguousarray(scene_image(width=max(width, 64), height=max(height, 64))[:height, :width])


def _columns_mask(height: int, width: int, columns: list[int]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[:, columns] = True
    return mask


@pytest.mark.parametrize(
    ("height", "width", "column", "expected_columns"),
    [
        # 8x128 -> scaled (4, 64) in the tiny model's 64² input (x 0.5). PIL NEAREST reads source column
        # floor((j + 0.5) * 2) = 2j + 1 for input column j: column 5 becomes input column 2. Back with torch
        # "nearest" (source floor(dst * 64 / 128) = floor(dst / 2)): output columns 4 and 5 read input
        # column 2. Rows: all 8 rows -> all 4 -> all 8. The 1-px box becomes 2 px wide.
        (8, 128, 5, [4, 5]),
        (8, 128, 9, [8, 9]),
        # 40x96 -> scaled (27, 64) (x 2/3). Column 3: input column j reads floor((j + 0.5) * 1.5), so j = 2
        # reads 3; back, output column c reads floor(c * 64 / 96): c = 3 and c = 4 read 2.
        (40, 96, 3, [3, 4]),
        # 16x32 -> scaled (32, 64) (x 2): column 5 becomes input columns 10 and 11; back, output column c
        # reads floor(c * 2), so only c = 5 reads them: upscaling keeps the prompt as drawn.
        (16, 32, 5, [5]),
    ],
)
def test_interactive_prompt_is_matched_after_the_images_resize_round_trip(height, width, column, expected_columns):
    """Official intseg post-processing: `sem_seg_postprocess(vprompt_mask, scaled_size, H, W, mode="nearest")`
    of the model-input prompt; the predictor stores that prompt in `Condition.prompt_masks`."""
    predictor = tiny_predictor()
    predictor.set_image(_scene_crop(height, width))
    box = VisualPrompt.from_box(column, 0, column + 1, height)  # one pixel column, full height
    request = SegmentationRequest(Task.INTERACTIVE, regions=(box,))
    condition = predictor.encode_request(request)
    (seen,) = condition.prompt_masks
    np.testing.assert_array_equal(seen, _columns_mask(height, width, expected_columns))
    result = predictor.decode(condition)
    assert len(result.instances) <= 1 and result.condition.prompt_masks[0] is seen


def test_vgd_prompts_are_stored_after_the_round_trip_too() -> None:
    predictor = tiny_predictor()
    predictor.set_image(_scene_crop(8, 128))
    regions = (VisualPrompt.from_box(5, 0, 6, 8), VisualPrompt.from_box(9, 0, 10, 8))  # see the test above
    condition = predictor.encode_request(SegmentationRequest(Task.VGD, regions=regions, score_threshold=0.0))
    np.testing.assert_array_equal(condition.prompt_masks[0], _columns_mask(8, 128, [4, 5]))
    np.testing.assert_array_equal(condition.prompt_masks[1], _columns_mask(8, 128, [8, 9]))


def test_a_prompt_that_nearest_sampling_would_lose_is_kept_in_its_cell() -> None:
    """Column 4 of a 128-px-wide image resized to 64 px: PIL NEAREST at x 0.5 reads only odd source
    columns, so the official resize would lose it (and X-SAM's sampler would then fail on zero points).
    Ours keeps it in the input cell that contains it: column 4 * 64 // 128 = 2, rows 0..3 of the
    4 x 64 input; back at 8 x 128 (torch nearest, source = floor(dst / 2)) that is columns 4 and 5."""
    predictor = tiny_predictor()
    predictor.set_image(_scene_crop(8, 128))
    request = SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.from_box(4, 0, 5, 8),))
    condition = predictor.encode_request(request)
    (seen,) = condition.prompt_masks
    assert seen.shape == (8, 128) and np.flatnonzero(seen.any(axis=0)).tolist() == [4, 5] and seen[:, 4].all()


@pytest.mark.parametrize("add_bos", [True, False])
def test_prompt_ids_start_with_bos_exactly_when_the_configuration_says_so(add_bos: bool) -> None:
    """X-SAM's `encode_fn` with `next_needs_bos_token=True` (training, evaluation) puts `bos_token_id` before
    the user turn; with False (the official demo) the turn starts directly with `<|user|>`. The tabletop
    tokenizer numbers its tokens like Phi-3's: `<s>` = 1."""
    model, tokenizer = tiny_model_and_tokenizer()
    model.config.language.add_bos = add_bos
    predictor = XSamPredictor(model, tokenizer)
    request = REQUESTS[Task.REFERRING]
    ids = predictor.prompt_ids(request)
    turn = encode_with_placeholders(tokenizer, chat_prompt(question_for(Task.REFERRING, "red cup")))
    user = tokenizer.convert_tokens_to_ids("<|user|>")
    assert tokenizer.bos_token_id == 1 and turn[0] == user
    assert ids == ([1] + turn if add_bos else turn)


def test_bos_reaches_the_language_model() -> None:
    """Same weights, same request: with BOS the LLM sees one more token, so its `<SEG>` state differs."""
    image = scene_image(seed=9)
    embeds = {}
    for add_bos in (True, False):
        model, tokenizer = tiny_model_and_tokenizer()
        model.config.language.add_bos = add_bos
        predictor = XSamPredictor(model, tokenizer)
        predictor.set_image(image)
        embeds[add_bos] = predictor.encode_request(REQUESTS[Task.REFERRING]).seg_embeds
    assert not torch.allclose(embeds[True], embeds[False], atol=1e-4)


def test_shipped_model_keeps_the_prompt_form_it_was_trained_with() -> None:
    predictor = XSamPredictor.from_pretrained()
    assert predictor.model.config.language.add_bos is False  # trained without BOS; config.json states it
    assert predictor.prompt_ids(REQUESTS[Task.REFERRING])[0] == predictor.tokenizer.convert_tokens_to_ids("<|user|>")


class _CallCounter:
    """Counts forward calls of a module through a real forward hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self._handle = module.register_forward_hook(self._count)

    def _count(self, *_: object) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


def _count_llm_calls(predictor: XSamPredictor, request: SegmentationRequest):
    """(result, transformer forward calls, LM-head calls) of one `segment`: the LM head runs once per
    generated token, never on the teacher-forced path."""
    llm = predictor.model.language_model.llm
    forwards, heads = _CallCounter(llm.model), _CallCounter(llm.lm_head)
    try:
        result = predictor.segment(request)
    finally:
        forwards.remove()
        heads.remove()
    return result, forwards.calls, heads.calls


def test_reasoning_is_one_teacher_forced_forward_by_default(predictor: XSamPredictor) -> None:
    """The official ReasonSeg evaluation teacher-forces `<SEG>.`: one LLM forward, zero decode steps, and
    always a `<SEG>`, so the mask decoder always runs (random weights, which rarely generate `<SEG>`, included)."""
    request = SegmentationRequest(Task.REASONING, text="something to drink from")
    result, forwards, heads = _count_llm_calls(predictor, request)
    assert (forwards, heads) == (1, 0)
    assert result.condition.seg_embeds.shape[0] == 1 and result.condition.condition_embeds.shape[0] == 1
    assert result.condition.labels == ("something to drink from",) and result.text == ""
    assert "decoder" in result.timings and "postprocess" in result.timings


@pytest.mark.parametrize("task", [Task.REASONING, Task.REFERRING])
def test_generate_true_still_generates_free_text(predictor: XSamPredictor, task: Task) -> None:
    request = SegmentationRequest(task, text="something to drink from", generate=True, max_new_tokens=4)
    _, forwards, heads = _count_llm_calls(predictor, request)
    # Greedy decoding: one LM head per generated token (1..max_new_tokens); one forward for the prompt
    # and one per fed-back token (the stop token is not fed, a final <SEG> is).
    assert 1 <= heads <= 4 and forwards in (heads, heads + 1)


def test_only_gcg_generates_by_default(predictor: XSamPredictor) -> None:
    assert [task for task in Task if not has_template_answer(task)] == [Task.GCG]
    _, _, heads = _count_llm_calls(predictor, SegmentationRequest(Task.GCG, max_new_tokens=3))
    assert 1 <= heads <= 3
