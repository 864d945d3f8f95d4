"""Choosing a model's default referring threshold from absent / present measurements (issue 14)."""

from __future__ import annotations

import json

import pytest

from xsam_engine.evaluation.presence import ReferringAnswer, presence_report, write_default_threshold


def answers(present_scores, absent_scores):
    made = [ReferringAnswer("present", "red cup", s, 10, 0.9) for s in present_scores]
    made += [ReferringAnswer("absent_class" if k % 2 else "absent_colour", "green bottle", s, 10, 0.0)
             for k, s in enumerate(absent_scores)]
    return made


def test_lowest_threshold_within_the_absent_limit_is_written_with_its_rule(tmp_path):
    """20 absent commands scoring 0.05, 0.10, ..., 1.00: at threshold t an answer returns when its
    score >= t, so the absent rate is (#scores >= t) / 20. A limit of 5 % allows one return:
    the lowest threshold with at most one absent score >= t is 0.96 (only 1.00 is >= 0.96; at
    0.95 two are: 0.95, 1.00)."""
    report = presence_report(answers([0.97, 0.99], [0.05 * k for k in range(1, 21)]))
    (tmp_path / "config.json").write_text(json.dumps({
        "config": {"postprocess": {"task_score_thresholds": {"referring": 0.91}}}, "metadata": {}}))
    chosen = write_default_threshold(tmp_path, report, 0.05, "seeds 1..20")
    assert chosen == 0.96
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["postprocess"]["task_score_thresholds"] == {"referring": 0.96, "reasoning": 0.96}
    assert "at most 5% of absent-object" in saved["metadata"]["thresholds"] and "seeds 1..20" in saved["metadata"]["thresholds"]


def test_no_threshold_within_the_limit_is_refused(tmp_path):
    """Empty masks never return, but an absent command scoring 1.0 returns at every threshold <= 1."""
    report = presence_report(answers([0.9], [1.0, 1.0]))
    with pytest.raises(ValueError, match="absent-fraction"):
        write_default_threshold(tmp_path, report, 0.05, "seeds 1..2")
