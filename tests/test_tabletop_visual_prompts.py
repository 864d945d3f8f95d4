"""Rasterising visual prompts into masks (xsam_engine.visual_prompts)."""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine.requests import PromptKind, VisualPrompt
from xsam_engine.visual_prompts import default_point_radius, rasterise_prompt, scribble_radius


def test_default_radius_scales_with_image():
    assert default_point_radius(640, 800) == 10
    assert default_point_radius(480, 640) == 8  # 10 * 480 / 640 = 7.5
    assert default_point_radius(256, 256) == 4
    assert default_point_radius(64, 64) == 3
    assert scribble_radius(10) == 5 and scribble_radius(4) == 2


def test_point_is_a_disc():
    mask = rasterise_prompt(VisualPrompt.point(10, 12), 32, 32, point_radius=2)
    rows, cols = np.nonzero(mask)
    # Pixels with (x-10)^2 + (y-12)^2 <= 4: a plus-shaped disc of 13 pixels.
    assert mask.sum() == 13
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (8, 12, 10, 14)


def test_negative_points_carve_positive_discs():
    points = np.array([[10.0, 10.0], [12.0, 10.0]])
    mask = rasterise_prompt(VisualPrompt.points_with_labels(points, np.array([0, 1])), 32, 32, point_radius=3)
    positive = rasterise_prompt(VisualPrompt.point(12, 10), 32, 32, point_radius=3)
    negative = rasterise_prompt(VisualPrompt.point(10, 10), 32, 32, point_radius=3)
    np.testing.assert_array_equal(mask, positive & ~negative)


def test_box_is_filled_and_clipped():
    mask = rasterise_prompt(VisualPrompt.from_box(2, 3, 6, 5), 8, 8)
    assert mask.sum() == 4 * 2 and mask[3:5, 2:6].all()
    clipped = rasterise_prompt(VisualPrompt.from_box(-5, -5, 3.2, 100), 8, 8)
    assert clipped[:, :4].all() and not clipped[:, 4:].any()
    with pytest.raises(ValueError, match="x0 <= x1"):
        rasterise_prompt(VisualPrompt.from_box(5, 0, 1, 4), 8, 8)


def test_scribble_has_the_stroke_width():
    stroke = VisualPrompt.scribble(np.array([[4.0, 10.0], [27.0, 10.0]]))
    mask = rasterise_prompt(stroke, 20, 32, point_radius=4)  # stroke radius 2 -> 5 px thick
    assert mask[8:13, 4:28].all() and not mask[:7].any() and not mask[14:].any()


def test_mask_prompt_must_match_image_size():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:4, 3:5] = True
    np.testing.assert_array_equal(rasterise_prompt(VisualPrompt.from_mask(mask), 10, 12), mask)
    with pytest.raises(ValueError, match="resize the mask"):
        rasterise_prompt(VisualPrompt.from_mask(mask), 20, 24)


def test_missing_fields_say_how_to_build_the_prompt():
    with pytest.raises(ValueError, match="VisualPrompt.point"):
        rasterise_prompt(VisualPrompt(PromptKind.POINT), 8, 8)
    with pytest.raises(ValueError, match="from_box"):
        rasterise_prompt(VisualPrompt(PromptKind.BOX), 8, 8)
    with pytest.raises(ValueError, match="positive"):
        rasterise_prompt(VisualPrompt.point(1, 1), 0, 8)
