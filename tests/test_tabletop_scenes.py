"""Tabletop scene generator: determinism, ground-truth consistency, depth, sizes and sequences."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xsam_engine.tabletop import CLASSES, TABLE_CLASS_ID, generate_scene, generate_sequence

SEEDS = range(12)


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed) for seed in SEEDS]


def test_same_seed_gives_identical_scene():
    first, second = generate_scene(42), generate_scene(42)
    for name in ("image", "instance_map", "semantic_map", "depth"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.objects == second.objects
    assert first.camera == second.camera


def test_different_seeds_differ():
    first, second = generate_scene(1), generate_scene(2)
    assert not np.array_equal(first.image, second.image)
    assert not np.array_equal(first.depth, second.depth)


def test_maps_agree_with_objects(scenes):
    for scene in scenes:
        assert scene.image.shape == (256, 256, 3) and scene.image.dtype == np.uint8
        assert scene.instance_map.dtype == np.int32 and scene.semantic_map.dtype == np.int32
        assert 2 <= len(scene.objects) <= 6
        ids = set(np.unique(scene.instance_map).tolist()) - {0}
        assert ids == {obj.instance_id for obj in scene.objects}
        expected = np.full(scene.instance_map.shape, TABLE_CLASS_ID, dtype=np.int32)
        for index, obj in enumerate(scene.objects, start=1):
            assert obj.instance_id == index
            assert obj.category in CLASSES
            expected[scene.instance_map == index] = CLASSES.index(obj.category)
        np.testing.assert_array_equal(scene.semantic_map, expected)


def test_every_object_stays_visible_with_tight_boxes(scenes):
    for scene in scenes:
        for obj in scene.objects:
            mask = scene.mask(obj.instance_id)
            assert obj.area == mask.sum()
            assert obj.area >= 150, (obj, "too few visible pixels")
            assert obj.area >= 0.6 * obj.full_area, (obj, "more than 40 % occluded")
            rows, cols = np.nonzero(mask)
            assert obj.box_xyxy == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            np.testing.assert_allclose(obj.centre_xy, (cols.mean(), rows.mean()))


def test_scenes_have_occlusions():
    occluded = sum(obj.area < obj.full_area for seed in range(30) for obj in generate_scene(seed).objects)
    assert occluded >= 5, "overlapping objects should be common"


def test_depth_is_physical(scenes):
    for scene in scenes:
        depth = scene.depth
        assert depth.dtype == np.float32 and depth.shape == scene.instance_map.shape
        assert np.isfinite(depth).all() and (depth > 0.3).all() and (depth < 1.3).all()
        table = scene.plane.depth_map(scene.camera)
        on_table = scene.table_mask()
        # The table is flat up to paper scraps and napkins (1 mm at most).
        assert np.abs(depth[on_table] - table[on_table]).max() < 1.5e-3
        for obj in scene.objects:
            mask = scene.mask(obj.instance_id)
            assert (depth[mask] < table[mask] - 3e-3).all(), f"{obj.category} is not above the table"
            assert np.median(table[mask] - depth[mask]) < obj.height_m + 1e-6


def test_object_heights_follow_their_class():
    heights: dict[str, list[float]] = {}
    for seed in range(25):
        for obj in generate_scene(seed).objects:
            assert obj.height_m > obj.base_height_m >= 0.0
            heights.setdefault(obj.category, []).append(obj.height_m - obj.base_height_m)
    assert max(heights["plate"]) < 0.025
    assert min(heights.get("can", [0.11])) > 0.1
    assert min(heights.get("mug", [0.09])) > 0.08


def test_centroid_3d_is_mean_back_projection(scenes):
    scene = scenes[0]
    inverse = np.linalg.inv(scene.camera.matrix)
    for obj in scene.objects:
        rows, cols = np.nonzero(scene.instance_map == obj.instance_id)
        pixels = np.stack([cols, rows, np.ones_like(cols)]).astype(np.float64)
        points = (inverse @ pixels) * scene.depth[rows, cols].astype(np.float64)
        np.testing.assert_allclose(scene.centroid_3d(obj.instance_id), points.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("size", [(640, 480), (96, 80)])
def test_other_image_sizes(size):
    width, height = size
    scene = generate_scene(3, width=width, height=height)
    assert scene.image.shape == (height, width, 3)
    assert scene.camera.width == width and scene.camera.height == height
    min_pixels = 150 * width * height / 256**2
    assert scene.objects and all(obj.area >= min_pixels - 1 for obj in scene.objects)


def test_options_include_and_validation():
    scene = generate_scene(5, include=[("cup", "red"), ("ball", "blue")], shadows=False, distractors=False)
    names = [obj.name for obj in scene.objects]
    assert "red cup" in names and "blue ball" in names
    with pytest.raises(TypeError, match="valid options"):
        generate_scene(5, shadow=False)
    with pytest.raises(ValueError, match="choose"):
        generate_scene(5, categories=("spoon",))


def test_render_time():
    generate_scene(0)  # warm-up
    timings = []
    for seed in range(5):
        start = time.perf_counter()
        generate_scene(seed)
        timings.append(time.perf_counter() - start)
    median_ms = 1000 * float(np.median(timings))
    print(f"256x256 scene: median {median_ms:.1f} ms")
    assert median_ms < 100  # generous: the target is < 20 ms on an idle core


def test_sequence_moves_exactly_one_object():
    frames = generate_sequence(7, num_frames=10)
    moving = frames[0].info["moving_instance"]
    first = frames[0]
    for index, frame in enumerate(frames):
        assert frame.info["frame"] == index
        assert [(o.instance_id, o.category, o.colour) for o in frame.objects] == [
            (o.instance_id, o.category, o.colour) for o in first.objects
        ]
        assert not np.array_equal(frame.depth, first.depth) or index == 0
    for previous, current in zip(frames, frames[1:]):
        step = np.hypot(
            *np.subtract(current.objects[moving - 1].centre_xy, previous.objects[moving - 1].centre_xy)
        )
        assert 0.8 <= step <= 5.0, f"moving object stepped {step:.2f} px"
        # Everything else stays: identical labels wherever the moving object is in neither frame.
        still = (previous.instance_map != moving) & (current.instance_map != moving)
        np.testing.assert_array_equal(previous.instance_map[still], current.instance_map[still])


def test_sequence_is_deterministic_and_respects_moving_instance():
    first = generate_sequence(11, num_frames=4, moving_instance=1)
    second = generate_sequence(11, num_frames=4, moving_instance=1)
    assert first[0].info["moving_instance"] == 1
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(ValueError, match="moving_instance"):
        generate_sequence(11, num_frames=4, moving_instance=99)


def test_seeds_with_one_red_cup_follow_the_rule():
    """The demo / node-test scene rule: the first seeds from 900,000,000 whose rendered 640x480
    scene holds exactly one red cup. Checked against rendered scenes for every seed up to the third
    one found (each earlier seed has zero or several red cups)."""
    from xsam_engine.tabletop import seeds_with_one

    found = seeds_with_one("cup", "red", 3, 900_000_000)
    assert found == [900_000_011, 900_000_018, 900_000_019]
    for seed in range(900_000_000, found[-1] + 1):
        count = sum(o.name == "red cup" for o in generate_scene(seed, 640, 480).objects)
        assert (count == 1) == (seed in found), seed
    with pytest.raises(ValueError, match="Unknown object"):
        seeds_with_one("spoon", "red", 1, 0)
