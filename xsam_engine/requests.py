"""What a caller asks the engine for: the task, its text, its visual prompts and its thresholds.

`SegmentationRequest` validates and normalises itself when it is built (limits, names, stuff
classes merged into the vocabulary), so a request that exists can run; every problem raises
`RequestError` (a `ValueError`) whose message says what to change. The thresholds a request
leaves unset (None) come from the model's configuration (`XSamPostProcessConfig`);
`SegmentationRequest.thresholds(defaults)` gives the effective ones.

Which fields apply to which task (anything else is refused, except thresholds a task does not
use, which are ignored so that one set of thresholds can be sent with every command):

| task | text | vocabulary | stuff_vocabulary | regions | score_threshold | mask_threshold | overlap_threshold |
|---|---|---|---|---|---|---|---|
| referring, reasoning | required | - | - | - | best mask's probability; below it: zero instances, "not found" | yes | - |
| semantic | ignored | required | - | - | classes whose best query scores below it are void | - | - |
| instance, open_vocabulary | ignored | required | - | - | instance score (class x mask) | yes | - |
| panoptic | ignored | required | merged into vocabulary | - | query class probability | segment validity | segment validity |
| interactive | ignored | - | - | exactly 1 | candidates (else the best candidate) | yes | - |
| vgd | ignored | - | - | 1..64 | instance score (class x mask) | yes | - |
| gcg | ignored | - | - | - | phrases whose best query scores below it get no mask | yes | - |
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

MAX_TEXT_LENGTH = 1000  # characters of a referring expression / reasoning sentence / command
MAX_NAME_LENGTH = 200  # characters of one class name
MAX_VOCABULARY = 256  # class names per request (the TensorRT profile's condition count)
MAX_REGIONS = 64  # visual prompts per request
MAX_NEW_TOKENS = 1024  # generation budget (X-SAM [A] generates at most 512)
MAX_COORDINATE = 1_000_000.0  # |x|, |y| of a visual prompt in pixels (keeps the line arithmetic in int64)


class RequestError(ValueError):
    """A request cannot run; the message says what is wrong and how to fix it."""


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
    def uses_text(self) -> bool:
        """Tasks whose condition is the request's text (one phrase)."""
        return self in (Task.REFERRING, Task.REASONING)


class PromptKind(str, enum.Enum):
    POINT = "point"
    BOX = "box"
    SCRIBBLE = "scribble"
    MASK = "mask"


def clean_category(name: str) -> str:
    """X-SAM's category cleaning: drop -merged/-other/-stuff, '-' -> ' ', lower-case
    (official `genseg_map_fn`); the label a class name gets in results."""
    for suffix in ("-merged", "-other", "-stuff"):
        name = name.replace(suffix, "")
    return " ".join(name.replace("-", " ").split()).lower()


