"""Training examples for every task, generated on the fly from tabletop scenes.

Example `i` is a pure function of (base seed, i): the scene seed is `base_seed + i` and the task
and its sample are drawn from a generator seeded the same way, so a resumed run sees exactly
the data an uninterrupted run would have seen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, get_worker_info
from transformers import PreTrainedTokenizerBase

from ..processing import XSamImageProcessor
from ..prompts import ANSWER_SUFFIX, chat_prompt
from ..requests import Task
from ..tabletop.catalog import CLASSES, COLOURS
from ..tabletop.scenes import generate_scene
from ..tabletop.tasks import TaskSample, absent_referring_sample, sample_task
from ..tokenization import encode_with_placeholders
from ..visual_prompts import rasterise_prompt

# How often each task is drawn. Referring, interactive and generic carry the shipped targets.
DEFAULT_TASK_WEIGHTS: dict[Task, float] = {
    Task.REFERRING: 0.25,
    Task.REASONING: 0.07,
    Task.SEMANTIC: 0.04,
    Task.INSTANCE: 0.08,
    Task.PANOPTIC: 0.12,
    Task.OPEN_VOCABULARY: 0.07,
    Task.INTERACTIVE: 0.22,
    Task.VGD: 0.08,
    Task.GCG: 0.07,
}


def parse_task_weights(text: str) -> dict[Task, float] | None:
    """"panoptic=0.2,instance=0.15" -> DEFAULT_TASK_WEIGHTS with those tasks' weights replaced;
    "" -> None (the defaults). Weights are relative (normalised when drawing)."""
    if not text.strip():
        return None
    weights = dict(DEFAULT_TASK_WEIGHTS)
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            task, weight = Task(name.strip()), float(value)
        except ValueError:
            raise ValueError(f"task_weights item {item!r}: use TASK=WEIGHT with a task of {[t.value for t in Task]}.")
        if weight < 0:
            raise ValueError(f"task_weights item {item!r}: the weight must be >= 0.")
        weights[task] = weight
    if sum(weights.values()) <= 0:
        raise ValueError(f"task_weights {text!r}: at least one weight must be positive.")
    return weights


@dataclass(eq=False)
class TrainingExample:
    """One question about a scene, with its targets (the scene's pixels are in `TrainingScene`).

    Attributes:
        input_ids: prompt + answer ids with -200 / -300 placeholders.
        answer_length: number of trailing ids that are the answer (LM loss targets).
        prompt_masks: per visual prompt, (S, S) bool on the padded SAM input.
        target_labels: (T,) condition index per target.
        target_masks: (T, L, L) float, the targets on the padded square at the loss resolution.
        num_conditions: C, the number of <p>...</p> conditions in the sequence.
        task: the task, for logging.
    """

    input_ids: list[int]
    answer_length: int
    prompt_masks: list[torch.Tensor]
    target_labels: torch.Tensor
    target_masks: torch.Tensor
    num_conditions: int
    task: Task


@dataclass(eq=False)
class TrainingScene:
    """One rendered scene: its encoder inputs and several questions about it.

    The expensive image stages run once per scene and serve every question (X-SAM's tasks share
    the image features), which gives several supervised samples per encoder pass.
    """

    sam_pixels: torch.Tensor  # (3, S, S)
    siglip_pixels: torch.Tensor  # (3, s, s)
    examples: list[TrainingExample]


def targets_on_square(masks: Sequence[np.ndarray], scaled_size: tuple[int, int], input_size: int, loss_size: int) -> torch.Tensor:
    """(H, W) bool masks -> (T, L, L) float: resized into the padded square, then area-averaged to L."""
    if not masks:
        return torch.zeros(0, loss_size, loss_size)
    stacked = torch.from_numpy(np.stack(masks)).float()[None]
    resized = F.interpolate(stacked, size=scaled_size, mode="bilinear", align_corners=False)[0]
    square = torch.zeros(len(masks), input_size, input_size)
    square[:, : scaled_size[0], : scaled_size[1]] = resized
    return F.adaptive_avg_pool2d(square[None], loss_size)[0]


def build_example(
    sample: TaskSample,
    image_size: tuple[int, int],
    scaled_size: tuple[int, int],
    processor: XSamImageProcessor,
    tokenizer: PreTrainedTokenizerBase,
    loss_size: int,
    add_bos: bool = True,
) -> TrainingExample:
    """Turn a task sample into model inputs and targets (teacher forcing: answer + `<|end|>`).

    `add_bos` prepends the BOS token as X-SAM's training does; pass the model's
    `XSamLanguageConfig.add_bos` so that training and inference see the same prompt form.
    """
    prompt_ids = encode_with_placeholders(tokenizer, chat_prompt(sample.question), add_bos=add_bos)
    answer_ids = tokenizer.encode(sample.answer + ANSWER_SUFFIX, add_special_tokens=False)
    height, width = image_size
    prompt_masks = [
        processor.prompt_mask(rasterise_prompt(region, height, width), scaled_size) for region in sample.request.regions
    ]
    return TrainingExample(
        input_ids=prompt_ids + answer_ids,
        answer_length=len(answer_ids),
        prompt_masks=prompt_masks,
        target_labels=torch.tensor(sample.target_labels, dtype=torch.long),
        target_masks=targets_on_square(sample.target_masks, scaled_size, processor.sam_size, loss_size),
        num_conditions=sample.question.count("<p>") + sample.answer.count("<p>"),
        task=sample.task,
    )


def build_scene(
    samples: Sequence[TaskSample],
    image: np.ndarray,
    processor: XSamImageProcessor,
    tokenizer: PreTrainedTokenizerBase,
    loss_size: int,
    add_bos: bool = True,
) -> TrainingScene:
    """Encoder inputs of `image` and one `TrainingExample` per sample about it."""
    sam = processor.sam_inputs(image)
    return TrainingScene(
        sam_pixels=sam.pixel_values[0],
        siglip_pixels=processor.siglip_inputs(image)[0],
        examples=[
            build_example(sample, image.shape[:2], sam.scaled_size, processor, tokenizer, loss_size, add_bos)
            for sample in samples
        ],
    )


class TabletopTaskDataset(Dataset):
    """Index -> `TrainingScene` with `tasks_per_scene` different tasks about one freshly
    generated scene (deterministic per index)."""

    def __init__(
        self,
        processor: XSamImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        length: int,
        base_seed: int = 0,
        image_size: int = 256,
        loss_size: int = 128,
        task_weights: dict[Task, float] | None = None,
        add_bos: bool = True,
        tasks_per_scene: int = 1,
        confusable_fraction: float = 0.0,
        absent_fraction: float = 0.0,
    ) -> None:
        self.processor = processor
        self.tokenizer = tokenizer
        self.length = length
        self.base_seed = base_seed
        self.image_size = image_size
        self.loss_size = loss_size
        weights = task_weights or DEFAULT_TASK_WEIGHTS
        self.tasks = list(weights)
        total = sum(weights.values())
        self.probabilities = np.array([weights[task] / total for task in self.tasks])
        self.add_bos = add_bos
        self.tasks_per_scene = tasks_per_scene
        self.confusable_fraction = confusable_fraction
        self.absent_fraction = absent_fraction

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> TrainingScene:
        seed = self.base_seed + index
        rng = np.random.default_rng(seed)
        scene = generate_scene(seed, width=self.image_size, height=self.image_size, include=self._confusables(seed))
        chosen = rng.choice(len(self.tasks), size=self.tasks_per_scene, replace=False, p=self.probabilities)
        samples = []
        for task_index in chosen:
            task = self.tasks[task_index]
            sample = None
            # drawn only when asked for, so runs without negatives keep their data stream
            if task is Task.REFERRING and self.absent_fraction > 0 and rng.random() < self.absent_fraction:
                sample = absent_referring_sample(scene, rng)
            if sample is None:
                sample = sample_task(scene, task, rng)
            if sample is None:  # e.g. no unambiguous expression in this scene: fall back to instance
                sample = sample_task(scene, Task.INSTANCE, rng)
            samples.append(sample)
        return build_scene(samples, scene.image, self.processor, self.tokenizer, self.loss_size, self.add_bos)

    def _confusables(self, seed: int) -> list[tuple[str, str]]:
        """For `confusable_fraction` of the scenes: a "red cup", a "red plate" and a "blue cup".

        Colour alone then no longer singles out an object (nor does category), so referring
        expressions teach category and colour together; without them the model learns colour first.
        """
        rng = np.random.default_rng([seed, 1])  # its own stream: the scene's and the tasks' draws stay as they were
        if rng.random() >= self.confusable_fraction:
            return []
        first, second = (str(c) for c in rng.choice(CLASSES, size=2, replace=False))
        colour, other = (str(c) for c in rng.choice(sorted(COLOURS), size=2, replace=False))
        return [(first, colour), (second, colour), (first, other)]


def collate(scenes: list[TrainingScene]) -> dict:
    """Stack the scenes' pixels; flatten their examples, each with the index of its scene.

    In a DataLoader worker the batch also carries "worker_cpu": (worker id, the worker process's
    CPU seconds so far), so the trainer can count the data generation's CPU time.
    """
    examples = [example for scene in scenes for example in scene.examples]
    image_index = [index for index, scene in enumerate(scenes) for _ in scene.examples]
    batch = {
        "sam_pixels": torch.stack([scene.sam_pixels for scene in scenes]),
        "siglip_pixels": torch.stack([scene.siglip_pixels for scene in scenes]),
        "examples": examples,
        "image_index": image_index,
    }
    worker = get_worker_info()
    if worker is not None:
        batch["worker_cpu"] = (worker.id, time.process_time())
    return batch
