"""Unit tests of xsam_ros.geometry: centroids and extents from synthetic depth with holes and outliers."""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine.tabletop.scenes import generate_scene
from xsam_ros.geometry import (
    GeometryError, back_project, check_camera_matrix, explain_no_valid_depth, image_camera_matrix, object_geometry,
)

WIDTH, HEIGHT = 160, 120
K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])


def pixel_grid():
    return np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))


def plane_depth(distance=1.0, slope_x=0.1, slope_y=-0.05):
    """Depth of a tilted plane n . X = distance, n = (slope_x, slope_y, 1)."""
    u, v = pixel_grid()
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return (distance / (1.0 + slope_x * x + slope_y * y)).astype(np.float32)


def true_mean(mask, depth):
    rows, cols = np.nonzero(mask)
    return back_project(cols, rows, depth[rows, cols], K).mean(axis=0)


def test_plane_centroid_equals_mean_of_surface():
    depth = plane_depth()
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[30:90, 40:120] = True
    result = object_geometry(mask, depth, K)
    np.testing.assert_allclose(result.centroid, true_mean(mask, depth), atol=1e-6)
    assert result.num_points == result.num_mask_pixels == mask.sum()
    # The 60x80 px patch at ~1 m is about 0.4 x 0.53 m (5th-95th percentile: 90 % of that).
    assert 0.45 < result.extent[0] < 0.52 and 0.33 < result.extent[1] < 0.4


def test_holes_and_outliers_are_ignored():
    rng = np.random.default_rng(0)
    clean = plane_depth()
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[30:90, 40:120] = True
    depth = clean.copy()
    holes = rng.random(depth.shape) < 0.15
    depth[holes] = 0.0
    depth[rng.random(depth.shape) < 0.05] = np.nan
    depth[rng.random(depth.shape) < 0.02] = np.inf
    flying = (rng.random(depth.shape) < 0.03) & mask
    depth[flying] = clean[flying] + rng.uniform(0.8, 3.0, flying.sum())  # background / flying pixels
    near = (rng.random(depth.shape) < 0.01) & mask
    depth[near] = 0.01  # below min_depth_m
    result = object_geometry(mask, depth, K, min_depth_m=0.05, max_depth_m=10.0)
    valid = mask & np.isfinite(depth) & (depth > 0.05) & ~flying
    assert np.linalg.norm(result.centroid - true_mean(valid, clean)) < 1e-3
    assert np.linalg.norm(result.centroid - true_mean(mask, clean)) < 5e-3
    assert result.num_points == valid.sum() and result.num_valid_depth > result.num_points


def test_box_on_table_keeps_every_layer_and_measures_extent():
    """A 10 x 10 cm box, 6 cm high, on a table at 0.8 m seen from above; its top face is the mask."""
    table = np.full((HEIGHT, WIDTH), 0.8, np.float32)
    u, v = pixel_grid()
    x = (u - K[0, 2]) / K[0, 0] * 0.74
    y = (v - K[1, 2]) / K[1, 1] * 0.74
    top = (np.abs(x) <= 0.05) & (np.abs(y) <= 0.05)
    depth = np.where(top, 0.74, table).astype(np.float32)
    # A lid step 4 cm deeper inside the top (like a cup's inner floor): must not be rejected.
    inner = (np.abs(x) <= 0.02) & (np.abs(y) <= 0.02)
    depth[inner] = 0.78
    result = object_geometry(top, depth, K)
    np.testing.assert_allclose(result.centroid, true_mean(top, depth), atol=1e-6)
    assert result.num_points == top.sum()
    assert 0.08 < result.extent[0] < 0.105 and 0.08 < result.extent[1] < 0.105
    # Background seen through a leaking mask (table 6 cm behind) is within the object's size and kept,
    # background 1 m behind is rejected.
    leaky = top.copy()
    far = np.zeros_like(top)
    far[0:5, 0:20] = True
    leaky |= far
    depth_far = depth.copy()
    depth_far[far] = 1.9
    np.testing.assert_allclose(object_geometry(leaky, depth_far, K).centroid, true_mean(top, depth), atol=1e-6)


