"""Does a referring answer say "not found" when the object is absent, and find it when it is there?

For every held-out scene three referring commands are scored with the threshold set to 0 (the
official "always the best mask" rule), so each gives its best query's phrase probability:

- present: the evaluation's referring expression of an object in the scene (`sample_task`);
- absent, other class: "<colour> <class>" of a class that is not in the scene ("green bottle");
- absent, other colour: a class that is in the scene, in a colour no object of it has
  ("blue cup" beside a red cup), the harder case.

At a threshold t an answer returns an instance when its score >= t (and its mask is not empty).
The report gives, per threshold, the rate of absent commands that still return an instance and
the recall of present objects (answered at all, and answered with mask IoU >= 0.5), so a model's
default threshold can be chosen from measured figures: `youden_threshold` is the threshold with
the largest present recall minus absent rate (Youden's J), the lowest of equals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..predictor import XSamPredictor
from ..requests import SegmentationRequest, Task
from ..tabletop.language import absent_expressions
from ..tabletop.scenes import generate_scene
from ..tabletop.tasks import sample_task
from .evaluate import HELD_OUT_FIRST_SEED
from .metrics import mask_iou

THRESHOLDS = tuple(round(0.01 * step, 2) for step in range(101))
CORRECT_IOU = 0.5


@dataclass(frozen=True)
class ReferringAnswer:
    """One referring command's best query score and mask IoU with its target (0 for absent objects)."""

    kind: str  # "present" | "absent_class" | "absent_colour"
    text: str
    score: float
    mask_pixels: int
    iou: float


def collect_answers(
    predictor: XSamPredictor, num_scenes: int = 200, first_seed: int = HELD_OUT_FIRST_SEED,
    image_size: tuple[int, int] = (256, 256), progress: bool = False,
) -> list[ReferringAnswer]:
    """Score the three kinds of command on `num_scenes` held-out scenes (threshold 0)."""
    answers: list[ReferringAnswer] = []
    iterator = range(first_seed, first_seed + num_scenes)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="referring presence", unit="scene")
    height, width = image_size
    for seed in iterator:
        scene = generate_scene(seed, width=width, height=height)
        rng = np.random.default_rng(seed)
        predictor.set_image(scene.image)
        commands: list[tuple[str, str, np.ndarray | None]] = []
        sample = sample_task(scene, Task.REFERRING, rng, template_index=0)
        if sample is not None:
            commands.append(("present", sample.request.text, sample.target_masks[0]))
        commands += [(kind, text, None) for kind, text in absent_expressions(scene, rng).items()]
        for kind, text, target in commands:
            result = predictor.segment(SegmentationRequest(Task.REFERRING, text=text, score_threshold=0.0))
            mask = result.instances[0].mask if result.instances else np.zeros(scene.image.shape[:2], bool)
            score = result.instances[0].score if result.instances else 0.0  # empty best mask: never returned
            answers.append(ReferringAnswer(
                kind=kind, text=text, score=score, mask_pixels=int(mask.sum()),
                iou=mask_iou(mask, target) if target is not None else 0.0))
    return answers


def presence_report(
    answers: list[ReferringAnswer], thresholds: tuple[float, ...] = THRESHOLDS, default: float | None = None
) -> dict:
    """Per threshold: absent-object return rates and present-object recall (see module docstring);
    with `default`, its row again under "default"."""
    by_kind = {kind: [a for a in answers if a.kind == kind] for kind in ("present", "absent_class", "absent_colour")}

    def returned(answer: ReferringAnswer, threshold: float) -> bool:
        return answer.mask_pixels > 0 and answer.score >= threshold

    def rate(items: list[ReferringAnswer], threshold: float, correct: bool = False) -> float | None:
        if not items:
            return None
        hits = [a for a in items if returned(a, threshold) and (not correct or a.iou >= CORRECT_IOU)]
        return len(hits) / len(items)

    absent = by_kind["absent_class"] + by_kind["absent_colour"]
    rows = [{
        "threshold": threshold,
        "absent_returned": rate(absent, threshold),
        "absent_class_returned": rate(by_kind["absent_class"], threshold),
        "absent_colour_returned": rate(by_kind["absent_colour"], threshold),
        "present_recall": rate(by_kind["present"], threshold),
        "present_recall_iou50": rate(by_kind["present"], threshold, correct=True),
    } for threshold in sorted(set(thresholds) | ({default} if default is not None else set()))]
    report = {
        "commands": {kind: len(items) for kind, items in by_kind.items()},
        "score_quantiles": {
            kind: [round(float(q), 4) for q in np.quantile([a.score for a in items], (0.05, 0.25, 0.5, 0.75, 0.95))]
            for kind, items in by_kind.items() if items
        },
        "correct_iou": CORRECT_IOU,
        "by_threshold": rows,
    }
    if default is not None:
        report["default"] = next(row for row in rows if row["threshold"] == default)
    if by_kind["present"] and absent:
        best = max(rows, key=lambda row: (row["present_recall"] - row["absent_returned"], -row["threshold"]))
        report["youden_threshold"] = best["threshold"]
    return report


def lowest_threshold_within(report: dict, max_absent_rate: float) -> dict | None:
    """The `presence_report` row of the lowest threshold whose absent-object rate <= the limit."""
    within = [row for row in report["by_threshold"]
              if row["absent_returned"] is not None and row["absent_returned"] <= max_absent_rate]
    return min(within, key=lambda row: row["threshold"]) if within else None


def write_default_threshold(model_dir: str | Path, report: dict, max_absent_rate: float, measured_on: str) -> float:
    """Write the lowest threshold whose absent rate <= `max_absent_rate` (`report` measured on
    `measured_on`) as the model's referring and reasoning default, with the rule in its metadata.

    Raises:
        ValueError: no threshold keeps the absent rate within the limit.
    """
    row = lowest_threshold_within(report, max_absent_rate)
    if row is None:
        raise ValueError(f"No threshold keeps the absent-object rate <= {max_absent_rate}; the model cannot tell "
                         "absent from present: train it with absent-object negatives (--absent-fraction).")
    path = Path(model_dir) / "config.json"
    saved = json.loads(path.read_text())
    threshold = float(row["threshold"])
    saved["config"]["postprocess"]["task_score_thresholds"].update(referring=threshold, reasoning=threshold)
    saved["metadata"]["thresholds"] = (
        f"referring / reasoning default {threshold:.2f} = the lowest threshold at which at most "
        f"{max_absent_rate:.0%} of absent-object referring commands return an instance, on validation scenes "
        f"{measured_on} (bench/referring_presence.py --set-default; there absent {row['absent_returned']:.3f}, "
        f"present recall at IoU >= 0.5 {row['present_recall_iou50']:.3f}); other tasks: the X-SAM demo's 0.5")
    path.write_text(json.dumps(saved, indent=2) + "\n")
    return threshold
