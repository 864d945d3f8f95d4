"""xsam_ros.depth without ROS processes: pairing by stamp, the bounded wait, conversion, size / unit checks, 3D.

Real messages (sensor_msgs Image / CameraInfo built here), a generated tabletop scene with its
depth and camera, no node and no spinning. Expected values come from the scene's ground truth
(``Scene.centroid_3d``: the mean of the object's visible surface) or are written out below.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from node_driver import camera_info_msg, depth_msg, stamp_header

from xsam_engine import postprocessing
from xsam_engine.tabletop.scenes import generate_scene
from xsam_ros.depth import DepthMatch, DepthPairer, DepthSettings, RegisteredDepth, StampBuffer, instance_geometry

SETTINGS = DepthSettings(slop_s=0.02, wait_s=0.0)


@pytest.fixture(scope="module")
def scene():
    return generate_scene(13, 320, 240)


def _pairer(scene, stamps, encoding="32FC1", depth_m=None):
    pairer = DepthPairer("/cam/depth", "/cam/info")
    for sec in stamps:
        pairer.add_camera_info(camera_info_msg(scene.camera, stamp_header(sec)))
        pairer.add_depth(depth_msg(scene.depth if depth_m is None else depth_m, stamp_header(sec), encoding))
    return pairer


def test_stamp_buffer_exact_slop_and_capacity():
    buffer: StampBuffer[str] = StampBuffer(3)
    for stamp, name in ((100, "a"), (200, "b"), (300, "c"), (400, "d")):
        buffer.add(stamp, name)
    assert buffer.stamps() == [200, 300, 400]  # oldest dropped
    assert buffer.find(300, 0) == (300, "c")
    assert buffer.find(310, 0) is None
    assert buffer.find(310, 20) == (300, "c")
    assert buffer.find(350, 50) == (400, "d")  # tie: the newer one
    assert buffer.latest() == (400, "d")
    with pytest.raises(ValueError):
        StampBuffer(0)


@pytest.mark.parametrize("image_stamp, slop_s, paired", [
    ((5, 0), 0.0, 5),                   # exact
    ((5, 10_000_000), 0.02, 5),         # 10 ms off, within 20 ms
    ((5, 990_000_000), 0.02, 6),        # 10 ms before the next one
    ((5, 500_000_000), 0.02, None),     # 500 ms from both: none
])
def test_match_pairs_by_stamp_within_the_slop(scene, image_stamp, slop_s, paired):
    pairer = _pairer(scene, [4, 5, 6])
    match = pairer.match(stamp_header(*image_stamp), slop_s)
    if paired is None:
        assert match.depth is None and match.info is None
    else:
        assert match.depth[1].header.stamp.sec == paired and match.info[1].header.stamp.sec == paired


def test_registered_depth_is_metres_with_the_image_k(scene):
    for encoding in ("32FC1", "16UC1"):
        pairer = _pairer(scene, [7], encoding)
        registered, problems = pairer.registered(stamp_header(7), (240, 320), SETTINGS)
        assert problems == [] and registered.encoding == encoding
        np.testing.assert_allclose(registered.camera_matrix, scene.camera.matrix)
        valid = np.isfinite(scene.depth) & (scene.depth > 0)
        tolerance = 0.0005 if encoding == "16UC1" else 1e-6  # 16UC1 holds whole millimetres
        np.testing.assert_allclose(registered.depth[valid], scene.depth[valid], atol=tolerance)


def test_a_late_depth_image_is_waited_for_while_the_stream_is_active(scene):
    pairer = _pairer(scene, [1])  # the stream is active: a depth image arrived just now
    header = stamp_header(2)
    later = threading.Timer(0.2, lambda: pairer.add_depth(depth_msg(scene.depth, stamp_header(2))))
    later.start()
    started = time.monotonic()
    found = pairer.wait_for_depth(header, 0.0, wait_s=2.0)
    waited = time.monotonic() - started
    later.join()
    assert found is not None and found[0] == 2_000_000_000 and 0.1 < waited < 1.5
    # No depth stream (never a depth image): no wait at all.
    idle = DepthPairer()
    started = time.monotonic()
    assert idle.wait_for_depth(header, 0.0, wait_s=1.0) is None and time.monotonic() - started < 0.1


@pytest.mark.parametrize("case, counter, text", [
    ("no depth yet", "depth_missing", "No depth image for the image stamped 9.000000000: none has arrived on /cam/depth yet"),
    ("other stamps", "depth_missing", "buffered depth stamps differ by more than depth_slop_s=0.02 s"),
    ("wrong size", "depth_rejected", "Depth not used: depth image is 160x120 but the colour image is 320x240"),
    ("bad encoding", "depth_rejected", "Depth not used: unsupported depth encoding '8UC1'"),
    ("no camera_info", "depth_missing", "Depth arrived but no camera_info on /cam/info"),
    ("camera_info of another camera", "depth_rejected", "Depth not used: camera_info (640x480 sensor) describes"),
])
def test_registered_depth_problems_say_why(scene, case, counter, text):
    header = stamp_header(9)
    pairer = DepthPairer("/cam/depth", "/cam/info")
    if case == "other stamps":
        pairer = _pairer(scene, [3])
    elif case == "wrong size":
        pairer = _pairer(scene, [9], depth_m=scene.depth[::2, ::2])
    elif case == "bad encoding":
        pairer.add_camera_info(camera_info_msg(scene.camera, header))
        message = depth_msg(scene.depth, header)
        message.encoding, message.step, message.data = "8UC1", 320, bytes(320 * 240)
        pairer.add_depth(message)
    elif case == "no camera_info":
        pairer.add_depth(depth_msg(scene.depth, header))
    elif case == "camera_info of another camera":
        info = camera_info_msg(scene.camera, header)
        info.width, info.height = 640, 480
        pairer.add_camera_info(info)
        pairer.add_depth(depth_msg(scene.depth, header))
    registered, problems = pairer.registered(header, (240, 320), SETTINGS)
    assert registered is None and len(problems) == 1
    assert problems[0].counter == counter and text in problems[0].text, problems[0].text


def test_a_depth_frame_id_other_than_the_image_is_used_with_a_warning(scene):
    pairer = DepthPairer()
    pairer.add_camera_info(camera_info_msg(scene.camera, stamp_header(3)))
    pairer.add_depth(depth_msg(scene.depth, stamp_header(3, frame_id="depth_optical_frame")))
    registered, problems = pairer.registered(stamp_header(3), (240, 320), SETTINGS)
    assert registered is not None
    assert [p.key for p in problems] == ["depth-frame"] and "'depth_optical_frame' differs" in problems[0].text


def _instance(scene, instance_id):
    labels = tuple(o.name for o in scene.objects)
    return postprocessing.make_instance(scene.instance_map == instance_id, instance_id - 1, 0.9, labels)


def test_instance_geometry_matches_the_scene_within_3_mm(scene):
    registered = RegisteredDepth(scene.depth.astype(np.float32), scene.camera.matrix, "32FC1")
    for obj in scene.objects:
        if (scene.instance_map == obj.instance_id).sum() < 200:
            continue
        geometry, problem = instance_geometry(_instance(scene, obj.instance_id), registered, DepthSettings())
        assert problem is None and geometry is not None, obj.name
        error = np.linalg.norm(np.asarray(geometry.centroid) - scene.centroid_3d(obj.instance_id))
        assert error < 0.003, (obj.name, error)


@pytest.mark.parametrize("scale, encoding, cause", [
    (1000.0, "32FC1", "the values look like millimetres, but REP-118 says 32FC1 depth is in metres"),
    (np.nan, "32FC1", "every pixel is a hole"),
])
def test_no_valid_depth_under_a_mask_is_explained_and_counted(scene, scale, encoding, cause):
    registered = RegisteredDepth((scene.depth * scale).astype(np.float32), scene.camera.matrix, encoding)
    instance = _instance(scene, scene.objects[0].instance_id)
    geometry, problem = instance_geometry(instance, registered, DepthSettings())
    assert geometry is None and problem is not None
    assert problem.counter == "depth_no_valid_pixels" and cause in problem.text
    assert problem.last_error.startswith(f"no 3D for {instance.label!r}: ")
    # One throttle key per cause: the numbers in the text (which vary per frame) are not part of it.
    shifted = RegisteredDepth((scene.depth * scale * 1.01).astype(np.float32), scene.camera.matrix, encoding)
    assert instance_geometry(instance, shifted, DepthSettings())[1].key == problem.key


def test_early_match_is_kept_when_the_buffer_moved_on(scene):
    """The pair found when the frame was taken is used after inference even if the buffer dropped it."""
    pairer = _pairer(scene, [1])
    early = pairer.match(stamp_header(1), 0.0)
    for sec in range(2, 20):  # a slow inference: 18 newer depth images push stamp 1 out of the buffer of 10
        pairer.add_depth(depth_msg(scene.depth, stamp_header(sec)))
    assert pairer.match(stamp_header(1), 0.0).depth is None
    registered, problems = pairer.registered(stamp_header(1), (240, 320), SETTINGS, early)
    assert registered is not None and problems == []
    assert isinstance(early, DepthMatch)
