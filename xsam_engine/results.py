"""Typed results of the engine: instances, dense maps, text, the reusable condition, timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .requests import SegmentationRequest, Task, Thresholds

if TYPE_CHECKING:  # results are read without torch (the ROS conversions); only conditions hold tensors
    import torch


@dataclass(frozen=True, eq=False)
class Instance:
    """One segmented instance in the original image's pixel grid (compared by identity: it holds an array).

    Attributes:
        mask: (H, W) bool.
        label: class name, target phrase, "region <k>" or GCG phrase.
        score: confidence in [0, 1].
        box_xyxy: (x0, y0, x1, y1) in pixels, x1/y1 exclusive; (0, 0, 0, 0) for an empty mask.
        phrase: the prompt text this instance answers.
        class_index: index of the condition it answers (see ``SegmentationResult.labels``).
        instance_id: stable id assigned by a tracker (0 = not assigned).
    """

    mask: np.ndarray
    label: str
    score: float
    box_xyxy: tuple[int, int, int, int]
    phrase: str
    class_index: int
    instance_id: int = 0

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class Condition:
    """What the language model produced for a request, reusable on new frames without the LLM
    (compared by identity: it holds tensors).

    Attributes:
        request: the request it answers.
        condition_embeds: (C, D) projected condition vectors, one per label; the decoder appends
            its learned background ("no object") class.
        seg_embeds: (1, D) projected ``<SEG>`` state.
        labels: C condition names in order (class names, phrases, "region <k>").
        text: the model's answer text (GCG caption, reasoning answer), may be empty.
        prompt_masks: the request's (H, W) visual prompts after the model-input resize round trip
            (interactive / VGD): what the interactive post-processing matches candidates against.
    """

    request: SegmentationRequest
    condition_embeds: torch.Tensor
    seg_embeds: torch.Tensor
    labels: tuple[str, ...]
    text: str = ""
    prompt_masks: tuple[np.ndarray, ...] = ()

    @property
    def task(self) -> Task:
        return self.request.task


@dataclass(eq=False)
class SegmentationResult:
    """Everything one ``segment`` / ``decode`` call returns (compared by identity: it holds arrays).

    Attributes:
        task: the task that ran.
        instances: instances, highest score first (every task).
        labels: condition names; ``Instance.class_index`` indexes them.
        semantic_map: (H, W) int32 class index per pixel, -1 = void (SEMANTIC; also PANOPTIC).
        panoptic_map: (H, W) int32, 0 = void, k = instances[k - 1] (PANOPTIC).
        text: generated text (GCG caption, reasoning answer) or "".
        condition: the reusable condition (None when the request failed before the LLM).
        timings: seconds per stage, e.g. {"mask_encoder": 0.01, "llm": 0.02, ...}.
        image_size: (H, W) of the original image.
        thresholds: the effective thresholds the post-processing applied (None before decoding).
        message: what a caller should know about a successful result, e.g.
            "not found: best score 0.18 < 0.50" when a referring target is absent; "" otherwise.
    """

    task: Task
    instances: list[Instance]
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    semantic_map: np.ndarray | None = None
    panoptic_map: np.ndarray | None = None
    text: str = ""
    condition: Condition | None = None
    timings: dict[str, float] = field(default_factory=dict)
    thresholds: Thresholds | None = None
    message: str = ""
