"""Learning curves: held-out metrics of every task against the training step.

`train()` calls `evaluate_point` every `eval_every` steps (TrainingConfig) on a fixed held-out
subset (`eval_scenes` scenes from `HELD_OUT_FIRST_SEED`, the first scenes of the README's
evaluation range), and appends the point to `OUTPUT_DIR/curve.json` as it goes; a resumed run
keeps the points it has and adds the missing ones. `plot_curves` draws several runs' curves,
runs from scratch apart from runs that continue a saved model (`run_start`).

A point holds each task's headline metric (`HEADLINE`), the referring absent-object return rate
and present recall at the model's default referring threshold and at 0.5, the lowest threshold
that keeps the absent rate <= 5 %, and the training time so far (wall and process CPU seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..evaluation.evaluate import HELD_OUT_FIRST_SEED, evaluate_model
from ..evaluation.presence import collect_answers, lowest_threshold_within, presence_report
from ..predictor import XSamPredictor
from ..requests import Task

CURVE_NAME = "curve.json"
MAX_ABSENT_RATE = 0.05  # issue 14: at the default threshold <= 5 % of absent-object commands return an instance

# (task, metric) -> the key a point stores it under; the issue-14 target table's metrics.
HEADLINE: dict[str, tuple[str, str]] = {
    "referring_cIoU": ("referring", "cIoU"),
    "reasoning_gIoU": ("reasoning", "gIoU"),
    "interactive_mIoU": ("interactive", "mIoU"),
    "semantic_mIoU": ("semantic", "mIoU"),
    "instance_AP50": ("instance", "AP50"),
    "open_vocabulary_AP50": ("open_vocabulary", "AP50"),
    "panoptic_PQ": ("panoptic", "PQ"),
    "panoptic_PQ_things": ("panoptic", "PQ_things"),
    "vgd_AP50": ("vgd", "AP50"),
    "gcg_mask_recall": ("gcg", "mask_recall"),
}


def evaluate_point(predictor: XSamPredictor, num_scenes: int, first_seed: int = HELD_OUT_FIRST_SEED) -> dict:
    """Headline metrics of every task and the absent-object figures on `num_scenes` held-out scenes."""
    started = time.perf_counter()
    report = evaluate_model(predictor, num_scenes=num_scenes, first_seed=first_seed, tasks=tuple(Task))
    metrics = report["metrics"]
    point: dict = {}
    for key, (task, metric) in HEADLINE.items():
        value = metrics.get(task, {}).get(metric)
        point[key] = None if value is None else round(float(value), 4)
    point["interactive_by_kind"] = {
        kind: round(float(metrics["interactive"][kind]), 4)
        for kind in ("point", "scribble", "box", "mask") if kind in metrics.get("interactive", {})
    }
    default = predictor.model.config.postprocess.thresholds_for(Task.REFERRING).score
    presence = presence_report(collect_answers(predictor, num_scenes=num_scenes, first_seed=first_seed),
                               default=default)
    rows = {row["threshold"]: row for row in presence["by_threshold"]}
    point["referring_absent"] = {
        "default_threshold": default,
        "absent_returned_at_default": presence["default"]["absent_returned"],
        "present_recall_iou50_at_default": presence["default"]["present_recall_iou50"],
        "absent_returned_at_0.5": rows[0.5]["absent_returned"],
        "present_recall_iou50_at_0.5": rows[0.5]["present_recall_iou50"],
        "score_quantiles": presence["score_quantiles"],
    }
    within = lowest_threshold_within(presence, MAX_ABSENT_RATE)
    point["referring_absent"]["lowest_threshold_within_5pct"] = None if within is None else {
        "threshold": within["threshold"], "absent_returned": within["absent_returned"],
        "present_recall_iou50": within["present_recall_iou50"],
    }
    point["eval_seconds"] = round(time.perf_counter() - started, 1)
    return point


def read_curve(path: Path) -> dict:
    """The curve file's content, or an empty curve."""
    return json.loads(path.read_text()) if path.is_file() else {"points": []}


def append_point(path: Path, training: dict, point: dict) -> None:
    """Add (or replace) the point of `point["step"]` and rewrite the file atomically."""
    curve = read_curve(path)
    curve["training"] = training
    curve["points"] = sorted([p for p in curve["points"] if p["step"] != point["step"]] + [point],
                             key=lambda p: p["step"])
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(curve, indent=1) + "\n")
    temporary.replace(path)


FROM_SCRATCH = "from scratch"


def run_start(training: dict) -> str:
    """How a run's weights started: "from scratch", or "continues DIR" for `--init-from DIR`.

    The step axis means different things for the two (steps since random weights, or steps after
    the saved model's own training), so tables and plots keep them apart.
    """
    return f"continues {training['init_from']}" if training.get("init_from") else FROM_SCRATCH


def plot_curves(curves: dict[str, dict], out_png: str | Path, reference: dict | None = None) -> dict[str, list[str]]:
    """Draw every run's curves, one block of panels per start (`run_start`), and return the blocks.

    A block has one panel per headline metric (+ the absent-object rate at threshold 0.5,
    comparable across models whose default thresholds differ) and one line per run; x = the
    run's own step. `reference` (a curve point, e.g. the shipped model's) is drawn as a dotted
    line in the from-scratch block, where no run starts from it. Returns {start: [run names]}.
    Raises ValueError when `curves` is empty.
    """
    if not curves:
        raise ValueError("plot_curves: no runs to draw; pass at least one curve.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[str]] = {}
    for name, curve in curves.items():
        groups.setdefault(run_start(curve["training"]), []).append(name)
    keys = [*HEADLINE, "absent_returned_at_0.5"]
    columns = 4
    rows = (len(keys) + columns - 1) // columns
    figure = plt.figure(figsize=(4 * columns, 3.2 * rows * len(groups)), layout="constrained")
    blocks = figure.subfigures(len(groups), 1, squeeze=False)[:, 0]
    for block, (start, names) in zip(blocks, groups.items()):
        axes = block.subplots(rows, columns, squeeze=False)
        block.suptitle(f"{start}: step = " + ("steps since random weights" if start == FROM_SCRATCH
                                               else "steps after that model's own training"),
                       fontsize=11, fontweight="bold")
        for axis, key in zip(axes.flat, keys):
            for name in names:
                points = curves[name]["points"]
                values = [_value(p, key) for p in points]
                axis.plot([p["step"] for p in points], [float("nan") if v is None else v for v in values],
                          marker="o", label=name)
            if reference is not None and start == FROM_SCRATCH and _value(reference, key) is not None:
                axis.axhline(_value(reference, key), color="grey", linestyle=":",
                             label="reference (step 0 of the continuations)")
            axis.set_title("referring: absent-object commands returned at 0.5" if key.startswith("absent")
                           else key.replace("_", " "), fontsize=9)
            axis.set_xlabel("step", fontsize=8)
            axis.set_ylim(0, 1)
            axis.set_xlim(left=0)
            axis.grid(alpha=0.3)
        for axis in list(axes.flat)[len(keys):]:
            axis.axis("off")
        axes.flat[0].legend(fontsize=7)
    figure.savefig(out_png, dpi=90)
    plt.close(figure)
    return groups


def _value(point: dict, key: str):
    if key == "absent_returned_at_0.5":
        return point["referring_absent"]["absent_returned_at_0.5"]
    return point[key]
