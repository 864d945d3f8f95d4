"""Bad input never kills the node: every item gets a clear answer and log line, and a good command still works.

One node (the shipped default model, so that the good command at the end has a real mask to
place in 3D) takes: unknown encodings, 0x0 / too large images, data sizes that
do not match width x height x channels, depth of the wrong size, NaN depth, empty and
10,000-character commands, malformed SegmentationCommands, clicks outside the image, and a
command flood. A second node is started with a model directory that has no weights. Commands
before any image and commands that never see one are covered in test_node_plumbing.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from node_driver import (
    Driver, NodeProcess, camera_info_msg, depth_msg, image_msg, module_ros_env, scene_frames,
    stamp_header, wait_for_node_inputs, warm_up_depth,
)

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from xsam_ros.msg import SegmentationCommand  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene  # noqa: E402

TIMEOUT = 60.0
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def scene():
    return generate_scene(14, 640, 480, include=[("cup", "red")])


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_bad_input")
    empty_model_dir = workdir / "model_without_weights"
    empty_model_dir.mkdir()
    env, domain_id, namespace = module_ros_env("bad")
    node = NodeProcess(env, namespace, workdir, {
        "model_path": "", "max_image_pixels": MAX_PIXELS, "max_pending_commands": 4,
        "depth_wait_s": 0.5,  # a loaded 2-core machine delivers some depth images late
    })
    broken = NodeProcess(env, namespace + "_nomodel", workdir, {"model_path": str(empty_model_dir)})
    driver = Driver(domain_id, namespace)
    broken_driver = Driver(domain_id, namespace + "_nomodel")
    try:
        assert node.wait_for_log("Model ready", 90), node.log()
        wait_for_node_inputs(driver, [driver.image_pub, driver.depth_pub, driver.info_pub, driver.command_pub,
                                      driver.text_pub, driver.mouse_pub])
        yield node, driver, broken, broken_driver
    finally:
        driver.close()
        broken_driver.close()
        codes = node.stop(), broken.stop()
    assert codes == (0, 0), (codes, node.log()[-2000:], broken.log()[-2000:])
    assert "Traceback" not in node.log(), node.log()


def _command_with_frames(driver, request_id, frames, text="red cup", timeout=TIMEOUT):
    """A referring command with score threshold 0 (X-SAM's "always the best mask"): these tests need
    a mask to place in 3D or to reject, whatever the model's confidence."""
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(request_id=request_id, text=text, score_threshold=0.0))
    return driver.publish_frames_until(frames, lambda: driver.result_for(request_id=request_id, after=start), timeout)


def _bad_frames(make_msg):
    def frames(index):
        return [(None, make_msg(stamp_header(7000 + index)))]
    return frames


def _publisher_frames(driver, make_msg):
    return lambda index: [(driver.image_pub, make_msg(stamp_header(7000 + index)))]


@pytest.mark.parametrize("case, make, reason", [
    ("encoding", lambda h: Image(header=h, height=4, width=4, encoding="yuv422", step=8, data=bytes(32)),
     "unsupported image encoding 'yuv422'"),
    ("empty", lambda h: Image(header=h, height=0, width=0, encoding="rgb8", step=0, data=b""),
     "width and height must be positive"),
    ("too-large", lambda h: image_msg(np.zeros((1024, 1280, 3), np.uint8), h),
     f"1280x1024 = 1310720 pixels, more than max_image_pixels={MAX_PIXELS}"),
    ("claims-huge", lambda h: Image(header=h, height=100_000, width=100_000, encoding="rgb8", step=300_000, data=b""),
     "more than max_image_pixels"),
    ("short-data", lambda h: Image(header=h, height=48, width=64, encoding="rgb8", step=192, data=bytes(64 * 48 * 3 - 1)),
     "data has 9215 bytes, expected step x height = 9216"),
    ("mono-as-rgb", lambda h: Image(header=h, height=48, width=64, encoding="rgb8", step=192, data=bytes(64 * 48)),
     "data has 3072 bytes"),
])
def test_bad_images_are_answered_with_an_error(session, case, make, reason):
    node, driver, _, _ = session
    result = _command_with_frames(driver, f"bad-image-{case}", _publisher_frames(driver, make))
    assert result is not None, node.log()[-3000:]
    assert not result.success and result.error.startswith("image rejected: ") and reason in result.error
    assert result.header.frame_id == "camera_color_optical_frame" and result.header.stamp.sec >= 7000
    assert node.wait_for_log(f"Rejected an image on {node.namespace}/image: ", 5)
    assert reason[:40] in node.log()
    assert node.alive()


