"""The shipped tabletop model: loads by default, says what it is, and segments held-out scenes well."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

from xsam_engine import Task
from xsam_engine.checkpoint import DEFAULT_MODEL_DIR, read_model_metadata
from xsam_engine.evaluation.evaluate import evaluate_model
from xsam_engine.evaluation.metrics import mask_iou
from xsam_engine.predictor import XSamPredictor
from xsam_engine.tabletop.scenes import generate_scene

# A different held-out range than the committed evaluation (which starts at 9e8).
TEST_FIRST_SEED = 910_000_000


@pytest.fixture(scope="module")
def predictor() -> XSamPredictor:
    return XSamPredictor.from_pretrained()


def test_default_model_is_shipped_small_and_labelled(caplog) -> None:
    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 25 * 1024 * 1024
    assert "not the released X-SAM weights" in read_model_metadata(DEFAULT_MODEL_DIR)["description"]
    with caplog.at_level(logging.WARNING, logger="xsam_engine.checkpoint"):
        XSamPredictor.from_pretrained()
    assert any("tabletop demo model" in record.getMessage() for record in caplog.records)


# Issue 4 asks for >= 0.75 on both; the shipped model does not reach it (README "Models": it
# measures referring cIoU 0.33 and interactive mIoU 0.56 on this range, 0.44 / 0.60 on the
# committed 200-scene evaluation). These bounds sit just under what it measures, so the test
# catches a regression (a random-weight model scores below 0.05 on both) without pretending.
MIN_REFERRING_CIOU = 0.30
MIN_INTERACTIVE_MIOU = 0.50


def test_held_out_referring_and_interactive_quality(predictor: XSamPredictor) -> None:
    report = evaluate_model(predictor, num_scenes=100, first_seed=TEST_FIRST_SEED, tasks=(Task.REFERRING, Task.INTERACTIVE))
    metrics = report["metrics"]
    assert metrics["referring"]["samples"] >= 90 and metrics["interactive"]["samples"] >= 360
    assert metrics["referring"]["cIoU"] >= MIN_REFERRING_CIOU, metrics["referring"]
    assert metrics["interactive"]["mIoU"] >= MIN_INTERACTIVE_MIOU, metrics["interactive"]


# The absent-object measurement (bench/referring_presence.py) on 50 scenes of the same test range,
# at the model's default referring threshold 0.91: 0.37 of 100 absent-object commands still return
# an instance (issue 14's target: <= 0.05; this model was never trained to tell absent from present
# and short training with absent negatives did not teach it: README "Models") and 0.30 of the 50
# present objects are answered with IoU >= 0.5. Bounds with a margin for the 50-scene sample.
MAX_ABSENT_RETURNED = 0.50
MIN_PRESENT_RECALL_IOU50 = 0.20


def test_absent_object_commands_at_the_default_threshold(predictor: XSamPredictor) -> None:
    from xsam_engine.evaluation.presence import collect_answers, presence_report

    default = predictor.model.config.postprocess.thresholds_for(Task.REFERRING).score
    report = presence_report(collect_answers(predictor, num_scenes=50, first_seed=TEST_FIRST_SEED), default=default)
    assert report["commands"] == {"present": 50, "absent_class": 50, "absent_colour": 50}
    row = report["default"]
    assert row["absent_returned"] <= MAX_ABSENT_RETURNED, row
    assert row["present_recall_iou50"] >= MIN_PRESENT_RECALL_IOU50, row


def test_cli_grasps_the_red_cup(tmp_path) -> None:
    # A scene the demo model gets right (it is right on about 1 scene in 4 at this size; README "Models").
    scene = generate_scene(23, width=320, height=240, include=[("cup", "red")])
    [cup] = [o for o in scene.objects if o.name == "red cup"]
    image_path, overlay_path = tmp_path / "scene.png", tmp_path / "overlay.png"
    cv2.imwrite(str(image_path), scene.image[..., ::-1])
    completed = subprocess.run(
        [sys.executable, "-m", "xsam_engine", "segment", str(image_path), "grasp the red cup", "--out", str(overlay_path)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    output = json.loads(completed.stdout)
    assert output["task"] == "referring" and output["labels"] == ["red cup"]
    [instance] = output["instances"]
    x0, y0, x1, y1 = instance["box_xyxy"]
    box_mask = np.zeros(scene.image.shape[:2], bool)
    box_mask[y0:y1, x0:x1] = True
    truth = scene.mask(cup.instance_id)
    truth_box = np.zeros_like(truth)
    tx0, ty0, tx1, ty1 = cup.box_xyxy
    truth_box[ty0:ty1, tx0:tx1] = True
    assert mask_iou(box_mask, truth_box) >= 0.6
    overlay = cv2.imread(str(overlay_path))
    assert overlay.shape == scene.image.shape
    changed = np.abs(overlay.astype(int) - scene.image[..., ::-1].astype(int)).sum(axis=2) > 30
    assert changed[truth].mean() > 0.5  # the cup is painted
    assert "tabletop demo model" in completed.stderr


def test_cli_segment_everything_with_stuff_segments_the_table(tmp_path) -> None:
    """Issue 12: `segment ... "segment everything" --vocabulary cup,bowl --stuff table` never segmented
    the table (the stuff class was not in the vocabulary). The request now merges stuff classes
    into the vocabulary itself, for the CLI, the node and any caller."""
    scene = generate_scene(23, width=320, height=240)
    image_path = tmp_path / "scene.png"
    cv2.imwrite(str(image_path), scene.image[..., ::-1])
    completed = subprocess.run(
        [sys.executable, "-m", "xsam_engine", "segment", str(image_path), "segment everything",
         "--vocabulary", "cup,bowl", "--stuff", "table"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    output = json.loads(completed.stdout)
    assert output["task"] == "panoptic" and output["labels"] == ["cup", "bowl", "table"]
    table = [i for i in output["instances"] if i["label"] == "table"]
    assert len(table) == 1 and table[0]["area"] >= 0.5 * scene.table_mask().sum()