def _finite_array(values, dtype, shape_text: str, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise RequestError(f"{name} must be numbers {shape_text}: {error}") from error
    if not np.all(np.isfinite(array)):
        raise RequestError(f"{name} must be finite, got {array.tolist()}")
    if (np.abs(array) > MAX_COORDINATE).any():
        raise RequestError(f"{name} must lie within +-{MAX_COORDINATE:.0f} px (image pixels), got {array.tolist()}")
    return array


@dataclass(frozen=True, eq=False)
class VisualPrompt:
    """One visual prompt (one region) in pixels of the original image.

    Coordinates: x = column, y = row; pixel (row v, column u) is centred at (u, v). Exactly the
    field matching ``kind`` is set (checked when the prompt is built; `RequestError` otherwise):
      - POINT: ``points`` (N, 2) float32 (x, y) and ``point_labels`` (N,) int64, 1 = positive,
        0 = negative; at least one positive.
      - BOX: ``box`` (x0, y0, x1, y1), x0 < x1 and y0 < y1.
      - SCRIBBLE: ``points`` (N, 2) float32 polyline (x, y), N >= 1.
      - MASK: ``mask`` (H, W) bool, the original image size.

    ``eq=False``: prompts compare by identity (arrays have no single truth value).
    """

    kind: PromptKind
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        try:
            kind = PromptKind(self.kind)
        except ValueError:
            raise RequestError(f"Unknown visual prompt kind {self.kind!r}; use one of {[k.value for k in PromptKind]}.")
        object.__setattr__(self, "kind", kind)
        if kind in (PromptKind.POINT, PromptKind.SCRIBBLE):
            if self.points is None:
                raise RequestError(f"A {kind.value} prompt needs points (x, y) in pixels.")
            points = _finite_array(self.points, np.float32, "(N, 2)", f"{kind.value} prompt coordinates").reshape(-1, 2)
            if points.shape[0] == 0:
                raise RequestError(f"A {kind.value} prompt needs at least one point.")
            object.__setattr__(self, "points", points)
        if kind is PromptKind.POINT:
            labels = np.ones(len(self.points), np.int64) if self.point_labels is None else np.asarray(self.point_labels)
            labels = labels.reshape(-1)
            if labels.shape != (len(self.points),):
                raise RequestError(
                    f"point_labels must have one label per point ({len(self.points)}), got {labels.shape[0]}.")
            if not np.isin(labels, (0, 1)).all():
                raise RequestError(f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}.")
            if not (labels == 1).any():
                raise RequestError("A point prompt needs at least one positive point (label 1).")
            object.__setattr__(self, "point_labels", labels.astype(np.int64))
        if kind is PromptKind.BOX:
            if self.box is None or len(self.box) != 4:
                raise RequestError("A box prompt needs box=(x0, y0, x1, y1) in pixels.")
            x0, y0, x1, y1 = (float(v) for v in _finite_array(self.box, np.float64, "(4,)", "box prompt coordinates"))
            if not (x0 < x1 and y0 < y1):
                raise RequestError(f"A box prompt needs x0 < x1 and y0 < y1, got {(x0, y0, x1, y1)}.")
            object.__setattr__(self, "box", (x0, y0, x1, y1))
        if kind is PromptKind.MASK:
            if self.mask is None or np.asarray(self.mask).ndim != 2:
                raise RequestError("A mask prompt needs a 2-D (H, W) mask of the image's size.")
            mask = np.asarray(self.mask).astype(bool)
            if not mask.any():
                raise RequestError("The mask prompt is empty; mark the object's pixels (non-zero = inside).")
            object.__setattr__(self, "mask", mask)

    @staticmethod
    def point(x: float, y: float, positive: bool = True) -> "VisualPrompt":
        return VisualPrompt(PromptKind.POINT, points=np.array([[x, y]]), point_labels=np.array([1 if positive else 0]))

    @staticmethod
    def points_with_labels(points: np.ndarray, labels: np.ndarray) -> "VisualPrompt":
        return VisualPrompt(PromptKind.POINT, points=points, point_labels=labels)

    @staticmethod
    def from_box(x0: float, y0: float, x1: float, y1: float) -> "VisualPrompt":
        return VisualPrompt(PromptKind.BOX, box=(x0, y0, x1, y1))

    @staticmethod
    def scribble(points: np.ndarray) -> "VisualPrompt":
        return VisualPrompt(PromptKind.SCRIBBLE, points=points)

    @staticmethod
    def from_mask(mask: np.ndarray) -> "VisualPrompt":
        return VisualPrompt(PromptKind.MASK, mask=mask)

    def describe(self) -> str:
        """Short text for logs and result prompts, e.g. "click (120, 80)"."""
        if self.kind is PromptKind.POINT and len(self.points) == 1:
            return f"click ({self.points[0, 0]:.0f}, {self.points[0, 1]:.0f})"
        if self.kind is PromptKind.BOX:
            return "box ({:.0f}, {:.0f}, {:.0f}, {:.0f})".format(*self.box)
        count = len(self.points) if self.points is not None else int(self.mask.sum())
        unit = {"point": "points", "scribble": "points", "mask": "pixels"}[self.kind.value]
        return f"{self.kind.value} ({count} {unit})"


@dataclass(frozen=True)
class Thresholds:
    """The post-processing thresholds that apply to one request (see the module table).

    Attributes:
        score: minimum score in [0, 1] (what "score" means depends on the task).
        mask: probability in (0, 1) above which a pixel belongs to a mask (X-SAM: 0.5).
        overlap: panoptic only, in [0, 1]: a query becomes a segment when the pixels it wins
            cover more than this fraction of its own mask (X-SAM's overlap_mask_area_threshold, 0.8).
    """

    score: float
    mask: float
    overlap: float

    def __post_init__(self) -> None:
        check_threshold("score_threshold", self.score)
        check_threshold("mask_threshold", self.mask)
        check_threshold("overlap_threshold", self.overlap)


THRESHOLD_RANGES = {"score_threshold": "[0, 1]", "mask_threshold": "(0, 1)", "overlap_threshold": "[0, 1]"}


def check_threshold(name: str, value: float | None) -> None:
    """Raise RequestError unless `value` is None or inside the range of threshold `name`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number in {THRESHOLD_RANGES[name]}, got {value!r}.")
    exclusive = name == "mask_threshold"
    if not (0.0 <= value <= 1.0) or (exclusive and value in (0.0, 1.0)):
        raise RequestError(f"{name} must be in {THRESHOLD_RANGES[name]}, got {value}.")


def normalise_names(names, field_name: str) -> tuple[str, ...]:
    """Stripped class names; RequestError for empty, too long, too many or duplicate (after X-SAM's
    category cleaning, so "Cup" and "cup" are the same class) names."""
    if isinstance(names, str):
        raise RequestError(f"{field_name} must be a list of names, got the string {names!r}.")
    stripped = tuple(" ".join(str(name).split()) for name in names)
    if len(stripped) > MAX_VOCABULARY:
        raise RequestError(f"{field_name} has {len(stripped)} names; the limit is {MAX_VOCABULARY}.")
    for name in stripped:
        if not clean_category(name):
            raise RequestError(f"{field_name} contains an empty name: {list(names)!r}.")
        if len(name) > MAX_NAME_LENGTH:
            raise RequestError(f"{field_name} has a name of {len(name)} characters; the limit is {MAX_NAME_LENGTH}.")
    cleaned = [clean_category(name) for name in stripped]
    duplicates = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if duplicates:
        raise RequestError(f"{field_name} names the same class more than once: {duplicates}.")
    return stripped


@dataclass(frozen=True)
class SegmentationRequest:
    """A request for one image, checked and normalised when built (`RequestError` otherwise).

    Attributes:
        task: which X-SAM task to run (a `Task` or its value).
        text: referring expression (REFERRING) or sentence (REASONING), at most 1000 characters;
            stripped; kept as the prompt's description for other tasks.
        vocabulary: class names for SEMANTIC / INSTANCE / PANOPTIC / OPEN_VOCABULARY (at most
            256, each at most 200 characters, distinct after X-SAM's category cleaning).
        stuff_vocabulary: PANOPTIC only: amorphous classes whose segments are merged into one;
            names missing from `vocabulary` are appended to it.
        regions: visual prompts; INTERACTIVE takes exactly one region, VGD 1 to 64.
        score_threshold / mask_threshold / overlap_threshold: None = the model's default for the
            task (`XSamPostProcessConfig`); see the module table for what each means per task.
        generate: run the language model autoregressively even for tasks whose answer is a
            fixed template (the default places the template in the prompt: zero decode steps).
        max_new_tokens: generation budget (1 to 1024) when the language model generates.
        metadata: free-form caller data, not compared.
    """

    task: Task
    text: str = ""
    vocabulary: tuple[str, ...] = ()
    stuff_vocabulary: tuple[str, ...] = ()
    regions: tuple[VisualPrompt, ...] = ()
    score_threshold: float | None = None
    mask_threshold: float | None = None
    overlap_threshold: float | None = None
    generate: bool = False
    max_new_tokens: int = 64
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        try:
            task = Task(self.task)
        except ValueError:
            raise RequestError(f"Unknown task {self.task!r}; use one of {[t.value for t in Task]}.")
        set_field = object.__setattr__
        set_field(self, "task", task)
        if not isinstance(self.text, str):
            raise RequestError(f"text must be a string, got {type(self.text).__name__}.")
        text = self.text.strip()
        if len(text) > MAX_TEXT_LENGTH:
            raise RequestError(f"The text has {len(text)} characters; the limit is {MAX_TEXT_LENGTH}.")
        if task.uses_text and not text:
            raise RequestError(f"A {task.value} request needs a non-empty text (e.g. 'the red cup').")
        set_field(self, "text", text)

        vocabulary = normalise_names(self.vocabulary, "vocabulary")
        stuff = normalise_names(self.stuff_vocabulary, "stuff_vocabulary")
        if task.is_generic and not vocabulary and not (task is Task.PANOPTIC and stuff):
            raise RequestError(f"A {task.value} request needs a vocabulary of class names (e.g. ['cup', 'bowl']).")
        if not task.is_generic and vocabulary:
            raise RequestError(f"A {task.value} request takes no vocabulary; vocabularies are for generic tasks.")
        if task is not Task.PANOPTIC and stuff:
            raise RequestError(f"stuff_vocabulary applies to panoptic requests only, not to {task.value}.")
        known = {clean_category(name) for name in vocabulary}
        vocabulary += tuple(name for name in stuff if clean_category(name) not in known)
        if len(vocabulary) > MAX_VOCABULARY:
            raise RequestError(f"vocabulary and stuff_vocabulary have {len(vocabulary)} names together; "
                               f"the limit is {MAX_VOCABULARY}.")
        set_field(self, "vocabulary", vocabulary)
        set_field(self, "stuff_vocabulary", stuff)

        regions = tuple(self.regions)
        if not all(isinstance(region, VisualPrompt) for region in regions):
            raise RequestError("regions must be VisualPrompt objects (VisualPrompt.point(x, y), from_box, ...).")
        if len(regions) > MAX_REGIONS:
            raise RequestError(f"The request has {len(regions)} visual prompts; the limit is {MAX_REGIONS}.")
        if task is Task.INTERACTIVE and len(regions) != 1:
            raise RequestError(f"An interactive request needs exactly one visual prompt, got {len(regions)}.")
        if task is Task.VGD and not regions:
            raise RequestError("A VGD request needs at least one visual prompt.")
        if not task.uses_regions and regions:
            raise RequestError(f"A {task.value} request takes no visual prompts; use interactive or vgd.")
        set_field(self, "regions", regions)

        for name in THRESHOLD_RANGES:
            check_threshold(name, getattr(self, name))
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or not (
            1 <= self.max_new_tokens <= MAX_NEW_TOKENS
        ):
            raise RequestError(f"max_new_tokens must be an integer in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens!r}.")

    @property
    def labels(self) -> tuple[str, ...]:
        """The condition names in prompt order (GCG: empty, its phrases come from the answer)."""
        if self.task.uses_text:
            return (self.text,)
        if self.task.is_generic:
            return tuple(clean_category(name) for name in self.vocabulary)
        if self.task.uses_regions:
            return tuple(f"region {index}" for index in range(len(self.regions)))
        return ()

    @property
    def stuff_indices(self) -> frozenset[int]:
        """PANOPTIC: indices into `labels` of the stuff classes (merged into one segment each)."""
        stuff = {clean_category(name) for name in self.stuff_vocabulary}
        return frozenset(index for index, label in enumerate(self.labels) if label in stuff)

    def thresholds(self, defaults: Thresholds) -> Thresholds:
        """The effective thresholds: this request's own where set, else `defaults` (the model's for the task)."""
        return Thresholds(
            score=defaults.score if self.score_threshold is None else float(self.score_threshold),
            mask=defaults.mask if self.mask_threshold is None else float(self.mask_threshold),
            overlap=defaults.overlap if self.overlap_threshold is None else float(self.overlap_threshold),
        )

    def describe(self) -> str:
        """Short human-readable prompt: the text, the visual prompts or the vocabulary."""
        if self.text:
            return self.text
        if self.regions:
            if len(self.regions) == 1:
                return self.regions[0].describe()
            return f"{self.task.value}: {len(self.regions)} visual prompts"
        if self.vocabulary:
            return f"{self.task.value}: " + ", ".join(self.vocabulary)
        return self.task.value