def test_depth_of_the_wrong_size_and_nan_depth_give_no_3d(session, scene):
    node, driver, _, _ = session
    small = np.full((240, 320), 0.8, np.float32)

    def wrong_size(index):
        header = stamp_header(7500 + index)
        return [(driver.info_pub, camera_info_msg(scene.camera, header)), (driver.depth_pub, depth_msg(small, header)),
                (driver.image_pub, image_msg(scene.image, header))]

    warm_up_depth(driver, wrong_size)
    for attempt in range(3):  # the frame that answers may have lost its depth image in transit
        result = _command_with_frames(driver, f"depth-size-{attempt}", wrong_size)
        assert result is not None and result.success, node.log()[-3000:]
        assert all(not instance.has_3d for instance in result.instances)
        if node.wait_for_log("depth image is 320x240 but the colour image is 640x480", 2):
            break
    assert "Depth not used: depth image is 320x240 but the colour image is 640x480" in node.log()

    nan_depth = np.full(scene.depth.shape, np.nan, np.float32)
    frames = scene_frames(driver, scene, 7600, depth_array=nan_depth)
    warm_up_depth(driver, frames)
    result = _command_with_frames(driver, "depth-nan", frames)
    assert result is not None and result.success, result and result.error
    assert all(not instance.has_3d for instance in result.instances)


@pytest.mark.parametrize("fields, reason", [
    ({"text": ""}, "the command is empty"),
    ({"text": "x" * 10_000}, "command text has 10000 characters; the limit is 1000"),
    ({"task": 42, "text": "cup"}, "unknown task 42"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE, "points": [Point(x=1.0, y=1.0)], "point_labels": [1, 0]},
     "one label per point"),
    ({"task": SegmentationCommand.TASK_INSTANCE, "vocabulary": ["cup", "cup"]}, "names the same class more than once"),
    ({"text": "cup", "score_threshold": 7.0}, "score_threshold must be in [0, 1], got 7.0"),
])
def test_bad_commands_are_answered_at_once(session, fields, reason):
    node, driver, _, _ = session
    start = len(driver.instances)
    request_id = f"bad-command-{len(driver.instances)}"
    driver.command_pub.publish(SegmentationCommand(request_id=request_id, **fields))
    result = driver.wait_for(lambda: driver.result_for(request_id=request_id, after=start), 15)
    assert result is not None and not result.success
    assert result.error.startswith("invalid command: ") and reason in result.error
    assert len(result.prompt) <= 1000
    assert node.wait_for_log("Rejected a command message", 5)


@pytest.mark.parametrize("text, reason", [
    ("", "The command is empty"),
    ("   ", "The command is empty"),
    ("y" * 10_000, "10000 characters"),
])
def test_bad_text_commands(session, text, reason):
    node, driver, _, _ = session
    start = len(driver.instances)
    driver.text_pub.publish(String(data=text))
    result = driver.wait_for(lambda: driver.result_for(after=start, predicate=lambda m: reason in m.error), 15)
    assert result is not None and not result.success and result.error.startswith("invalid command: ")
    assert node.wait_for_log("Rejected a command_text message", 5)


def test_clicks_outside_the_image_or_not_finite(session, scene):
    node, driver, _, _ = session
    start = len(driver.instances)
    driver.mouse_pub.publish(Point(x=float("nan"), y=3.0))
    result = driver.wait_for(lambda: driver.result_for(request_id="click", after=start), 15)
    assert result is not None and not result.success and "coordinates must be finite" in result.error
    start = len(driver.instances)
    driver.mouse_pub.publish(Point(x=5000.0, y=-40.0))
    frames = scene_frames(driver, scene, 7800, depth_encoding=None)
    result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="click", after=start), TIMEOUT)
    assert result is not None and not result.success
    assert "covers no pixel of the 640x480 image" in result.error and result.header.stamp.sec >= 7800


def test_command_flood_keeps_the_newest(session, scene):
    """40 commands at once with max_pending_commands=4: the oldest are dropped with an error, the newest run.

    (Commands may also be lost before they reach the node: the command topic is keep-last 10.)
    """
    node, driver, _, _ = session
    start = len(driver.instances)
    for index in range(40):
        driver.command_pub.publish(SegmentationCommand(request_id=f"flood-{index}", text="red cup"))
    dropped = driver.wait_for(lambda: driver.result_for(
        after=start, predicate=lambda m: m.request_id.startswith("flood-") and "dropped" in m.error), 20)
    assert dropped is not None and not dropped.success and "max_pending_commands=4" in dropped.error
    frames = scene_frames(driver, scene, 7900, depth_encoding=None)
    newest = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="flood-39", after=start), TIMEOUT)
    assert newest is not None and newest.success, node.log()[-2000:]
    flood = [m for m in driver.instances[start:] if m.request_id.startswith("flood-")]
    assert all(m.success or "dropped" in m.error for m in flood)
    assert len({m.request_id for m in flood if not m.success}) >= 1
    assert node.wait_for_log("Command queue full (4 waiting for an image)", 5)


