"""What the node publishes while results are in flight: ~/clear, ~/enable and failed continuous commands.

A tiny random-weight model answers (its masks are meaningless, but with score_threshold 0 a
referring command always has its best mask, which lies on the scene's depth and so gets 3D and
markers). depth_wait_s is 1 s: a frame whose depth image never comes keeps its result in flight
(computed, waiting for depth, not yet published) for 1 s while an older depth stream stays
active, and /diagnostics (every 0.2 s) says when a frame is taken (``inference_busy``). That
makes each race deterministic:

- ~/clear while a tracked frame is in flight: that frame's result and markers are never
  published after the DELETEALL;
- ~/enable false while a command's frame is in flight: no result is published; the command is
  answered with success=false saying that the node was disabled;
- a continuous command that fails (refused on arrival, or by the engine) stops the tracked
  command it would have replaced, and says so.
"""

from __future__ import annotations

import numpy as np
import pytest

from node_driver import (
    Driver, NodeProcess, camera_info_msg, depth_msg, image_msg, module_ros_env, save_tiny_model, scene_frames,
    stamp_header, wait_for_node_inputs, warm_up_depth,
)

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402
from xsam_ros.msg import SegmentationCommand  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene  # noqa: E402

TIMEOUT = 60.0
DEPTH_WAIT_S = 1.0  # the parameter's maximum


@pytest.fixture(scope="module")
def scene():
    return generate_scene(13, 320, 240)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_tracking_races")
    model_dir = save_tiny_model(workdir / "tiny_model")
    env, domain_id, namespace = module_ros_env("races")
    node = NodeProcess(env, namespace, workdir, {
        "model_path": str(model_dir), "depth_wait_s": DEPTH_WAIT_S, "command_timeout_s": 30.0,
        "diagnostics_period_s": 0.2,
    })
    driver = Driver(domain_id, namespace)
    driver.subscribe_markers()
    try:
        assert node.wait_for_log("Model ready", 90), node.log()
        wait_for_node_inputs(driver, [driver.image_pub, driver.depth_pub, driver.info_pub, driver.command_pub])
        yield node, driver
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    assert "Traceback" not in node.log(), node.log()


def _service(node, name):
    return f"{node.namespace}/perception_node/{name}"


def _track(driver, scene, request_id, first_sec):
    """Start tracking (score_threshold 0: always an instance) and wait for two tracked results with 3D."""
    frames = scene_frames(driver, scene, first_sec)
    warm_up_depth(driver, frames, start=-500)
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(
        request_id=request_id, text="red cup", continuous=True, score_threshold=0.0))
    tracked = driver.publish_frames_until(frames, lambda: [
        m for m in driver.instances[start:] if m.request_id == request_id and m.tracking
        and any(i.has_3d for i in m.instances)][1:], TIMEOUT, period=0.2)
    assert tracked, "no tracked results with 3D"
    return frames, start


def _frame_without_depth(driver, scene, sec, stale_sec):
    """camera_info + image stamped `sec` (its depth never comes) and a depth image stamped `stale_sec`
    (far from `sec`: it keeps the depth stream active without pairing with this frame)."""
    header = stamp_header(sec)
    return [(driver.info_pub, camera_info_msg(scene.camera, header)),
            (driver.depth_pub, depth_msg(scene.depth, stamp_header(stale_sec))),
            (driver.image_pub, image_msg(scene.image, header))]


def _busy(driver, busy: bool, timeout: float = 10.0) -> bool:
    """Wait for a /diagnostics report that says the worker is (not) handling a frame."""
    expected = "true" if busy else "false"
    reports = len(driver.diagnostics)
    return bool(driver.wait_for(lambda: len(driver.diagnostics) > reports
                                and driver.latest_values().get("inference_busy") == expected, timeout))


def _keep_depth_stream_active(driver, scene, stale_sec, seconds):
    """Depth images of an old stamp every 0.2 s for `seconds` (the node waits only while depth flows)."""
    driver.publish_frames_until(lambda i: [(driver.depth_pub, depth_msg(scene.depth, stamp_header(stale_sec)))],
                                lambda: False, seconds, period=0.2)


