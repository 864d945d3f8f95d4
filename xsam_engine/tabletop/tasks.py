"""Training and evaluation samples for every X-SAM task, drawn from a tabletop scene.

A ``TaskSample`` holds what a caller would send (``request``), the templated question and
answer the language model sees, and the decoder targets: one mask per target with the index of
the condition it answers (label k = the k-th <p>..</p> condition of the question, in order).

Templates come from ``xsam_engine.prompts``; ``template_index=None`` draws them at random
(training), an int fixes them (evaluation uses 0): the question is ``QUESTIONS[i % len]`` and
the answer ``ANSWERS[i % len]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..prompts import (
    GCG_ANSWER_ENDINGS,
    GCG_QUESTIONS,
    GENERIC_ANSWERS,
    GENERIC_QUESTIONS,
    REASONING_QUESTIONS,
    REFERRING_QUESTIONS,
    REGION_QUESTIONS,
    SEG_ANSWERS,
    question_for,
)
from ..requests import PromptKind, SegmentationRequest, Task, VisualPrompt
from ..visual_prompts import rasterise_prompt
from .captions import sample_caption
from .catalog import ALL_CLASSES, CLASSES, STUFF_CLASSES
from .language import absent_expressions, sample_referring_expression
from .reasoning import sample_reasoning
from .regions import sample_visual_prompt
from .scenes import Scene

MAX_VGD_REGIONS = 3
_EXPLANATION_PROBABILITY = 0.3


@dataclass(eq=False)
class TaskSample:
    """One question about a scene with its answer and decoder targets.

    Attributes:
        task: the X-SAM task.
        request: what a caller would send for this question.
        question: the user question with <p>..</p> spans (``xsam_engine.prompts`` templates).
        answer: the training answer (template answer with <SEG>; GCG: caption + " " + ending).
        target_masks: (H, W) bool per target.
        target_labels: condition index per target mask.
        labels: condition names in prompt order (expression, sentence, vocabulary, "region k", phrases).
        instance_ids: scene instance per target (0 = the table).
        prompt_masks: rasterised visual prompts per region (INTERACTIVE, VGD).
        semantic_map: SEMANTIC / PANOPTIC / OPEN_VOCABULARY: (H, W) int32 vocabulary index per pixel,
            -1 where the pixel's class is not in the vocabulary.
        panoptic_map: PANOPTIC: (H, W) int32 segment id, 0 = void (never, here: every pixel is labelled).
        segments: PANOPTIC: {"id", "category_id" (vocabulary index), "isthing"} per segment of ``panoptic_map``.
        phrases: GCG grounded phrases in order.
        explanation: REASONING: the explanation sentence in ``answer`` ("" if none).
    """

    task: Task
    request: SegmentationRequest
    question: str
    answer: str
    target_masks: list[np.ndarray]
    target_labels: list[int]
    labels: tuple[str, ...]
    instance_ids: list[int]
    prompt_masks: list[np.ndarray] = field(default_factory=list)
    semantic_map: np.ndarray | None = None
    panoptic_map: np.ndarray | None = None
    segments: list[dict] = field(default_factory=list)
    phrases: tuple[str, ...] = ()
    explanation: str = ""


def sample_task(
    scene: Scene,
    task: Task,
    rng: np.random.Generator,
    template_index: int | None = None,
    prompt_kind: PromptKind | None = None,
) -> TaskSample | None:
    """A random sample of ``task`` on ``scene``; None when the scene cannot support it
    (e.g. no object can be singled out by an expression).

    Args:
        scene: the scene.
        task: which task.
        rng: all randomness (target, wording, vocabulary order, prompts) comes from it.
        template_index: None draws question / answer templates; an int fixes them.
        prompt_kind: INTERACTIVE / VGD: the visual prompt kind; None draws one.
    """
    task = Task(task)
    if template_index is not None and template_index < 0:
        raise ValueError(f"template_index must be >= 0 or None, got {template_index}.")
    if not scene.objects:
        return None
    sampler = _SAMPLERS[task]
    return sampler(_Context(scene, rng, template_index, prompt_kind))


def sample_all_tasks(scene: Scene, rng: np.random.Generator, template_index: int | None = None) -> list[TaskSample]:
    """One sample per task (in ``Task`` order), skipping tasks the scene cannot support."""
    samples = [sample_task(scene, task, rng, template_index) for task in Task]
    return [sample for sample in samples if sample is not None]


@dataclass
class _Context:
    scene: Scene
    rng: np.random.Generator
    template_index: int | None
    prompt_kind: PromptKind | None

    @property
    def deterministic(self) -> bool:
        return self.template_index is not None

    def pick(self, options: Sequence[str]) -> tuple[int, str]:
        index = self.template_index if self.deterministic else int(self.rng.integers(len(options)))
        index %= len(options)
        return index, options[index]

    def shuffled_objects(self) -> list[int]:
        return [int(i) + 1 for i in self.rng.permutation(len(self.scene.objects))]


def _referring(ctx: _Context) -> TaskSample | None:
    for instance_id in ctx.shuffled_objects():
        expression = sample_referring_expression(ctx.scene, instance_id, ctx.rng)
        if expression is None:
            continue
        return _referring_sample(ctx, expression, [instance_id])
    return None


def _referring_sample(ctx: _Context, expression: str, instance_ids: list[int]) -> TaskSample:
    """A referring sample for `expression` whose targets are `instance_ids` (none: absent object)."""
    question_index, _ = ctx.pick(REFERRING_QUESTIONS)
    _, answer = ctx.pick(SEG_ANSWERS)
    return TaskSample(
        task=Task.REFERRING,
        request=SegmentationRequest(Task.REFERRING, text=expression),
        question=question_for(Task.REFERRING, text=expression, template_index=question_index),
        answer=answer,
        target_masks=[ctx.scene.mask(i) for i in instance_ids],
        target_labels=[0] * len(instance_ids),
        labels=(expression,),
        instance_ids=list(instance_ids),
    )


def absent_referring_sample(
    scene: Scene, rng: np.random.Generator, template_index: int | None = None
) -> TaskSample | None:
    """A referring command for an object that is not in the scene, with no target.

    The expression is "<colour> <class>" of a class not in the scene, or of a class in the scene
    in a colour none of its objects has (`absent_expressions`, the two kinds the absent-object
    measurement asks; drawn with equal odds). With no target, the set criterion makes every query
    "no object", which teaches the phrase probability to say "absent" (X-SAM's answer template
    stays "<SEG>."; the threshold on that probability gives "not found"). None when the scene
    leaves no absent expression.
    """
    options = absent_expressions(scene, rng)
    if not options:
        return None
    kinds = sorted(options)
    expression = options[kinds[int(rng.integers(len(kinds)))]]
    return _referring_sample(_Context(scene, rng, template_index, None), expression, [])


def _reasoning(ctx: _Context) -> TaskSample | None:
    for instance_id in ctx.shuffled_objects():
        query = sample_reasoning(ctx.scene, instance_id, ctx.rng)
        if query is None:
            continue
        question_index, _ = ctx.pick(REASONING_QUESTIONS)
        _, answer = ctx.pick(SEG_ANSWERS)
        explain = not ctx.deterministic and ctx.rng.random() < _EXPLANATION_PROBABILITY
        return TaskSample(
            task=Task.REASONING,
            request=SegmentationRequest(Task.REASONING, text=query.sentence),
            question=question_for(Task.REASONING, text=query.sentence, template_index=question_index),
            answer=f"{query.explanation} {answer}" if explain else answer,
            target_masks=[ctx.scene.mask(instance_id)],
            target_labels=[0],
            labels=(query.sentence,),
            instance_ids=[instance_id],
            explanation=query.explanation if explain else "",
        )
    return None


def _generic_question(ctx: _Context, task: Task, vocabulary: Sequence[str]) -> tuple[str, str]:
    question_index, _ = ctx.pick(GENERIC_QUESTIONS)
    _, answer = ctx.pick(GENERIC_ANSWERS)
    return question_for(task, vocabulary=vocabulary, template_index=question_index), answer


def _semantic_lookup(vocabulary: Sequence[str]) -> np.ndarray:
    """Class id (``ALL_CLASSES`` order) -> vocabulary index, -1 when not in the vocabulary."""
    return np.array([vocabulary.index(name) if name in vocabulary else -1 for name in ALL_CLASSES], dtype=np.int32)


def _semantic(ctx: _Context) -> TaskSample:
    vocabulary = tuple(ctx.rng.permutation(ALL_CLASSES).tolist())
    semantic_map = _semantic_lookup(vocabulary)[ctx.scene.semantic_map]
    masks, labels = [], []
    for index in range(len(vocabulary)):
        mask = semantic_map == index
        if mask.any():
            masks.append(mask)
            labels.append(index)
    question, answer = _generic_question(ctx, Task.SEMANTIC, vocabulary)
    return TaskSample(
        task=Task.SEMANTIC,
        request=SegmentationRequest(Task.SEMANTIC, vocabulary=vocabulary),
        question=question,
        answer=answer,
        target_masks=masks,
        target_labels=labels,
        labels=vocabulary,
        instance_ids=[0] * len(masks),
        semantic_map=semantic_map,
    )


def _instances_of(ctx: _Context, task: Task, vocabulary: tuple[str, ...], stuff: tuple[str, ...] = ()) -> TaskSample:
    """INSTANCE / OPEN_VOCABULARY / PANOPTIC: one target per object of a listed class (+ stuff)."""
    scene = ctx.scene
    masks, labels, ids = [], [], []
    for obj in scene.objects:
        if obj.category in vocabulary:
            masks.append(scene.mask(obj.instance_id))
            labels.append(vocabulary.index(obj.category))
            ids.append(obj.instance_id)
    for name in stuff:
        mask = scene.semantic_map == ALL_CLASSES.index(name)
        if mask.any():
            masks.append(mask)
            labels.append(vocabulary.index(name))
            ids.append(0)
    question, answer = _generic_question(ctx, task, vocabulary)
    sample = TaskSample(
        task=task,
        request=SegmentationRequest(task, vocabulary=vocabulary, stuff_vocabulary=stuff),
        question=question,
        answer=answer,
        target_masks=masks,
        target_labels=labels,
        labels=vocabulary,
        instance_ids=ids,
    )
    if task in (Task.PANOPTIC, Task.OPEN_VOCABULARY):
        sample.semantic_map = _semantic_lookup(vocabulary)[scene.semantic_map]
    if task is Task.PANOPTIC:
        sample.panoptic_map = np.zeros(scene.instance_map.shape, dtype=np.int32)
        for segment_id, (mask, label, instance_id) in enumerate(zip(masks, labels, ids), start=1):
            sample.panoptic_map[mask] = segment_id
            sample.segments.append({"id": segment_id, "category_id": label, "isthing": instance_id != 0})
    return sample


def _instance(ctx: _Context) -> TaskSample:
    return _instances_of(ctx, Task.INSTANCE, tuple(ctx.rng.permutation(CLASSES).tolist()))


def _panoptic(ctx: _Context) -> TaskSample:
    return _instances_of(ctx, Task.PANOPTIC, tuple(ctx.rng.permutation(ALL_CLASSES).tolist()), STUFF_CLASSES)


def _open_vocabulary(ctx: _Context) -> TaskSample:
    rng = ctx.rng
    present = sorted({obj.category for obj in ctx.scene.objects})
    absent = [name for name in CLASSES if name not in present]
    chosen_present = rng.choice(present, size=int(rng.integers(1, len(present) + 1)), replace=False).tolist()
    chosen_absent = rng.choice(absent, size=int(rng.integers(0, len(absent) + 1)), replace=False).tolist()
    vocabulary = tuple(rng.permutation(chosen_present + chosen_absent).tolist())
    return _instances_of(ctx, Task.OPEN_VOCABULARY, vocabulary)


def _prompt_kind(ctx: _Context) -> PromptKind:
    if ctx.prompt_kind is not None:
        return PromptKind(ctx.prompt_kind)
    kinds = list(PromptKind)
    return kinds[int(ctx.rng.integers(len(kinds)))]


def _region_sample(ctx: _Context, task: Task, prompted: list[int]) -> TaskSample:
    scene = ctx.scene
    kind = _prompt_kind(ctx)
    regions: list[VisualPrompt] = [sample_visual_prompt(scene, instance_id, kind, ctx.rng) for instance_id in prompted]
    prompt_masks = [rasterise_prompt(region, scene.height, scene.width) for region in regions]
    masks, labels, ids = [], [], []
    for region_index, instance_id in enumerate(prompted):
        if task is Task.INTERACTIVE:
            targets = [instance_id]
        else:  # VGD: every instance of the prompted object's class
            category = scene.object(instance_id).category
            targets = [obj.instance_id for obj in scene.objects if obj.category == category]
        for target in targets:
            masks.append(scene.mask(target))
            labels.append(region_index)
            ids.append(target)
    question_index, _ = ctx.pick(REGION_QUESTIONS)
    _, answer = ctx.pick(GENERIC_ANSWERS)
    return TaskSample(
        task=task,
        request=SegmentationRequest(task, regions=tuple(regions)),
        question=question_for(task, num_regions=len(regions), template_index=question_index),
        answer=answer,
        target_masks=masks,
        target_labels=labels,
        labels=tuple(f"region {index}" for index in range(len(regions))),
        instance_ids=ids,
        prompt_masks=prompt_masks,
    )


def _interactive(ctx: _Context) -> TaskSample:
    return _region_sample(ctx, Task.INTERACTIVE, ctx.shuffled_objects()[:1])


def _vgd(ctx: _Context) -> TaskSample:
    """Regions index categories, as in the official VGD data (``vgdseg_dataset.py``: one region per
    sampled category, its prompt drawn from one instance of that category; every instance of the
    category is a target of that region). So no two regions share a category and every object is
    a target of at most one region."""
    prompted, categories = [], set()
    for instance_id in ctx.shuffled_objects():  # the first object drawn of each category
        category = ctx.scene.object(instance_id).category
        if category not in categories:
            categories.add(category)
            prompted.append(instance_id)
    count = int(ctx.rng.integers(1, min(MAX_VGD_REGIONS, len(prompted)) + 1))
    return _region_sample(ctx, Task.VGD, prompted[:count])


def _gcg(ctx: _Context) -> TaskSample | None:
    caption = sample_caption(ctx.scene, ctx.rng, deterministic=ctx.deterministic)
    if caption is None:
        return None
    question_index, _ = ctx.pick(GCG_QUESTIONS)
    _, ending = ctx.pick(GCG_ANSWER_ENDINGS)
    masks = [ctx.scene.mask(instance_id) for instance_id in caption.instance_ids]
    return TaskSample(
        task=Task.GCG,
        request=SegmentationRequest(Task.GCG),
        question=question_for(Task.GCG, template_index=question_index),
        answer=f"{caption.text} {ending}",
        target_masks=masks,
        target_labels=list(range(len(masks))),
        labels=caption.phrases,
        instance_ids=list(caption.instance_ids),
        phrases=caption.phrases,
    )


_SAMPLERS: dict[Task, Callable[[_Context], TaskSample | None]] = {
    Task.REFERRING: _referring,
    Task.REASONING: _reasoning,
    Task.SEMANTIC: _semantic,
    Task.INSTANCE: _instance,
    Task.PANOPTIC: _panoptic,
    Task.OPEN_VOCABULARY: _open_vocabulary,
    Task.INTERACTIVE: _interactive,
    Task.VGD: _vgd,
    Task.GCG: _gcg,
}