def test_zero_stamp_and_missing_frame_id_are_warned_about(session, scene):
    node, driver, _, _ = session
    from std_msgs.msg import Header

    message = image_msg(scene.image, Header())  # stamp 0, frame_id ""
    result = _command_with_frames(driver, "zero-stamp", lambda index: [(driver.image_pub, message)])
    assert result is not None and result.success
    assert (result.header.stamp.sec, result.header.stamp.nanosec, result.header.frame_id) == (0, 0, "")
    assert node.wait_for_log("have a zero stamp: every output copies the image header", 5)


def test_bad_frames_without_a_waiting_command_are_logged_and_counted(session):
    """The header checks run on arrival: bad frames are visible although no command waits for them."""
    node, driver, _, _ = session
    reports = len(driver.diagnostics)
    before = driver.wait_for(lambda: len(driver.diagnostics) > reports and driver.latest_values(), 10)
    assert before and before["pending_commands"] == "0"
    cases = [
        (lambda index: Image(header=stamp_header(7700 + index), height=4, width=4, encoding="bayer_rggb8", step=4,
                             data=bytes(16)),
         f"Rejected an image on {node.namespace}/image: unsupported image encoding 'bayer_rggb8'"),
        (lambda index: Image(header=stamp_header(7710 + index), height=17, width=33, encoding="rgb8", step=99,
                             data=bytes(99 * 17 - 5)),
         "rgb8 image 33x17 with step 99: data has 1678 bytes, expected step x height = 1683"),
    ]
    for make, logged in cases:  # the image subscription keeps 1: publish until the node has seen it
        assert driver.publish_frames_until(lambda index: [(driver.image_pub, make(index))],
                                           lambda: logged in node.log(), 15), node.log()[-2000:]
    values = driver.wait_for(lambda: int(driver.latest_values().get("frames_rejected", 0))
                             >= int(before["frames_rejected"]) + 2 and driver.latest_values(), 10)
    assert values, driver.latest_values()
    assert values["last_error"].startswith("image rejected: ")
    assert values["pending_commands"] == "0"


@pytest.mark.parametrize("width, height", [(3012, 5), (5, 3012)])
def test_extreme_aspect_ratio_images_are_answered_at_their_size(session, width, height):
    """The resize keeps at least one pixel per side (3012x5 -> 256x1 at the model input)."""
    node, driver, _, _ = session
    rng = np.random.default_rng(width)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    result = _command_with_frames(driver, f"extreme-{width}x{height}",
                                  lambda index: [(driver.image_pub, image_msg(pixels, stamp_header(7720 + index)))])
    assert result is not None and result.success, (result and result.error, node.log()[-2000:])
    assert (result.image_width, result.image_height) == (width, height)
    for instance in result.instances:
        assert instance.roi.x_offset + instance.roi.width <= width and instance.roi.y_offset + instance.roi.height <= height


def test_millimetres_in_32fc1_depth_are_reported(session, scene):
    """32FC1 is metres (REP-118); a driver that writes millimetres (~610 at the object) gets no 3D, a
    warning naming the likely cause, a diagnostics counter and last_error."""
    node, driver, _, _ = session
    frames = scene_frames(driver, scene, 7800, depth_array=scene.depth * 1000.0)
    warm_up_depth(driver, frames)
    reports = len(driver.diagnostics)
    before = driver.wait_for(lambda: len(driver.diagnostics) > reports and driver.latest_values(), 10)
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(request_id="depth-mm", text="red cup", score_threshold=0.0))
    result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="depth-mm", after=start), TIMEOUT)
    assert result is not None and result.success and result.instances, node.log()[-2000:]
    assert not any(instance.has_3d for instance in result.instances)
    assert node.wait_for_log("the values look like millimetres, but REP-118 says 32FC1 depth is in metres", 10)
    values = driver.wait_for(lambda: int(driver.latest_values().get("depth_no_valid_pixels", 0))
                             > int(before["depth_no_valid_pixels"]) and driver.latest_values(), 10)
    assert values, driver.latest_values()
    assert values["last_error"].startswith("no 3D for 'red cup': no depth under the mask lies within "
                                           "min_depth_m..max_depth_m")
    assert "look like millimetres" in values["last_error"]