def test_clear_while_a_tracked_frame_is_in_flight_publishes_nothing_stale(session, scene):
    node, driver = session
    frames, start = _track(driver, scene, "race-clear", 30000)
    tracked_markers = [m for array in driver.markers for m in array.markers if m.action == Marker.ADD]
    assert tracked_markers and all(m.ns.startswith("xsam/tracked/") for m in tracked_markers
                                   if m.header.stamp.sec >= 30000)  # the tracked stream's own namespaces
    assert _busy(driver, False)
    # Frame 30900 has no depth: its tracked result waits up to 1 s for it, then would be published.
    for publisher, message in _frame_without_depth(driver, scene, 30900, 30000):
        publisher.publish(message)
    assert _busy(driver, True), "the worker never took frame 30900"
    marker_count = len(driver.markers)
    response = driver.call(Trigger, _service(node, "clear"), Trigger.Request())
    assert response is not None and response.success and "stopped tracking 'red cup'" in response.message
    _keep_depth_stream_active(driver, scene, 30000, DEPTH_WAIT_S + 1.0)  # past the in-flight frame's wait
    assert driver.result_for(request_id="race-clear", after=start,
                             predicate=lambda m: m.header.stamp.sec == 30900) is None, node.log()[-2000:]
    # On the markers topic (ordered): after the DELETEALL of ~/clear, no tracked marker is added.
    arrays = driver.markers[marker_count:]
    clear_index = next(i for i, a in enumerate(arrays) if any(m.action == Marker.DELETEALL and m.ns == ""
                                                               for m in a.markers))
    assert not [m for a in arrays[clear_index + 1:] for m in a.markers if m.ns.startswith("xsam/tracked/")
                and m.action == Marker.ADD]


def test_disable_while_a_command_frame_is_in_flight_answers_with_an_error(session, scene):
    node, driver = session
    frames = scene_frames(driver, scene, 31000)
    warm_up_depth(driver, frames, start=-500)
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(request_id="race-enable", text="red cup", score_threshold=0.0))
    # The command waits in the node (diagnostics come once a second) before its frame is sent.
    assert driver.wait_for(lambda: int(driver.latest_values().get("pending_commands", 0)) >= 1, 10)
    assert _busy(driver, False)
    for publisher, message in _frame_without_depth(driver, scene, 31900, 31000):
        publisher.publish(message)
    assert _busy(driver, True), "the worker never took frame 31900"
    response = driver.call(SetBool, _service(node, "enable"), SetBool.Request(data=False))
    assert response is not None and response.success
    try:
        answer = driver.wait_for(lambda: driver.result_for(request_id="race-enable", after=start), DEPTH_WAIT_S + 10)
        assert answer is not None, node.log()[-2000:]
        assert not answer.success and answer.header.stamp.sec == 31900
        assert answer.error == "the node was disabled (~/enable) while this command was being answered"
        assert not [m for m in driver.instances[start:] if m.success]
    finally:
        assert driver.call(SetBool, _service(node, "enable"), SetBool.Request(data=True)).success


@pytest.mark.parametrize("case, command, reason", [
    # Refused on arrival: an unknown task.
    ("arrival", SegmentationCommand(request_id="bad-track", task=42, text="cup", continuous=True),
     "invalid command: unknown task 42"),
    # Refused by the engine: a click outside the 320x240 image.
    ("engine", SegmentationCommand(request_id="bad-track", task=SegmentationCommand.TASK_INTERACTIVE,
                                   points=[Point(x=5000.0, y=5000.0)], continuous=True),
     "covers no pixel of the 320x240 image"),
])
def test_a_failed_continuous_command_stops_the_tracked_one(session, scene, case, command, reason):
    node, driver = session
    first = 32000 + 1000 * (case == "engine")
    frames, _ = _track(driver, scene, f"tracked-before-{case}", first)
    start = len(driver.instances)
    driver.command_pub.publish(command)
    failed = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="bad-track", after=start),
                                         TIMEOUT, start=300)
    assert failed is not None and not failed.success and reason in failed.error, node.log()[-2000:]
    failed_index = driver.instances.index(failed)
    assert failed.error.endswith("; the previously tracked command 'red cup' was stopped (a new continuous command "
                                 "replaces it, also when it fails)")
    assert node.wait_for_log("Stopped tracking 'red cup': a newer continuous command failed.", 5)
    # Diagnostics say nothing is tracked, and no result of the old command follows the failure (the
    # instances topic is ordered: a tracked result published before the stop arrives before it).
    values = driver.publish_frames_until(frames, lambda: driver.latest_values().get("tracking") == "" and
                                         driver.latest_values(), 15, start=600)
    assert values is not None
    assert driver.result_for(request_id=f"tracked-before-{case}", after=failed_index + 1) is None
    response = driver.call(Trigger, _service(node, "clear"), Trigger.Request())
    assert response.success and response.message == "nothing was tracked"
