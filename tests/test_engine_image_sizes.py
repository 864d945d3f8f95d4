"""Extreme aspect ratios: every resize keeps at least one pixel per side and every task answers.

SAM's resize rule (longest side -> S, ``int(x + 0.5)``) rounds the short side of a 3012x5 image
to 0 at any S below 3012 / 5 * 0.5 = 301 px; the image library then raises. Each side is now
clamped to >= 1 px, so such images are answered at their own size by the engine, the command
line and (tests/test_node_bad_input.py) the node.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine_fixtures import tiny_predictor
from xsam_engine import SegmentationRequest, Task, VisualPrompt
from xsam_engine.configuration_xsam import XSamConfig
from xsam_engine.processing import MAX_IMAGE_SIDE, XSamImageProcessor, scaled_size_for

# (height, width): 3012x5, 5x3012, 1x1, 1x4000 and 4000x1 (width x height).
EXTREME_SIZES = [(5, 3012), (3012, 5), (1, 1), (4000, 1), (1, 4000)]


@pytest.mark.parametrize("size, target, expected", [
    # 5 * 256 / 3012 = 0.425 -> int(0.925) = 0 -> clamped to 1; the long side is the target.
    ((5, 3012), 256, (1, 256)),
    ((3012, 5), 256, (256, 1)),
    # 1 * 256 / 4000 = 0.064 -> 0 -> 1.
    ((4000, 1), 256, (256, 1)),
    ((1, 4000), 256, (1, 256)),
    # A 1x1 image is scaled up to the target on both sides.
    ((1, 1), 256, (256, 256)),
    # 5 * 1024 / 3012 = 1.70 -> int(2.20) = 2: the clamp does not change sizes that round to >= 1.
    ((5, 3012), 1024, (2, 1024)),
    # The ordinary rule is unchanged: 480 * 1024 / 640 = 768.
    ((480, 640), 1024, (768, 1024)),
    ((375, 500), 1024, (768, 1024)),
])
def test_scaled_size_keeps_at_least_one_pixel(size, target, expected):
    assert scaled_size_for(size, target) == expected


def test_scaled_size_of_an_empty_image_is_refused():
    with pytest.raises(ValueError, match="empty"):
        scaled_size_for((0, 10), 256)


@pytest.mark.parametrize("size", EXTREME_SIZES)
def test_processor_resizes_images_and_prompt_masks_of_extreme_shape(size):
    config = XSamConfig.tiny(vocab_size=64)
    processor = XSamImageProcessor(config.vision, config.mask_encoder)
    side = processor.sam_size
    inputs = processor.sam_inputs(np.full((*size, 3), 200, np.uint8))
    scaled = scaled_size_for(size, side)
    assert inputs.scaled_size == scaled and min(scaled) >= 1
    assert tuple(inputs.pixel_values.shape) == (1, 3, side, side)
    # The image fills exactly its scaled rectangle; the padding stays 0.
    image_area = inputs.pixel_values[0, :, : scaled[0], : scaled[1]]
    assert bool((image_area != 0).all()) and float(inputs.pixel_values.abs().sum()) == float(image_area.abs().sum())
    full = processor.prompt_mask(np.ones(size, bool), inputs.scaled_size)
    assert tuple(full.shape) == (side, side) and int(full.sum()) == scaled[0] * scaled[1]
    assert processor.siglip_inputs(np.full((*size, 3), 200, np.uint8)).shape[-1] == config.vision.image_size


def _requests(height: int, width: int) -> dict[Task, SegmentationRequest]:
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    return {
        Task.REFERRING: SegmentationRequest(Task.REFERRING, text="red cup", score_threshold=0.0),
        Task.SEMANTIC: SegmentationRequest(Task.SEMANTIC, vocabulary=("cup", "table")),
        Task.INSTANCE: SegmentationRequest(Task.INSTANCE, vocabulary=("cup", "table"), score_threshold=0.0),
        Task.PANOPTIC: SegmentationRequest(Task.PANOPTIC, vocabulary=("cup", "table"), stuff_vocabulary=("table",),
                                           score_threshold=0.0),
        Task.INTERACTIVE: SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(centre_x, centre_y),)),
        Task.VGD: SegmentationRequest(Task.VGD, regions=(VisualPrompt.from_box(0, 0, width, height),),
                                      score_threshold=0.0),
    }


@pytest.fixture(scope="module")
def predictor():
    return tiny_predictor()


@pytest.mark.parametrize("size", EXTREME_SIZES)
def test_every_task_answers_at_the_image_size(predictor, size):
    height, width = size
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    for task, request in _requests(height, width).items():
        result = predictor.segment(request)
        assert result.image_size == (height, width), task
        for instance in result.instances:
            assert instance.mask.shape == (height, width), task
        if task is Task.SEMANTIC:
            assert result.semantic_map.shape == (height, width)


def _write_png(path, height: int, width: int) -> None:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    assert cv2.imwrite(str(path), image)


@pytest.mark.parametrize("size", [(5, 3012), (3012, 5)])
def test_command_line_answers_at_the_image_size(tmp_path, size):
    height, width = size
    path = tmp_path / f"{width}x{height}.png"
    _write_png(path, height, width)
    completed = subprocess.run(
        [sys.executable, "-m", "xsam_engine", "segment", str(path), "grasp the red cup", "--device", "cpu",
         "--backend", "torch"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["image_size"] == [height, width] and answer["task"] == "referring"


def test_command_line_refuses_a_too_large_image_without_a_traceback(tmp_path):
    path = tmp_path / "too_wide.png"
    _write_png(path, 2, MAX_IMAGE_SIDE + 1)
    completed = subprocess.run(
        [sys.executable, "-m", "xsam_engine", "segment", str(path), "red cup", "--device", "cpu", "--backend", "torch"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert f"the largest side supported is {MAX_IMAGE_SIDE} pixels" in completed.stderr


def test_a_prompt_narrower_than_the_sampling_step_is_kept_in_its_cell():
    config = XSamConfig.tiny(vocab_size=64)
    processor = XSamImageProcessor(config.vision, config.mask_encoder)
    # A 7-pixel-wide click (radius 3) at column 1505 of a 3012x5 image; the tiny model's SAM input is
    # 64 px, so the image becomes 64x1 and nearest sampling reads every 3012 / 64 = 47th column
    # (centres 23.5 + 47.06 k: 1482 and 1529), missing columns 1502..1508.
    mask = np.zeros((5, 3012), bool)
    mask[:, 1502:1509] = True
    padded = processor.prompt_mask(mask, scaled_size_for(mask.shape, processor.sam_size))
    # Kept in the cell that contains it: row 0, columns 1502 * 64 // 3012 = 31 .. 1508 * 64 // 3012 = 32.
    assert sorted(map(tuple, padded.nonzero().tolist())) == [(0, 31), (0, 32)]
    # A prompt that nearest sampling reaches is resized as before (nearest, no widening):
    # a 16x16 box at (16, 16) of a 128x128 image -> 8x8 at (8, 8) of the 64x64 input.
    mask = np.zeros((128, 128), bool)
    mask[16:32, 16:32] = True
    padded = processor.prompt_mask(mask, (64, 64))
    expected = np.zeros((64, 64), bool)
    expected[8:16, 8:16] = True
    assert np.array_equal(padded.numpy(), expected)
    assert not processor.prompt_mask(np.zeros((5, 3012), bool), (1, 64)).any()  # empty stays empty
