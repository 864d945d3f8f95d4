"""Rasterising visual prompts into masks (xsam_engine.visual_prompts).

Expected masks follow the official `xsam/xsam/dataset/utils/vprompt.py` (AAAI26_Archive):
`draw_circle(mask, centre, r)` sets every pixel with `sqrt((x - cx)² + (y - cy)²) <= r`,
`enhance_with_circles(mask, r)` draws such a disc around every set pixel, clicks use r = 10 and
scribble strokes (pixels of `skimage.draw.line`) r = 5.
"""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine.requests import PromptKind, VisualPrompt
from xsam_engine.visual_prompts import POINT_RADIUS, SCRIBBLE_RADIUS, line_pixels, rasterise_prompt


def official_discs(centres: list[tuple[int, int]], radius: int, height: int, width: int) -> np.ndarray:
    """vprompt.py `enhance_with_circles` restated: the union of `distance <= radius` discs."""
    y, x = np.ogrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    for row, col in centres:
        mask |= np.sqrt((x - col) ** 2 + (y - row) ** 2) <= radius
    return mask


def test_radii_are_the_official_ones():
    assert (POINT_RADIUS, SCRIBBLE_RADIUS) == (10, 5)


@pytest.mark.parametrize(
    ("x", "y", "height", "width", "expected_pixels"),
    [
        # Integer points with x² + y² <= 100 (Gauss circle problem, r = 10): 317.
        (10, 12, 32, 32, 317),
        # The same disc on a tiny 24x24 image: no longer scaled down with the image (was 3 px: 29).
        (12, 11, 24, 24, 317),
        # Corner click: the quarter with x, y >= 0; per row y = 0..10 the columns 0..floor(sqrt(100 - y²))
        # give 11+10+10+10+10+9+9+8+7+5+1 = 90 pixels.
        (0, 0, 64, 64, 90),
        # (4.4, 5.5) lies on pixel (row 6, column 4) (halves round up); the disc is clipped.
        (4.4, 5.5, 40, 40, None),
        # A click 3 px left of the image still reaches it: columns 0..7 of the disc around column -3.
        (-3, 5, 20, 20, None),
    ],
)
def test_point_is_a_radius_10_disc_at_any_image_size(x, y, height, width, expected_pixels):
    mask = rasterise_prompt(VisualPrompt.point(x, y), height, width)
    pixel = (int(np.floor(y + 0.5)), int(np.floor(x + 0.5)))
    np.testing.assert_array_equal(mask, official_discs([pixel], 10, height, width))
    if expected_pixels is not None:
        assert mask.sum() == expected_pixels


def test_negative_points_carve_positive_discs():
    points = np.array([[10.0, 10.0], [16.0, 10.0]])
    mask = rasterise_prompt(VisualPrompt.points_with_labels(points, np.array([0, 1])), 32, 32)
    expected = official_discs([(10, 16)], 10, 32, 32) & ~official_discs([(10, 10)], 10, 32, 32)
    np.testing.assert_array_equal(mask, expected)
    # Column 22 is 12 px from the negative click (kept); the positive centre is 6 px from it (carved).
    assert mask[10, 22] and not mask[10, 16]


def test_box_is_filled_and_clipped():
    mask = rasterise_prompt(VisualPrompt.from_box(2, 3, 6, 5), 8, 8)
    assert mask.sum() == 4 * 2 and mask[3:5, 2:6].all()
    clipped = rasterise_prompt(VisualPrompt.from_box(-5, -5, 3.2, 100), 8, 8)
    assert clipped[:, :4].all() and not clipped[:, 4:].any()
    with pytest.raises(ValueError, match="x0 < x1"):  # refused when the prompt is built
        VisualPrompt.from_box(5, 0, 1, 4)


@pytest.mark.parametrize(
    ("start", "end", "rows", "cols"),
    [
        # (row, col) (0, 0) -> (1, 4): columns are the major axis, d_minor = 1, d_major = 4; the row
        # offset after i steps is floor((2 * 1 * i + 4) / 8) = 0, 0, 1, 1, 1.
        ((0, 0), (1, 4), [0, 0, 1, 1, 1], [0, 1, 2, 3, 4]),
        # (3, 2) -> (5, 10): offsets floor((4 i + 8) / 16) for i = 0..8 = 0, 0, 1, 1, 1, 1, 2, 2, 2.
        ((3, 2), (5, 10), [3, 3, 4, 4, 4, 4, 5, 5, 5], [2, 3, 4, 5, 6, 7, 8, 9, 10]),
        # Steep (|Δrow| > |Δcol|): rows are the major axis, the same offsets land on the columns.
        ((0, 0), (4, 1), [0, 1, 2, 3, 4], [0, 0, 1, 1, 1]),
        # Backwards: both steps are -1, offsets as in the first case.
        ((1, 4), (0, 0), [1, 1, 0, 0, 0], [4, 3, 2, 1, 0]),
        # One pixel.
        ((7, 7), (7, 7), [7], [7]),
    ],
)
def test_stroke_pixels_are_those_of_skimage_draw_line(start, end, rows, cols):
    """Expected pixels stepped by hand through scikit-image's `_line` (error term d = 2·d_minor − d_major)."""
    got_rows, got_cols = line_pixels(*start, *end)
    assert got_rows.tolist() == rows and got_cols.tolist() == cols