def test_crop_with_roi_matches_full_mask():
    depth = plane_depth()
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:50, 20:70] = True
    mask[20:25, 30:35] = False
    full = object_geometry(mask, depth, K)
    crop = object_geometry(mask[10:50, 20:70], depth, K, roi=(20, 10, 50, 40))
    np.testing.assert_allclose(crop.centroid, full.centroid)
    np.testing.assert_allclose(crop.extent, full.extent)


def test_too_few_valid_pixels_gives_none():
    depth = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[5:10, 5:10] = True
    depth[5, 5:10] = 1.0  # 5 valid pixels < 10
    assert object_geometry(mask, depth, K) is None
    assert object_geometry(np.zeros((HEIGHT, WIDTH), bool), plane_depth(), K) is None


def test_mismatched_sizes_and_bad_camera_matrix_raise():
    depth = plane_depth()
    with pytest.raises(GeometryError, match="differs from depth size 160x120"):
        object_geometry(np.ones((60, 80), bool), depth, K)
    with pytest.raises(GeometryError, match="does not fit"):
        object_geometry(np.ones((10, 10), bool), depth, K, roi=(155, 0, 10, 10))
    with pytest.raises(GeometryError, match="not a valid pinhole matrix"):
        object_geometry(np.ones((HEIGHT, WIDTH), bool), depth, np.zeros(9))
    with pytest.raises(GeometryError, match="9 elements"):
        check_camera_matrix([1.0, 2.0])


def test_tabletop_scenes_with_holes_match_ground_truth_within_3_mm():
    rng = np.random.default_rng(1)
    for seed in (13, 14):
        scene = generate_scene(seed, 320, 240)
        depth = scene.depth.copy()
        depth[rng.random(depth.shape) < 0.1] = 0.0
        depth[rng.random(depth.shape) < 0.05] = np.nan
        for item in scene.objects:
            result = object_geometry(scene.mask(item.instance_id), depth, scene.camera.matrix)
            error = np.linalg.norm(result.centroid - scene.centroid_3d(item.instance_id))
            # Holes drop random surface points; the remaining mean moves by about a millimetre.
            assert error < 3e-3, f"seed {seed} {item.name}: centroid off by {error * 1000:.1f} mm"


