"""What a caller asks the engine for: the task, its text and its visual prompts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Task(str, enum.Enum):
    """The X-SAM tasks. Values are the names used on the command line and in configs."""

    REFERRING = "referring"
    REASONING = "reasoning"
    SEMANTIC = "semantic"
    INSTANCE = "instance"
    PANOPTIC = "panoptic"
    OPEN_VOCABULARY = "open_vocabulary"
    INTERACTIVE = "interactive"
    VGD = "vgd"
    GCG = "gcg"

    @property
    def is_generic(self) -> bool:
        return self in (Task.SEMANTIC, Task.INSTANCE, Task.PANOPTIC, Task.OPEN_VOCABULARY)

    @property
    def uses_regions(self) -> bool:
        return self in (Task.INTERACTIVE, Task.VGD)

    @property
    def generates_text(self) -> bool:
        """Tasks whose answer is free text, so the language model must generate."""
        return self in (Task.REASONING, Task.GCG)


class PromptKind(str, enum.Enum):
    POINT = "point"
    BOX = "box"
    SCRIBBLE = "scribble"
    MASK = "mask"


@dataclass(frozen=True)
class VisualPrompt:
    """One visual prompt (one region) in pixels of the original image.

    Exactly the field matching ``kind`` is set:
      - POINT: ``points`` (N, 2) float (x, y) and ``point_labels`` (N,) int, 1 = positive, 0 = negative.
      - BOX: ``box`` (x0, y0, x1, y1).
      - SCRIBBLE: ``points`` (N, 2) float polyline (x, y).
      - MASK: ``mask`` (H, W) bool, the original image size.
    """

    kind: PromptKind
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    @staticmethod
    def point(x: float, y: float, positive: bool = True) -> "VisualPrompt":
        return VisualPrompt(
            PromptKind.POINT,
            points=np.array([[x, y]], dtype=np.float32),
            point_labels=np.array([1 if positive else 0], dtype=np.int64),
        )

    @staticmethod
    def points_with_labels(points: np.ndarray, labels: np.ndarray) -> "VisualPrompt":
        return VisualPrompt(
            PromptKind.POINT,
            points=np.asarray(points, dtype=np.float32).reshape(-1, 2),
            point_labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        )

    @staticmethod
    def from_box(x0: float, y0: float, x1: float, y1: float) -> "VisualPrompt":
        return VisualPrompt(PromptKind.BOX, box=(float(x0), float(y0), float(x1), float(y1)))

    @staticmethod
    def scribble(points: np.ndarray) -> "VisualPrompt":
        return VisualPrompt(PromptKind.SCRIBBLE, points=np.asarray(points, dtype=np.float32).reshape(-1, 2))

    @staticmethod
    def from_mask(mask: np.ndarray) -> "VisualPrompt":
        return VisualPrompt(PromptKind.MASK, mask=np.asarray(mask).astype(bool))


@dataclass(frozen=True)
class SegmentationRequest:
    """A request for one image.

    Attributes:
        task: which X-SAM task to run.
        text: referring expression (REFERRING) or sentence (REASONING); unused otherwise.
        vocabulary: class names for SEMANTIC / INSTANCE / PANOPTIC / OPEN_VOCABULARY.
        stuff_vocabulary: PANOPTIC only: amorphous classes whose segments are merged into one.
        regions: visual prompts; INTERACTIVE takes exactly one region, VGD one or more.
        score_threshold: minimum instance score; None = the task's default (X-SAM demo: 0.5).
        mask_threshold: probability above which a pixel belongs to a mask.
        generate: run the language model autoregressively even for tasks whose answer is a
            fixed template (the default places the template in the prompt: zero decode steps).
        max_new_tokens: generation budget for REASONING, GCG and ``generate=True``.
    """

    task: Task
    text: str = ""
    vocabulary: tuple[str, ...] = ()
    stuff_vocabulary: tuple[str, ...] = ()
    regions: tuple[VisualPrompt, ...] = ()
    score_threshold: float | None = None
    mask_threshold: float = 0.5
    generate: bool = False
    max_new_tokens: int = 64
    metadata: dict = field(default_factory=dict, compare=False)
