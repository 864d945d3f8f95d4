"""Proof of life of the perception node with a tiny random-weight model (Isaac ROS style).

The node runs in its own process (``python -m xsam_ros.perception_node``, started once for this
module); this test process drives it over ROS with real messages. The masks of a random model
are meaningless, so these tests check the plumbing: headers, sizes, encodings, which stages
ran, overlay / markers / label image, clicks, tracking without the LLM, services, runtime
parameters, diagnostics, time-outs and the start-up log. Accuracy is in test_node_accuracy.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from node_driver import (
    Driver, NodeProcess, mask_from_msg, module_ros_env, save_tiny_model, scene_frames, stages,
    stamp_header, wait_for_node_inputs, warm_up_depth,
)

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402
from xsam_ros.msg import InstanceMaskArray, SegmentationCommand  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene  # noqa: E402

ANSWER_TIMEOUT = 60.0
WIDTH, HEIGHT = 640, 480


@pytest.fixture(scope="module")
def scene():
    return generate_scene(13, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_plumbing")
    model_dir = save_tiny_model(workdir / "tiny_model")
    env, domain_id, namespace = module_ros_env("plumbing")
    node = NodeProcess(env, namespace, workdir, {
        "model_path": str(model_dir), "command_timeout_s": 3.0, "depth_wait_s": 0.5, "no_image_warning_s": 1.0,
        "publish_label_image": True, "max_instances": 5,
    })
    driver = Driver(domain_id, namespace)
    driver.subscribe_overlay()
    driver.subscribe_markers()
    try:
        assert node.wait_for_log("Model ready", 90), node.log()
        wait_for_node_inputs(driver, [driver.image_pub, driver.depth_pub, driver.info_pub, driver.command_pub,
                                      driver.text_pub, driver.mouse_pub, driver.clicked_pub])
        yield node, driver
    finally:
        driver.close()
        code = node.stop()
        log = node.log()
    assert code == 0, f"the node did not shut down cleanly on SIGINT (exit {code}):\n{log[-3000:]}"
    assert "Traceback" not in log, log


def test_startup_log_says_what_the_node_waits_for(session):
    node, _ = session
    ns = node.namespace
    assert node.wait_for_log("Publishers: 1 reliable, 0 best-effort", 15), node.log()
    log = node.log()
    assert f"Waiting for images on {ns}/image [Image, reliable (auto: matched to publishers), depth 1]" in log
    assert f"commands on {ns}/command [SegmentationCommand] and {ns}/command_text [String]" in log
    assert f"clicks on {ns}/image_mouse_left [Point] and {ns}/clicked_point [PointStamped, pixels]" in log
    assert f"depth on {ns}/depth" in log and f"{ns}/camera_info" in log
    assert "Publishing" in log and f"{ns}/instances" in log and "/diagnostics" in log
    # The no-image warning names the topic, its publishers and the subscription's QoS.
    warning = next(line for line in log.splitlines() if "Publishers: 1 reliable" in line)
    assert f"No image received on {ns}/image" in warning and "this subscription is reliable (auto)" in warning


def test_command_before_any_image_is_answered_by_the_first_frame(session, scene):
    node, driver = session
    driver.command_pub.publish(SegmentationCommand(request_id="early", text="grasp the red cup"))
    frames = scene_frames(driver, scene, first_sec=1000)
    result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="early"), ANSWER_TIMEOUT)
    assert result is not None, node.log()[-3000:]
    assert result.success, result.error
    assert result.header.frame_id == "camera_color_optical_frame"
    assert result.header.stamp.sec >= 1000 and result.header.stamp.nanosec == 0  # a frame sent after the command
    assert result.task == SegmentationCommand.TASK_REFERRING and result.prompt == "grasp the red cup"
    assert (result.image_width, result.image_height) == (WIDTH, HEIGHT) and not result.tracking
    assert list(result.vocabulary) == ["red cup"]
    assert {"mask_encoder", "llm", "decoder", "image_conversion", "ros_conversion"} <= set(stages(result))
    for instance in result.instances:
        assert instance.id >= 1 and instance.mask.encoding == "mono8"
        assert (instance.mask.width, instance.mask.height) == (instance.roi.width, instance.roi.height)
        assert instance.mask.header == result.header
        assert instance.area == mask_from_msg(instance, WIDTH, HEIGHT).sum()


def test_text_command_gives_overlay_markers_label_image_and_3d(session, scene):
    node, driver = session
    frames = scene_frames(driver, scene, first_sec=2000, depth_encoding="16UC1")
    warm_up_depth(driver, frames)
    start = (len(driver.instances), len(driver.overlays), len(driver.markers))
    driver.text_pub.publish(String(data="pick up the blue bowl"))
    result = driver.publish_frames_until(
        frames, lambda: driver.result_for(prompt="pick up the blue bowl", after=start[0]), ANSWER_TIMEOUT)
    assert result is not None and result.success, node.log()[-3000:]
    assert result.request_id == "" and result.header.stamp.sec >= 2000
    # Label image: 16UC1, image size, the message's header.
    assert result.label_image_type == InstanceMaskArray.LABEL_IMAGE_INSTANCE
    assert (result.label_image.encoding, result.label_image.width, result.label_image.height) == ("16UC1", WIDTH, HEIGHT)
    assert result.label_image.header == result.header
    # Overlay: rendered (someone subscribes), same header, rgb8.
    overlay = driver.wait_for(lambda: next(
        (o for o in driver.overlays[start[1]:] if o.header == result.header), None), 10)
    assert overlay is not None and overlay.encoding == "rgb8" and (overlay.width, overlay.height) == (WIDTH, HEIGHT)
    # 3D from the 16UC1 depth, and markers in the camera frame.
    with_3d = [instance for instance in result.instances if instance.has_3d]
    assert with_3d, f"no 3D estimate ({len(result.instances)} instances):\n" + node.log()[-3000:]
    assert 0.3 < with_3d[0].centroid.z < 1.5 and with_3d[0].depth_pixels > 0
    markers = driver.wait_for(lambda: next(
        (m for m in driver.markers[start[2]:] if m.markers and m.markers[-1].header == result.header), None), 10)
    assert markers is not None
    kinds = [(marker.action, marker.type) for marker in markers.markers]
    assert kinds[0] == (Marker.DELETEALL, 0) or (Marker.ADD, Marker.SPHERE) in kinds
    assert {(Marker.ADD, Marker.SPHERE), (Marker.ADD, Marker.CUBE), (Marker.ADD, Marker.TEXT_VIEW_FACING)} <= set(kinds)
    assert all(marker.header.frame_id == "camera_color_optical_frame" for marker in markers.markers)


@pytest.mark.parametrize("kind", ["image_mouse_left", "clicked_point"])
def test_clicks_give_an_interactive_result(session, scene, kind):
    node, driver = session
    start = len(driver.instances)
    x, y = scene.objects[0].centre_xy
    if kind == "image_mouse_left":
        driver.mouse_pub.publish(Point(x=float(x), y=float(y)))
    else:
        driver.clicked_pub.publish(PointStamped(header=stamp_header(1, 0, "ignored"), point=Point(x=float(x), y=float(y))))
    frames = scene_frames(driver, scene, first_sec=3000 + 100 * (kind == "clicked_point"))
    result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="click", after=start), ANSWER_TIMEOUT)
    assert result is not None, node.log()[-3000:]
    assert result.success, result.error
    assert result.task == SegmentationCommand.TASK_INTERACTIVE
    assert result.prompt == f"click ({x:.0f}, {y:.0f})" and list(result.vocabulary) == ["region 0"]
    assert result.header.frame_id == "camera_color_optical_frame" and result.header.stamp.sec >= 3000


def test_continuous_command_tracks_without_the_llm_until_cleared(session, scene):
    node, driver = session
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(request_id="track", text="red cup", continuous=True))
    frames = scene_frames(driver, scene, first_sec=4000, depth_encoding=None)
    tracked = driver.publish_frames_until(
        frames, lambda: [m for m in driver.instances[start:] if m.request_id == "track" and m.tracking][2:],
        ANSWER_TIMEOUT, period=0.2)
    assert tracked, node.log()[-3000:]
    results = [m for m in driver.instances[start:] if m.request_id == "track"]
    first = results[0]
    assert first.success and not first.tracking and "llm" in stages(first)
    for message in results[1:]:
        assert message.success and message.tracking, message.error
        assert "llm" not in stages(message) and "vision_encoder" not in stages(message)
        assert message.header.stamp.sec > first.header.stamp.sec
    stamps = [m.header.stamp.sec for m in results]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # one result per frame, newest first
    # Diagnostics count LLM passes and tracked frames.
    values = driver.wait_for(lambda: int(driver.latest_values().get("tracked_frames", 0)) >= 2
                             and driver.latest_values(), 10)
    assert values and values["tracking"] == "red cup"
    llm_runs = int(values["llm_runs"])
    more = driver.publish_frames_until(
        frames, lambda: len([m for m in driver.instances[start:] if m.request_id == "track"]) >= len(results) + 3,
        ANSWER_TIMEOUT, period=0.2, start=100)
    assert more
    later = driver.wait_for(lambda: int(driver.latest_values().get("tracked_frames", 0)) > int(values["tracked_frames"])
                            and driver.latest_values(), 10)
    assert later and int(later["llm_runs"]) == llm_runs  # tracking never ran the language model

    response = driver.call(Trigger, f"{node.namespace}/perception_node/clear", Trigger.Request())
    assert response is not None and response.success and "stopped tracking 'red cup'" in response.message
    count = len(driver.instances)
    # After ~/clear new frames give no more results for the command.
    extra = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="track", after=count + 1), 1.5,
                                        period=0.2, start=200)
    assert extra is None
    response = driver.call(Trigger, f"{node.namespace}/perception_node/clear", Trigger.Request())
    assert response.success and response.message == "nothing was tracked"


def test_enable_service(session, scene):
    node, driver = session
    name = f"{node.namespace}/perception_node/enable"
    response = driver.call(SetBool, name, SetBool.Request(data=False))
    assert response is not None and response.success and response.message.startswith("disabled")
    start = len(driver.instances)
    driver.command_pub.publish(SegmentationCommand(request_id="while-disabled", text="red cup"))
    refused = driver.wait_for(lambda: driver.result_for(request_id="while-disabled", after=start), 10)
    assert refused is not None and not refused.success and "disabled" in refused.error
    assert driver.call(SetBool, name, SetBool.Request(data=True)).success
    driver.command_pub.publish(SegmentationCommand(request_id="enabled-again", text="red cup"))
    frames = scene_frames(driver, scene, first_sec=5000, depth_encoding=None)
    result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="enabled-again"), ANSWER_TIMEOUT)
    assert result is not None and result.success


def _set_parameter(driver, namespace, name, value):
    request = SetParameters.Request()
    if isinstance(value, float):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    elif isinstance(value, list):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
    else:
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    request.parameters = [ParameterMsg(name=name, value=parameter_value)]
    response = driver.call(SetParameters, f"{namespace}/perception_node/set_parameters", request)
    assert response is not None
    return response.results[0]


def test_runtime_parameters_are_validated(session):
    node, driver = session
    # Ranges from the descriptors (rclpy checks them)...
    result = _set_parameter(driver, node.namespace, "score_threshold", 2.0)
    assert not result.successful and "score_threshold" in result.reason and "2.0" in result.reason
    # ... and everything a descriptor cannot say, from the node's on-set-parameters callback.
    result = _set_parameter(driver, node.namespace, "mask_threshold", 1.0)
    assert not result.successful and "mask_threshold must be in [-1.0, 1.0), got 1.0" in result.reason
    result = _set_parameter(driver, node.namespace, "mask_threshold", 0.0)  # in range, but not a mask threshold
    assert not result.successful and "mask_threshold must be in (0, 1), got 0.0" in result.reason
    result = _set_parameter(driver, node.namespace, "min_depth_m", 50.0)
    assert not result.successful and "must be smaller than max_depth_m" in result.reason
    result = _set_parameter(driver, node.namespace, "default_vocabulary", ["cup", ""])
    assert not result.successful and "default_vocabulary contains an empty name" in result.reason
    result = _set_parameter(driver, node.namespace, "device", "cpu")
    assert not result.successful and "read-only" in result.reason.lower()
    result = _set_parameter(driver, node.namespace, "score_threshold", 0.35)
    assert result.successful, result.reason
    assert node.wait_for_log("rejected parameter change: mask_threshold must be in", 5)


def test_diagnostics_report_rates_latency_and_model(session):
    node, driver = session
    status = driver.wait_for(driver.latest_status, 10)
    assert status is not None
    values = {pair.key: pair.value for pair in status.values}
    assert status.name == f"xsam_ros: {node.namespace}/perception_node"
    for key in ("model", "backend", "device", "input_rate_hz", "processing_rate_hz", "last_error", "llm_runs",
                "latency_ms.llm", "latency_ms.mask_encoder", "latency_ms.decoder", "latency_ms.total",
                "frames_received", "commands_received", "image_reliability"):
        assert key in values, key
    assert values["backend"] == "torch" and values["device"] == "cpu" and values["model_state"] == "ready"
    assert values["model"].endswith("tiny_model") and float(values["latency_ms.total"]) > 0


def test_a_command_that_sees_no_image_times_out(session):
    node, driver = session  # no frames are published in this test; command_timeout_s is 3 s
    start = len(driver.instances)
    sent = time.monotonic()
    driver.command_pub.publish(SegmentationCommand(request_id="no-frame", text="red cup"))
    result = driver.wait_for(lambda: driver.result_for(request_id="no-frame", after=start), 15)
    assert result is not None and not result.success
    assert "no image arrived" in result.error and "command_timeout_s=3.0" in result.error
    assert 2.5 < time.monotonic() - sent < 10
    assert result.header.frame_id == "camera_color_optical_frame"  # the newest image's header