@pytest.mark.parametrize("seed, name", [(13, "red cup"), (14, "white cup"), (5, "green bottle")])
def test_mask_bleeding_onto_the_table_is_rejected(seed, name):
    """A predicted mask 3 px too large includes table pixels behind the object; they are dropped."""
    import cv2

    scene = generate_scene(seed, 640, 480)
    (item,) = [o for o in scene.objects if o.name == name]
    truth = scene.centroid_3d(item.instance_id)
    bled = cv2.dilate(scene.mask(item.instance_id).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    with_check = np.linalg.norm(object_geometry(bled, scene.depth, scene.camera.matrix).centroid - truth)
    without = np.linalg.norm(object_geometry(bled, scene.depth, scene.camera.matrix, edge_px=0).centroid - truth)
    assert with_check < 0.01 and with_check < 0.5 * without, (with_check, without)
    # A perfect mask loses (almost) nothing to the rim check.
    exact = object_geometry(scene.mask(item.instance_id), scene.depth, scene.camera.matrix)
    assert np.linalg.norm(exact.centroid - truth) < 2e-3


def test_message_documentation_describes_the_mean_the_code_computes():
    """InstanceMask.msg documents the centroid as the mean of the inlier points; on a skewed surface
    (a 60x80 px patch tilted from 1.0 m to 1.8 m) the mean and the median differ by centimetres, and
    object_geometry returns the mean."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "msg" / "InstanceMask.msg").read_text()
    centroid_doc = text.split("geometry_msgs/Point centroid")[0].rsplit("bool has_3d", 1)[1]
    assert "the mean of the inlier points" in centroid_doc and "median of" not in centroid_doc
    depth = plane_depth(1.0, slope_x=-0.6)  # depth grows steeply to the right: a skewed distribution
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[30:90, 40:120] = True
    rows, cols = np.nonzero(mask)
    points = back_project(cols, rows, depth[rows, cols], K)
    result = object_geometry(mask, depth, K)
    assert result.num_points == mask.sum()  # no outliers on a plane: every point is an inlier
    np.testing.assert_allclose(result.centroid, points.mean(axis=0), atol=1e-6)
    assert np.linalg.norm(np.median(points, axis=0) - points.mean(axis=0)) > 0.005


# -- camera_info ROI and binning (REP-104, as ROS image_geometry's PinholeCameraModel) -----------------

# A plain 320x240 camera (the tabletop scene's), and the 640x480 sensors whose binned or cropped
# images are exactly that camera's images.
PLAIN = generate_scene(13, 320, 240).camera
PLAIN_K = PLAIN.matrix
# Binning 2x2: the sensor has twice the focal length and principal point (cx' = cx / 2).
BINNED_SENSOR_K = np.array([[2 * PLAIN.fx, 0, 2 * PLAIN.cx], [0, 2 * PLAIN.fy, 2 * PLAIN.cy], [0, 0, 1]])
# A 320x240 ROI at (160, 120): same focal length, principal point moved by the offset (cx' = cx - 160).
ROI_SENSOR_K = np.array([[PLAIN.fx, 0, PLAIN.cx + 160], [0, PLAIN.fy, PLAIN.cy + 120], [0, 0, 1]])


@pytest.mark.parametrize("k, binning, roi", [
    (PLAIN_K, (0, 0), (0, 0, 0, 0)),           # nothing to adjust
    (PLAIN_K, (1, 1), (0, 0, 0, 0)),           # binning 1 = 0 = none
    (BINNED_SENSOR_K, (2, 2), (0, 0, 0, 0)),
    (ROI_SENSOR_K, (0, 0), (160, 120, 320, 240)),
])
def test_roi_and_binning_give_the_plain_camera(k, binning, roi):
    full = (320, 240) if k is PLAIN_K else (640, 480)
    matrix = image_camera_matrix(k.reshape(-1).tolist(), full, (320, 240), binning, roi)
    np.testing.assert_allclose(matrix, PLAIN_K, rtol=0, atol=1e-12)


def test_roi_and_binning_together_and_per_axis():
    # ROI 320x240 at (160, 120), then binning 2x2 -> 160x120 images:
    # cx' = (cx - 160) / 2, cy' = (cy - 120) / 2, fx' = fx / 2, fy' = fy / 2 (image_geometry's order).
    k = np.array([[600.0, 0, 330.0], [0, 610.0, 250.0], [0, 0, 1]])
    matrix = image_camera_matrix(k, (640, 480), (160, 120), (2, 2), (160, 120, 320, 240))
    np.testing.assert_allclose(matrix, [[300.0, 0, 85.0], [0, 305.0, 65.0], [0, 0, 1]])
    # Binning only in x (2x1): 320x480 images; only the x row is divided.
    matrix = image_camera_matrix(k, (640, 480), (320, 480), (2, 1))
    np.testing.assert_allclose(matrix, [[300.0, 0, 165.0], [0, 610.0, 250.0], [0, 0, 1]])
    # Binning 4 of 642x481: integer division as image_geometry's reducedResolution -> 160x120.
    assert image_camera_matrix(k, (642, 481), (160, 120), (4, 4))[0, 0] == 150.0
    # Unknown sensor size (0x0, no ROI): nothing to check against.
    np.testing.assert_allclose(image_camera_matrix(k, (0, 0), (320, 240)), k)


@pytest.mark.parametrize("full, image, binning, roi, message", [
    ((640, 480), (320, 240), (0, 0), (0, 0, 0, 0),
     "camera_info (640x480 sensor) describes 640x480 images (REP-104: roi size / binning) but the images are 320x240"),
    ((640, 480), (640, 480), (2, 2), (0, 0, 0, 0),
     "camera_info (640x480 sensor, binning 2x2) describes 320x240 images"),
    ((640, 480), (320, 240), (2, 2), (160, 120, 320, 240),
     "camera_info (640x480 sensor, roi 320x240 at (160, 120), binning 2x2) describes 160x120 images"),
    ((640, 480), (320, 240), (0, 0), (400, 300, 320, 240),
     "camera_info roi 320x240 at (400, 300) does not fit its 640x480 sensor"),
])
def test_sizes_that_remain_different_after_roi_and_binning_are_refused(full, image, binning, roi, message):
    with pytest.raises(GeometryError) as error:
        image_camera_matrix(PLAIN_K, full, image, binning, roi)
    assert message in str(error.value)


@pytest.mark.parametrize("k, binning, roi", [
    (BINNED_SENSOR_K, (2, 2), (0, 0, 0, 0)),
    (ROI_SENSOR_K, (0, 0), (160, 120, 320, 240)),
])
def test_centroid_with_binned_or_cropped_camera_info_equals_the_plain_camera(k, binning, roi):
    """The 3D estimate of every object of a 320x240 scene, with K from a binned / cropped 640x480
    camera_info, equals the one with the plain 320x240 K (requirement: within 1 mm; it is exact)."""
    scene = generate_scene(13, 320, 240)
    matrix = image_camera_matrix(k, (640, 480), (320, 240), binning, roi)
    for item in scene.objects:
        mask = scene.mask(item.instance_id)
        plain = object_geometry(mask, scene.depth, PLAIN_K).centroid
        adjusted = object_geometry(mask, scene.depth, matrix).centroid
        assert np.linalg.norm(adjusted - plain) < 1e-3
        assert np.linalg.norm(adjusted - scene.centroid_3d(item.instance_id)) < 3e-3
    # Without REP-104 the binned K would put every object twice as far from the optical axis.
    raw = object_geometry(scene.mask(scene.objects[0].instance_id), scene.depth, BINNED_SENSOR_K).centroid
    assert np.linalg.norm(raw - object_geometry(scene.mask(scene.objects[0].instance_id), scene.depth, PLAIN_K).centroid) > 0.01


# -- depth without a valid pixel under the mask: the reason, with REP-118 units --------------------------


@pytest.mark.parametrize("depths, encoding, expected", [
    # 32FC1 that holds millimetres: ~610 "m" at the object; 610 / 1000 = 0.61 m is in range -> millimetres.
    (np.full(50, 610.0), "32FC1", "the values look like millimetres, but REP-118 says 32FC1 depth is in metres"),
    # 16UC1 that holds metres (1 -> 0.001 m after the REP-118 factor): 0.001 * 1000 = 1 m is in range.
    (np.full(50, 0.001), "16UC1", "the values look like metres, but REP-118 says 16UC1 depth is in millimetres"),
    (np.full(50, 0.001), "mono16", "REP-118 says mono16 depth is in millimetres"),
    # Out of range in any unit (50 m; 0.05 m in "millimetres" is below 0.1 m): the parameters or the units.
    (np.full(50, 50.0), "32FC1", "check the depth units (REP-118: 32FC1 metres, 16UC1 millimetres) and the "
                                 "min_depth_m / max_depth_m parameters"),
    # Only holes.
    (np.array([0.0, np.nan, np.inf, np.nan]), "32FC1", "every pixel is a hole (0, NaN or inf)"),
])
def test_no_valid_depth_is_explained(depths, encoding, expected):
    text = explain_no_valid_depth(depths, 0.1, 10.0, encoding)
    assert expected in text
    if np.isfinite(depths).any() and depths.max() > 0:
        median = float(np.median(depths))
        assert f"no depth under the mask lies within min_depth_m..max_depth_m = 0.1..10 m: it is " in text
        assert f"(median {median:.4g} m)" in text
