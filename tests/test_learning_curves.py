"""bench/learning_curves.py and training/curves.py's plot: runs from scratch are kept apart from
runs that continue a saved model, committed runs are kept with --keep, bad --run specs are refused.

The curve files are written here the way the trainer writes them (`append_point`), with made-up
metric values; the tool runs as the README's command (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from xsam_engine.training.curves import CURVE_NAME, FROM_SCRATCH, HEADLINE, append_point, plot_curves, run_start

ROOT = Path(__file__).resolve().parents[1]


def _point(step: int, value: float) -> dict:
    point = {"step": step, "train_wall_seconds": 10.0 * step, "train_cpu_seconds": 3.0 * step}
    point.update({key: value for key in HEADLINE})
    point["referring_absent"] = {"absent_returned_at_0.5": 1.0 - value}
    return point


def _run(directory: Path, init_from: str, values: dict[int, float]) -> Path:
    training = {"steps": max(values), "init_from": init_from, "architecture": "tabletop"}
    directory.mkdir()
    for step, value in values.items():
        append_point(directory / CURVE_NAME, training, _point(step, value))
    return directory


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "learning_curves.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_run_start_names_the_saved_model_or_scratch() -> None:
    assert run_start({"init_from": "xsam_engine/default_model"}) == "continues xsam_engine/default_model"
    assert run_start({"init_from": ""}) == FROM_SCRATCH
    assert run_start({}) == FROM_SCRATCH  # curve files written before --init-from existed


def test_warm_starts_get_the_reference_at_step_0_and_scratch_runs_are_their_own_block(tmp_path) -> None:
    """Two warm starts and one run from scratch: the warm ones begin at the reference point
    (value 0.5 at step 0, then their own 100 and 200), the scratch one keeps only its own
    points (100, 200); the JSON labels each run's start and the PNG has two blocks of panels."""
    reference = tmp_path / "reference_point.json"
    reference.write_text(json.dumps({**_point(0, 0.5), "model": "shipped"}))
    warm_a = _run(tmp_path / "warm_a", "xsam_engine/default_model", {100: 0.4, 200: 0.45})
    warm_b = _run(tmp_path / "warm_b", "xsam_engine/default_model", {100: 0.3, 200: 0.35})
    scratch = _run(tmp_path / "scratch", "", {100: 0.1, 200: 0.2})
    out = tmp_path / "curves.json"
    result = _tool("--run", f"a={warm_a}", "--run", f"b={warm_b}", "--run", f"s={scratch}",
                   "--out", str(out), "--reference-point", str(reference))
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [p["step"] for p in runs["a"]["points"]] == [0, 100, 200]
    assert runs["a"]["points"][0]["referring_cIoU"] == 0.5 and runs["a"]["start"] == "continues xsam_engine/default_model"
    assert [p["step"] for p in runs["s"]["points"]] == [100, 200] and runs["s"]["start"] == FROM_SCRATCH
    assert json.loads(out.read_text())["reference"]["model"] == "shipped"
    two_blocks = matplotlib.image.imread(out.with_suffix(".png")).shape[0]

    groups = plot_curves({"a": runs["a"]}, tmp_path / "one.png")
    one_block = matplotlib.image.imread(tmp_path / "one.png").shape[0]
    assert groups == {"continues xsam_engine/default_model": ["a"]}
    assert two_blocks == 2 * one_block  # 3.2 inches a panel row, 3 rows a block, at 90 dpi
    with pytest.raises(ValueError, match="no runs to draw"):
        plot_curves({}, tmp_path / "none.png")


def test_keep_adds_runs_to_the_committed_ones_and_replaces_a_rerun(tmp_path) -> None:
    """The committed file holds runs 'old' and 'redo' (their directories are gone) and the
    reference; --keep with a new 'redo' and 'new' keeps 'old' as it was, takes the new 'redo',
    adds 'new', and keeps the committed reference when no reference file exists."""
    out = tmp_path / "curves.json"
    old = {"training": {"init_from": "m"}, "points": [_point(0, 0.5), _point(100, 0.6)], "directory": "gone/old"}
    stale = {"training": {"init_from": "m"}, "points": [_point(0, 0.5), _point(100, 0.1)], "directory": "gone/redo"}
    out.write_text(json.dumps({"reference": {**_point(0, 0.5), "model": "shipped"}, "runs": {"old": old, "redo": stale}}))
    redo = _run(tmp_path / "redo", "", {100: 0.25})
    new = _run(tmp_path / "new", "", {100: 0.15, 200: 0.3})
    result = _tool("--keep", "--run", f"redo={redo}", "--run", f"new={new}", "--out", str(out),
                   "--reference-point", str(tmp_path / "absent.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["old", "redo", "new"]
    assert report["runs"]["old"]["points"] == old["points"] and report["runs"]["old"]["start"] == "continues m"
    assert [p["referring_cIoU"] for p in report["runs"]["redo"]["points"]] == [0.25]
    assert report["runs"]["new"]["start"] == FROM_SCRATCH
    assert report["reference"]["model"] == "shipped"


@pytest.mark.parametrize("spec, message", [
    ("runs/scratch_base", "give NAME=OUTPUT_DIR"),
    ("=runs/scratch_base", "give NAME=OUTPUT_DIR"),
    ("base=", "give NAME=OUTPUT_DIR"),
    ("base={empty}", "has no curve.json points yet; train it with --eval-every"),
])
def test_bad_run_specs_are_refused_with_the_fix(tmp_path, spec, message) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "curves.json"
    result = _tool("--run", spec.format(empty=tmp_path / "empty"), "--out", str(out))
    assert result.returncode == 2 and message in result.stderr
    assert not out.exists()


def test_no_runs_at_all_is_refused(tmp_path) -> None:
    result = _tool("--out", str(tmp_path / "curves.json"))
    assert result.returncode == 2 and "no runs: give --run NAME=OUTPUT_DIR" in result.stderr
