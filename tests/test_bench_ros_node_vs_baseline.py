"""bench/ros_node_vs_baseline.py: which figures it compares and when a slower median is a regression."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import ros_node_vs_baseline as compare_script  # noqa: E402


def report(overhead: float, tracked: float, first: float) -> dict:
    """The parts of a bench/ros_node.py report the comparison reads (its real key names)."""
    return {
        "overhead": [{"size": "640x480", "total_p50_ms": overhead}],
        "end_to_end": [{"model": "tabletop trained model", "sizes": [
            {"size": "640x480", "first_frame_with_llm_ms": first, "tracked_frame": {"p50_ms": tracked}}]}],
    }


def test_figures_name_every_measurement():
    assert compare_script.figures(report(1.5, 180.0, 230.0)) == {
        "overhead_640x480_ms": 1.5, "tracked_tabletop_640x480_ms": 180.0, "first_tabletop_640x480_ms": 230.0}


def test_a_slower_median_is_a_regression_only_beyond_the_rounds_spread():
    baseline = [compare_script.figures(report(1.0, 100.0, 200.0)), compare_script.figures(report(1.2, 101.0, 260.0)),
                compare_script.figures(report(1.1, 102.0, 210.0))]
    # overhead: medians 1.1 -> 1.2 (+9 %), but the current best round (1.15) < the baseline's worst (1.2): noise.
    # tracked: medians 101 -> 110 (+8.9 %), the current best (108) > the baseline's worst (102): regression.
    # first: medians 210 -> 205 (faster).
    current = [compare_script.figures(report(1.15, 108.0, 200.0)), compare_script.figures(report(1.2, 110.0, 205.0)),
               compare_script.figures(report(1.3, 111.0, 207.0))]
    rows = {row["figure"]: row for row in compare_script.compare(baseline, current)}
    overhead, tracked, first = (rows["overhead_640x480_ms"], rows["tracked_tabletop_640x480_ms"],
                                rows["first_tabletop_640x480_ms"])
    assert (overhead["ratio"], overhead["within_5_percent"], overhead["regression"]) == (1.091, False, False)
    assert (tracked["ratio"], tracked["within_5_percent"], tracked["regression"]) == (1.089, False, True)
    assert (first["ratio"], first["within_5_percent"], first["regression"]) == (0.976, True, False)
    assert tracked["baseline_rounds"] == [100.0, 101.0, 102.0] and tracked["current_rounds"] == [108.0, 110.0, 111.0]
