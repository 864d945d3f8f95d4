"""Per-instance point clouds (xsam_ros.point_clouds) from the inlier points of geometry.object_geometry.

Ground truth: tabletop scenes have exact depth (``Scene.depth``, no holes) and exact visible masks
(``Scene.mask``), so an object's true visible surface is the back-projection of its mask pixels
with their depth. A cloud point "lies on the surface" when its distance to the nearest surface
point is at most 1 cm (issue 15's tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
import cv2

from xsam_engine.tabletop.scenes import generate_scene
from xsam_ros.geometry import object_geometry
from xsam_ros.point_clouds import instance_cloud_msg, instance_points
from std_msgs.msg import Header

SURFACE_TOLERANCE_M = 0.01


@pytest.fixture(scope="module")
def scene():
    return generate_scene(23, 320, 240, include=[("cup", "red")])


def surface(scene, instance_id: int) -> np.ndarray:
    rows, cols = np.nonzero(scene.mask(instance_id))
    return scene.camera.back_project(cols, rows, scene.depth[rows, cols])


def distances_to_surface(points: np.ndarray, scene, instance_id: int) -> np.ndarray:
    distances, _ = cKDTree(surface(scene, instance_id)).query(np.asarray(points, dtype=np.float64))
    return distances


def test_points_are_the_centroid_inliers_on_the_true_surface(scene):
    """With the exact mask and depth every mask pixel is an inlier: the points are the surface itself
    (float32 rounding only), and the centroid is their mean (computed once, from the same points)."""
    for item in scene.objects:
        mask = scene.mask(item.instance_id)
        if mask.sum() < 50:
            continue
        geometry = object_geometry(mask, scene.depth, scene.camera.matrix)
        assert geometry.points.shape == (geometry.num_points, 3) and geometry.points.dtype == np.float32
        assert geometry.num_points == mask.sum(), item.name
        np.testing.assert_allclose(geometry.points, surface(scene, item.instance_id), atol=1e-6)
        np.testing.assert_allclose(geometry.centroid, geometry.points.mean(axis=0, dtype=np.float64), atol=1e-6)
        assert distances_to_surface(geometry.points, scene, item.instance_id).max() < 1e-5


def test_holes_and_flying_pixels_never_reach_the_cloud(scene):
    """Real depth has holes (0, NaN, inf) and flying pixels (background seen past an edge). The cloud
    holds no hole and no flying pixel: every point lies within 1 cm of the object's true surface,
    and it is exactly the surface at the pixels that kept valid, true depth."""
    rng = np.random.default_rng(5)
    for item in scene.objects:
        mask = scene.mask(item.instance_id)
        depth = scene.depth.copy()
        holes = rng.random(depth.shape) < 0.15
        depth[holes] = rng.choice(np.array([0.0, np.nan, np.inf], np.float32), holes.sum())
        flying = (rng.random(depth.shape) < 0.04) & mask & ~holes
        depth[flying] += rng.uniform(0.3, 2.0, flying.sum()).astype(np.float32)
        geometry = object_geometry(mask, depth, scene.camera.matrix)
        assert np.isfinite(geometry.points).all()
        assert distances_to_surface(geometry.points, scene, item.instance_id).max() <= SURFACE_TOLERANCE_M, item.name
        kept = mask & ~holes & ~flying
        assert geometry.num_points == kept.sum(), item.name
        rows, cols = np.nonzero(kept)
        np.testing.assert_allclose(geometry.points, scene.camera.back_project(cols, rows, depth[rows, cols]), atol=1e-6)


@pytest.mark.parametrize("seed", [23, 13])
def test_a_mask_bleeding_onto_the_table_keeps_its_points_on_the_object(seed):
    """A predicted mask is rarely exact: grown by 2-4 px (at 640x480; the rim checked is 6 px, 1/100 of
    the image) it covers table pixels around the object, deeper than the object's rim but as deep as
    a cup's inner floor (so the median test alone keeps them). Those continuing the table outside the
    mask and lying behind the object next to them are dropped: >= 95 % of the cloud stays within
    1 cm of the true surface (issue 15's criterion) for every object. Control: without the rim check
    (edge_px=0) the same masks put fewer points on the objects."""
    scene = generate_scene(seed, 640, 480, include=[("cup", "red")])
    for item in scene.objects:
        exact = scene.mask(item.instance_id)
        for grow_px in (2, 4):
            kernel = np.ones((2 * grow_px + 1, 2 * grow_px + 1), np.uint8)
            grown = cv2.dilate(exact.astype(np.uint8), kernel).astype(bool)
            checked = object_geometry(grown, scene.depth, scene.camera.matrix)
            on_surface = (distances_to_surface(checked.points, scene, item.instance_id) <= SURFACE_TOLERANCE_M).mean()
            assert on_surface >= 0.95, f"seed {seed} {item.name} grown by {grow_px} px: {on_surface:.3f} on the object"
            unchecked = object_geometry(grown, scene.depth, scene.camera.matrix, edge_px=0)
            control = (distances_to_surface(unchecked.points, scene, item.instance_id) <= SURFACE_TOLERANCE_M).mean()
            assert control < on_surface, f"seed {seed} {item.name}: {control:.3f} without the rim check"


def test_cloud_message_layout_header_and_ids(scene):
    """Fields x, y, z float32 at 0, 4, 8 and instance_id uint32 at 12 (16 bytes a point), header copied,
    unorganised (height 1), points grouped by instance with the instance's id; decoded here by hand
    from the documented offsets, not with the module's dtype."""
    objects = [o for o in scene.objects if scene.mask(o.instance_id).sum() >= 50][:3]
    geometries = [object_geometry(scene.mask(o.instance_id), scene.depth, scene.camera.matrix) for o in objects]
    ids = [7, 3, 12][: len(objects)]
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_123, 456
    message = instance_cloud_msg(header, ids + [9], geometries + [None])  # an instance without 3D adds nothing
    assert (message.header.stamp.sec, message.header.stamp.nanosec, message.header.frame_id) == (
        1_700_000_123, 456, "camera_color_optical_frame")
    assert message.header is not header  # a copy: the image's header object is never shared
    fields = [(f.name, f.offset, f.datatype, f.count) for f in message.fields]
    assert fields == [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("instance_id", 12, 6, 1)]  # 7 FLOAT32, 6 UINT32
    total = sum(g.num_points for g in geometries)
    assert (message.height, message.width, message.point_step, message.row_step) == (1, total, 16, 16 * total)
    assert message.is_dense and not message.is_bigendian
    raw = np.frombuffer(bytes(message.data), np.uint8).reshape(total, 16)
    xyz = raw[:, :12].copy().view("<f4").reshape(total, 3)
    instance_id = raw[:, 12:].copy().view("<u4").reshape(total)
    start = 0
    for identifier, geometry in zip(ids, geometries):
        end = start + geometry.num_points
        np.testing.assert_array_equal(xyz[start:end], geometry.points)
        assert set(instance_id[start:end].tolist()) == {identifier}
        start = end


def test_no_instance_with_3d_gives_an_empty_cloud():
    header = Header(frame_id="cam")
    message = instance_cloud_msg(header, [1, 2], [None, None])
    assert (message.width, message.height, len(message.data)) == (0, 1, 0)
    assert [f.name for f in message.fields] == ["x", "y", "z", "instance_id"]
    assert instance_points([], []).shape == (0,)
    with pytest.raises(ValueError, match="one id per instance"):
        instance_points([1], [])