def _sensor_info(scene, header, binning: int = 0, roi: tuple[int, int, int, int] | None = None):
    """camera_info of a 640x480 sensor whose binned (2x2) or cropped (320x240 at (160, 120)) images are
    exactly the 320x240 scene camera's (REP-104: cx' = cx / 2, or cx' = cx - 160)."""
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    camera = scene.camera
    if binning:
        fx, fy, cx, cy = 2 * camera.fx, 2 * camera.fy, 2 * camera.cx, 2 * camera.cy
    else:
        fx, fy, cx, cy = camera.fx, camera.fy, camera.cx + roi[0], camera.cy + roi[1]
    info = CameraInfo(header=header, width=640, height=480, distortion_model="plumb_bob",
                      binning_x=binning, binning_y=binning)
    if roi is not None:
        info.roi = RegionOfInterest(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3])
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def test_binned_and_cropped_camera_info_give_the_plain_camera_centroid(session):
    """320x240 images with the camera_info of a 640x480 sensor binned 2x2, or of a 320x240 ROI at
    (160, 120): 3D as with the plain 320x240 camera_info (within 1 mm). A camera_info whose size still
    differs after ROI and binning is refused with the size it implies."""
    node, driver, _, _ = session
    small = generate_scene(23, 320, 240, include=[("cup", "red")])
    variants = {
        "plain": lambda h: camera_info_msg(small.camera, h),
        "binned": lambda h: _sensor_info(small, h, binning=2),
        "roi": lambda h: _sensor_info(small, h, roi=(160, 120, 320, 240)),
    }
    centroids = {}
    for offset, (name, info) in enumerate(variants.items()):
        first = 7900 + 100 * offset

        def frames(index, info=info, first=first):
            header = stamp_header(first + index)
            return [(driver.info_pub, info(header)), (driver.depth_pub, depth_msg(small.depth, header)),
                    (driver.image_pub, image_msg(small.image, header))]

        warm_up_depth(driver, frames)
        start = len(driver.instances)
        driver.command_pub.publish(SegmentationCommand(request_id=f"info-{name}", text="red cup", score_threshold=0.0))
        result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id=f"info-{name}", after=start),
                                             TIMEOUT)
        assert result is not None and result.success and result.instances, node.log()[-2000:]
        (instance,) = result.instances
        assert instance.has_3d, f"{name}: no 3D\n" + node.log()[-2000:]
        centroids[name] = np.array([instance.centroid.x, instance.centroid.y, instance.centroid.z])
    for name in ("binned", "roi"):
        error = float(np.linalg.norm(centroids[name] - centroids["plain"]))
        assert error < 0.001, f"{name}: centroid {centroids[name]} vs plain {centroids['plain']} ({error * 1000:.2f} mm)"

    def mismatched(index):  # the 640x480 sensor's camera_info, no binning or ROI, for 320x240 images
        header = stamp_header(8200 + index)
        return [(driver.info_pub, _sensor_info(small, header, roi=(0, 0, 0, 0))),
                (driver.depth_pub, depth_msg(small.depth, header)), (driver.image_pub, image_msg(small.image, header))]

    warm_up_depth(driver, mismatched)
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(request_id="info-mismatch", text="red cup", score_threshold=0.0))
    result = driver.publish_frames_until(mismatched, lambda: driver.result_for(request_id="info-mismatch", after=start),
                                         TIMEOUT)
    assert result is not None and result.success and not any(i.has_3d for i in result.instances)
    assert node.wait_for_log("Depth not used: camera_info (640x480 sensor) describes 640x480 images (REP-104: roi "
                             "size / binning) but the images are 320x240", 10), node.log()[-2000:]


def test_the_node_still_answers_a_good_command(session, scene):
    node, driver, _, _ = session
    frames = scene_frames(driver, scene, 8000, depth_encoding="32FC1")
    warm_up_depth(driver, frames)
    result = _command_with_frames(driver, "good-after-bad", frames, text="grasp the red cup")
    assert result is not None and result.success and result.error == ""
    assert result.header.stamp.sec >= 8000 and (result.image_width, result.image_height) == (640, 480)
    assert any(instance.has_3d for instance in result.instances)
    assert node.alive()
    # /diagnostics comes once a second: wait for one that counts everything above.
    values = driver.wait_for(lambda: int(driver.latest_values().get("commands_rejected", 0)) >= 9
                             and driver.latest_values(), 10)
    assert values, str(driver.latest_values())
    assert int(values["frames_rejected"]) >= 6 and int(values["commands_dropped"]) >= 1


def test_missing_model_fails_the_activation_with_the_reason(session, scene):
    """A model directory without weights: activation fails (ERROR), the node returns to unconfigured and stays
    alive, its log and /diagnostics (ERROR) say why; with no subscription, commands are not taken."""
    _, _, broken, driver = session
    assert broken.wait_for_log("could not load the model from", 60), broken.log()
    log = broken.log()
    assert "model.safetensors is missing" in log and "The node returns to unconfigured" in log
    assert driver.get_state(f"{broken.namespace}/perception_node") == "unconfigured"
    status = driver.wait_for(lambda: (s := driver.latest_status()) is not None and s.level == b"\x02" and s, 10)
    assert status is not None and status.message.startswith("model not available: could not load the model")
    assert "model.safetensors" in status.message
    assert driver.command_pub.get_subscription_count() == 0
    assert broken.alive()