def test_stroke_window_keeps_the_same_pixels():
    rows, cols = line_pixels(-40, -90, 50, 130)
    inside = (rows >= -5) & (rows < 20) & (cols >= -5) & (cols < 30)
    window_rows, window_cols = line_pixels(-40, -90, 50, 130, window=(-5, 20, -5, 30))
    assert window_rows.tolist() == rows[inside].tolist() and window_cols.tolist() == cols[inside].tolist()


def test_horizontal_scribble_is_its_stroke_thickened_by_radius_5_discs():
    """Stroke pixels: row 10, columns 6..29. Thickened by r = 5: columns 6..29 cover rows 5..15
    (24 x 11 = 264); each end cap adds, at dx = 1..5 beyond the end, the rows with dy² <= 25 - dx²:
    9 + 9 + 9 + 7 + 1 = 35; total 264 + 2 * 35 = 334."""
    mask = rasterise_prompt(VisualPrompt.scribble(np.array([[6.0, 10.0], [29.0, 10.0]])), 20, 40)
    assert mask.sum() == 334
    assert mask[5:16, 6:30].all() and not mask[:5].any() and not mask[16:].any()


def test_polyline_scribble_equals_the_official_enhancement_of_its_stroke():
    vertices = np.array([[3.0, 3.0], [11.0, 5.0], [11.2, 17.6], [2.0, 20.0]])  # (x, y)
    mask = rasterise_prompt(VisualPrompt.scribble(vertices), 26, 30)
    # Vertices fall on pixels (row, col) (3, 3), (5, 11), (18, 11), (20, 2).
    pixels = [(3, 3), (5, 11), (18, 11), (20, 2)]
    stroke = [
        (int(r), int(c))
        for (r0, c0), (r1, c1) in zip(pixels[:-1], pixels[1:])
        for r, c in zip(*line_pixels(r0, c0, r1, c1))
    ]
    np.testing.assert_array_equal(mask, official_discs(stroke, 5, 26, 30))


@pytest.mark.parametrize(("x", "y", "expected_pixels"), [(10.0, 8.0, 81), (0.0, 0.0, 26), (9.6, 7.4, 81)])
def test_one_point_scribble_is_a_radius_5_disc(x, y, expected_pixels):
    """A one-vertex stroke is one pixel; thickened, the r = 5 disc: 81 pixels (x² + y² <= 25).
    In the corner only x, y >= 0 remain: rows y = 0..5 hold columns 0..floor(sqrt(25 - y²)) =
    0..5, 0..4, 0..4, 0..4, 0..3, 0..0 -> 6 + 5 + 5 + 5 + 4 + 1 = 26 pixels. (The old cv2.circle
    with a sub-pixel shift also shifted the radius and drew one pixel.)"""
    mask = rasterise_prompt(VisualPrompt.scribble(np.array([[x, y]])), 20, 24)
    pixel = (int(np.floor(y + 0.5)), int(np.floor(x + 0.5)))
    np.testing.assert_array_equal(mask, official_discs([pixel], 5, 20, 24))
    assert mask.sum() == expected_pixels


def test_scribble_leaving_the_image_is_clipped_and_cheap():
    far = VisualPrompt.scribble(np.array([[-900_000.0, 5.0], [900_000.0, 5.0]]))
    mask = rasterise_prompt(far, 12, 16)
    assert mask[0:11].all() and not mask[11:].any()  # row 5 +- 5, every column
    outside = VisualPrompt.scribble(np.array([[-20.0, -20.0], [-20.0, 40.0]]))
    assert not rasterise_prompt(outside, 12, 16).any()


def test_mask_prompt_must_match_image_size():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:4, 3:5] = True
    np.testing.assert_array_equal(rasterise_prompt(VisualPrompt.from_mask(mask), 10, 12), mask)
    with pytest.raises(ValueError, match="resize the mask"):
        rasterise_prompt(VisualPrompt.from_mask(mask), 20, 24)


def test_missing_fields_and_bad_coordinates_say_how_to_fix():
    """The prompt checks itself when built (tests/test_engine_requests.py); the rasteriser checks what
    needs the image."""
    with pytest.raises(ValueError, match="needs points"):
        VisualPrompt(PromptKind.POINT)
    with pytest.raises(ValueError, match="box=\\(x0, y0, x1, y1\\)"):
        VisualPrompt(PromptKind.BOX)
    with pytest.raises(ValueError, match="positive"):
        rasterise_prompt(VisualPrompt.point(1, 1), 0, 8)
    with pytest.raises(ValueError, match="finite"):
        VisualPrompt.point(float("nan"), 1)
    with pytest.raises(ValueError, match="within"):
        VisualPrompt.scribble(np.array([[0.0, 0.0], [3e6, 0.0]]))
    with pytest.raises(ValueError, match="resize the mask"):
        rasterise_prompt(VisualPrompt.from_mask(np.ones((4, 4), bool)), 8, 8)