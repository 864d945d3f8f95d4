"""Accuracy of the perception node with the shipped default model, end to end over ROS.

The node runs in its own process on ``xsam_engine/default_model`` (model_path ""), this process
plays the camera with generated tabletop scenes whose ground truth is exact. The scenes are not
chosen for the model: they are the first ten held-out seeds from 930,000,000 whose 640x480 scene
holds exactly one red cup (``seeds_with_one``; a rule fixed in issue 14 before any model was
measured on them; the demo takes the first such seed from 900,000,000). Over those ten scenes,
one node process:

- "grasp the red cup" on command_text and clicks on an interior point of the red cup
  (Point on image_mouse_left and PointStamped on clicked_point, alternating): the node's mask
  equals what the engine computes on the same image (IoU >= 0.98: the node adds transport, not
  error), and the median IoU with the red cup is the model's measured level (``MIN_MEDIAN_*``
  below, under issue 14's 0.75: README "Models" says why this model misses it);
- depth as 16UC1 millimetres and as 32FC1 metres (alternating), with zero / NaN holes: the 3D
  centroid the node reports for its mask is within 1 cm of the node's estimator applied to that
  mask and the true, hole-free depth (``Scene.depth``), whatever the mask's quality;
- tracking a moving object over a 30-frame ``generate_sequence``: one id, IoU >= 0.75 on every
  frame, and the language model ran once (no "llm" stage on tracked frames, ``llm_runs`` +1).

Skipped, with the reason, only while ``xsam_engine/default_model/model.safetensors`` is missing
(the model is trained separately). ``XSAM_ACCURACY_MODEL=<dir>`` runs the same tests against
another model directory (development).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from node_driver import (
    Driver, NodeProcess, default_model_missing_reason, image_msg, iou, mask_from_msg, module_ros_env, scene_frames,
    stages, stamp_header, wait_for_node_inputs, warm_up_depth,
)

OVERRIDE = os.environ.get("XSAM_ACCURACY_MODEL", "")
MISSING = None if OVERRIDE else default_model_missing_reason()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene, seeds_with_one  # noqa: E402
from xsam_engine.tabletop.sequences import generate_sequence  # noqa: E402

WIDTH, HEIGHT = 640, 480
FIRST_SEED = 930_000_000  # held-out (the evaluation starts at 9e8, its test range at 9.1e8)
NUM_SCENES = 10
SEQUENCE_SEED = 10       # the orange bowl moves (its name is unique in the scene)
SCENE_SEED = 23          # issue 12's absent-object report (a red cup and a blue mug, 320x240)
MIN_IOU = 0.75            # tracking, and issue 14's target for the two medians below
# The shipped model measures median IoU 0.38 (referring) and 0.33 (click) on these ten scenes with
# the engine alone (per scene: 0.11 0.40 0.69 0.77 0.75 0.51 0.31 0.30 0.37 0.09 and 0.11 0.43 0.02
# 0.67 0.75 0.52 0.36 0.30 0.13 0.03); the bounds sit under that, so the tests catch a regression.
MIN_MEDIAN_REFERRING_IOU = 0.30
MIN_MEDIAN_CLICK_IOU = 0.25
MIN_NODE_ENGINE_IOU = 0.98
MAX_CENTROID_ERROR_M = 0.01
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def scenes():
    """(scene, red cup, engine's referring mask, engine's click mask) for the ten held-out scenes."""
    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt

    predictor = XSamPredictor.from_pretrained(OVERRIDE or None)
    chosen = []
    for seed in seeds_with_one("cup", "red", NUM_SCENES, FIRST_SEED, WIDTH, HEIGHT):
        scene = generate_scene(seed, WIDTH, HEIGHT)
        (cup,) = [o for o in scene.objects if o.name == "red cup"]
        predictor.set_image(scene.image)
        referring = predictor.segment(SegmentationRequest(Task.REFERRING, text="red cup"))
        x, y = interior_point(scene.mask(cup.instance_id))
        click = predictor.segment(SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(x, y),)))
        chosen.append((scene, cup, first_mask(referring), first_mask(click)))
    return chosen


def first_mask(result) -> np.ndarray:
    return result.instances[0].mask if result.instances else np.zeros((HEIGHT, WIDTH), bool)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_accuracy")
    env, domain_id, namespace = module_ros_env("accuracy")
    node = NodeProcess(env, namespace, workdir, {"model_path": OVERRIDE, "command_timeout_s": 30.0, "depth_wait_s": 1.0})
    driver = Driver(domain_id, namespace)
    try:
        assert node.wait_for_log("Model ready", 120), node.log()
        wait_for_node_inputs(driver, [driver.image_pub, driver.depth_pub, driver.info_pub, driver.text_pub,
                                      driver.mouse_pub, driver.clicked_pub, driver.command_pub])
        yield node, driver
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()[-3000:]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """The mask pixel farthest from its border (a click that is surely on the object)."""
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    row, col = np.unravel_index(int(distance.argmax()), distance.shape)
    return float(col), float(row)


def best_instance_iou(result, truth: np.ndarray) -> tuple[float, object]:
    scored = [(iou(mask_from_msg(i, WIDTH, HEIGHT), truth), i) for i in result.instances]
    return max(scored, key=lambda pair: pair[0]) if scored else (0.0, None)


def ask_red_cup(node, driver, scene, first_sec: int, depth_encoding=None, depth_array=None):
    frames = scene_frames(driver, scene, first_sec, depth_encoding=depth_encoding, depth_array=depth_array)
    accept = None
    if depth_encoding is not None:
        warm_up_depth(driver, frames)  # the answered frame then has its depth image
        accept = all_with_3d
    return answer_on_scene(node, driver, lambda: driver.text_pub.publish(String(data="grasp the red cup")),
                           frames, first_sec, accept=accept, prompt="grasp the red cup")


def all_with_3d(result) -> bool:
    """Whether every instance has its 3D estimate. Depth is a keep-last-5 stream: a node stalled on a
    loaded machine can lose the answered frame's depth image and then (rightly) answers without 3D."""
    return all(instance.has_3d for instance in result.instances)


def answer_on_scene(node, driver, send, frames, first_sec: int, accept=None, attempts: int = 3, start: int = 0,
                    **match):
    """Send a command (`send()`), publish this scene's frames until its answer comes; the answer.

    The node answers on the first image that reaches it after the command. Images and commands
    travel on different topics, which DDS does not order with each other, so on a loaded machine the
    previous scene's last frame can reach the node after the command and be the one answered
    (correctly, for that frame). Such an answer (stamped before this scene's first frame), or one
    `accept` refuses, is set aside and the command sent again, at most `attempts` times; the last
    answer is returned then (for the test's own assertions to explain). Frames are published from
    frames(start) on, stamped `first_sec` onwards.
    """
    result = None
    for _ in range(attempts):
        seen = len(driver.instances)
        send()
        result = driver.publish_frames_until(frames, lambda: driver.result_for(after=seen, **match), TIMEOUT,
                                             start=start)
        assert result is not None and result.success, node.log()[-3000:]
        if result.header.stamp.sec >= first_sec and (accept is None or accept(result)):
            return result
    assert result.header.stamp.sec >= first_sec, f"{attempts} answers came on earlier scenes' frames"
    return result


def test_referring_command_segments_the_red_cup(session, scenes):
    node, driver = session
    overlaps = []
    for index, (scene, cup, engine_mask, _) in enumerate(scenes):
        result = ask_red_cup(node, driver, scene, 20000 + 100 * index)
        assert result.header.frame_id == "camera_color_optical_frame" and result.header.stamp.sec >= 20000
        assert len(result.instances) <= 1 and all(i.label == "red cup" for i in result.instances)
        mask = mask_from_msg(result.instances[0], WIDTH, HEIGHT) if result.instances else np.zeros((HEIGHT, WIDTH), bool)
        assert mask.any() == engine_mask.any(), f"scene {index}: node and engine disagree on 'not found'"
        if mask.any():
            assert iou(mask, engine_mask) >= MIN_NODE_ENGINE_IOU, f"scene {index}: node mask differs from the engine's"
        overlaps.append(iou(mask, scene.mask(cup.instance_id)))
    assert np.median(overlaps) >= MIN_MEDIAN_REFERRING_IOU, f"red cup IoU per scene {np.round(overlaps, 3).tolist()}"


def test_click_segments_the_clicked_object(session, scenes):
    node, driver = session
    overlaps = []
    for index, (scene, cup, _, engine_mask) in enumerate(scenes):
        truth = scene.mask(cup.instance_id)
        x, y = interior_point(truth)
        if index % 2 == 0:
            send = lambda: driver.mouse_pub.publish(Point(x=x, y=y))  # noqa: E731
        else:
            send = lambda: driver.clicked_pub.publish(PointStamped(header=stamp_header(0), point=Point(x=x, y=y)))  # noqa: E731
        frames = scene_frames(driver, scene, 21000 + 100 * index, depth_encoding=None)
        result = answer_on_scene(node, driver, send, frames, 21000 + 100 * index, request_id="click")
        assert result.instances, f"scene {index}: no instance for a click at ({x:.0f}, {y:.0f})"
        mask = mask_from_msg(result.instances[0], WIDTH, HEIGHT)
        assert iou(mask, engine_mask) >= MIN_NODE_ENGINE_IOU, f"scene {index}: node mask differs from the engine's"
        overlaps.append(iou(mask, truth))
    assert np.median(overlaps) >= MIN_MEDIAN_CLICK_IOU, f"click IoU per scene {np.round(overlaps, 3).tolist()}"


def mask_centroid(scene, mask: np.ndarray) -> np.ndarray:
    """(3,) metres: the node's robust centroid estimator (``xsam_ros.geometry.object_geometry``)
    on the mask with the true, hole-free depth: what the node should report whatever the mask."""
    from xsam_ros.geometry import object_geometry

    return object_geometry(mask, scene.depth, scene.camera.matrix).centroid


def test_depth_gives_the_centroid_within_a_centimetre(session, scenes):
    node, driver = session
    rng = np.random.default_rng(7)
    errors = []
    for index, (scene, cup, _, _) in enumerate(scenes):
        encoding = ("16UC1", "32FC1")[index % 2]
        depth = scene.depth.copy()
        depth[rng.random(depth.shape) < 0.05] = 0.0      # holes (no return)
        depth[rng.random(depth.shape) < 0.03] = np.nan   # invalid (written as 0 in 16UC1)
        result = ask_red_cup(node, driver, scene, 22000 + 100 * index, encoding, depth)
        if not result.instances:
            continue
        (instance,) = result.instances
        assert instance.has_3d, node.log()[-2000:]
        assert instance.depth_pixels > 0.5 * instance.area
        centroid = np.array([instance.centroid.x, instance.centroid.y, instance.centroid.z])
        truth = mask_centroid(scene, mask_from_msg(instance, WIDTH, HEIGHT))
        errors.append(float(np.linalg.norm(centroid - truth)))
    assert len(errors) >= NUM_SCENES // 2
    assert max(errors) <= MAX_CENTROID_ERROR_M, f"centroid errors (mm) {np.round(np.array(errors) * 1000, 1).tolist()}"


def test_instance_points_carry_the_centroid_pixels_only_while_subscribed(session, scenes):
    """~/instance_points (README "Topics"): PointCloud2 in the image's optical frame with the image's
    header, fields x, y, z (float32) and instance_id (uint32), built from the very points of each
    instance's 3D estimate: as many points as depth_pixels, whose mean is the centroid. Nobody
    subscribed: no cloud is built (no "point_cloud" stage in the result's timings); subscribed: every
    result has one (the stage appears).

    This tests the cloud, not the model, so it needs a mask that is the cup: the scene is the first of
    the ten whose engine referring mask has IoU >= 0.75 with the red cup (a rule; with the shipped
    model it is seed 930,000,028 at IoU 0.77)."""
    node, driver = session
    scene, red_cup = next(((scene, cup) for scene, cup, referring, _ in scenes
                           if iou(referring, scene.mask(cup.instance_id)) >= 0.75), (None, None))
    assert scene is not None, "the model finds the red cup (IoU >= 0.75) in none of the ten scenes"
    frames = scene_frames(driver, scene, 26000, depth_encoding="32FC1")
    warm_up_depth(driver, frames)

    def ask(first: int):
        result = answer_on_scene(node, driver, lambda: driver.text_pub.publish(String(data="grasp the red cup")),
                                 frames, 26000 + first, accept=all_with_3d, start=first, prompt="grasp the red cup")
        assert result.instances and result.instances[0].has_3d, node.log()[-3000:]
        return result

    unsubscribed = ask(0)
    assert "point_cloud" not in stages(unsubscribed)
    subscription = driver.subscribe_points()
    # Wait until the node's publisher has matched the subscription (a result before that builds no cloud).
    assert driver.wait_for(lambda: subscription.get_publisher_count() > 0, 10)
    result = ask(200)
    assert "point_cloud" in stages(result)
    sec, nanosec = result.header.stamp.sec, result.header.stamp.nanosec
    cloud = driver.wait_for(lambda: next((c for c in driver.points if (c.header.stamp.sec, c.header.stamp.nanosec)
                                          == (sec, nanosec)), None), 10)
    assert cloud is not None and cloud.header.frame_id == result.header.frame_id == "camera_color_optical_frame"
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("instance_id", 12, 6, 1)]  # 7 FLOAT32, 6 UINT32
    assert (cloud.height, cloud.point_step, cloud.is_dense, cloud.is_bigendian) == (1, 16, True, False)
    points = np.frombuffer(bytes(cloud.data), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")]))
    (instance,) = result.instances
    mine = points[points["id"] == instance.id]
    assert len(points) == len(mine) == cloud.width == instance.depth_pixels
    mean = np.stack([mine["x"], mine["y"], mine["z"]], axis=1).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(mean, [instance.centroid.x, instance.centroid.y, instance.centroid.z], atol=1e-5)
    rows, cols = np.nonzero(scene.mask(red_cup.instance_id))
    surface = scene.camera.back_project(cols, rows, scene.depth[rows, cols])
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(surface).query(np.stack([mine["x"], mine["y"], mine["z"]], axis=1).astype(np.float64))
    assert (distances <= 0.01).mean() >= 0.95
    driver.node.destroy_subscription(subscription)


def test_tracking_a_moving_object_keeps_one_id_without_the_llm(session):
    node, driver = session
    sequence = generate_sequence(SEQUENCE_SEED, 30, WIDTH, HEIGHT)
    moving = sequence[0].info["moving_instance"]
    name = sequence[0].object(moving).name
    assert [o.name for o in sequence[0].objects].count(name) == 1
    # /diagnostics comes once a second: count LLM runs from a report sent after the earlier tests' answers.
    reports = len(driver.diagnostics)
    assert driver.wait_for(lambda: len(driver.diagnostics) >= reports + 2, 10)
    llm_runs_before = int(driver.latest_values()["llm_runs"])
    start = len(driver.instances)
    command = f"track the {name}"
    driver.text_pub.publish(String(data=command))
    results = []
    for index, frame in enumerate(sequence):
        header = stamp_header(23000 + index)
        message = image_msg(frame.image, header)

        def answered(sec=header.stamp.sec):
            return driver.result_for(after=start, predicate=lambda m: m.prompt == command and m.header.stamp.sec == sec)

        # Frame 0 may arrive before the command: republish it until the command has answered it.
        result = driver.publish_frames_until(lambda _: [(driver.image_pub, message)], answered, TIMEOUT, period=0.5)
        assert result is not None and result.success, f"frame {index}: " + node.log()[-2000:]
        results.append(result)
    ids = set()
    for index, (frame, result) in enumerate(zip(sequence, results)):
        overlap, instance = best_instance_iou(result, frame.mask(moving))
        assert instance is not None, f"frame {index}: no instance"
        ids.add(instance.id)
        assert overlap >= MIN_IOU, f"frame {index}: IoU {overlap:.3f} < {MIN_IOU}"
        assert result.tracking == (index > 0), f"frame {index}: tracking={result.tracking}"
        assert ("llm" in stages(result)) == (index == 0), f"frame {index}: stages {list(stages(result))}"
    assert len(ids) == 1, f"the tracked object changed id: {sorted(ids)}"
    values = driver.wait_for(lambda: int(driver.latest_values().get("tracked_frames", 0)) >= 29
                             and driver.latest_values(), 10)
    assert values and int(values["llm_runs"]) == int(llm_runs_before) + 1
    from std_srvs.srv import Trigger

    assert driver.call(Trigger, f"{node.namespace}/perception_node/clear", Trigger.Request()).success


def set_node_parameter(driver, node, name: str, value: float) -> None:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(parameters=[Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
    response = driver.call(SetParameters, f"{node.namespace}/perception_node/set_parameters", request)
    assert response is not None and response.results[0].successful, response


def test_absent_object_gives_zero_instances_no_3d_and_no_markers(session):
    """Issue 12's report: scene 23 with only a red cup and a blue mug (320x240), "grasp the green
    bottle". The answer must be success=true with zero instances and the not-found text, whatever
    sets the threshold (model default, the node's parameter, the command), and must leave no 3D
    estimate and no marker. A control command on the red cup first proves that depth and markers
    do flow on these frames (so their absence afterwards means something)."""
    from xsam_ros.msg import SegmentationCommand

    node, driver = session
    scene = generate_scene(SCENE_SEED, 320, 240, num_objects=(2, 2), include=[("cup", "red"), ("mug", "blue")])
    assert sorted(o.name for o in scene.objects) == ["blue mug", "red cup"]
    driver.subscribe_markers()
    warm_up_depth(driver, scene_frames(driver, scene, 24000, depth_encoding="32FC1"))
    first_sec = iter(range(24100, 25000, 100))  # every answer on frames of its own stamps

    def ask(text: str, request_id: str, score_threshold: float = -1.0):
        frames = scene_frames(driver, scene, next(first_sec), depth_encoding="32FC1")
        start = len(driver.instances)
        driver.command_pub.publish(SegmentationCommand(text=text, request_id=request_id, score_threshold=score_threshold))
        result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id=request_id, after=start), TIMEOUT)
        assert result is not None and result.success, node.log()[-3000:]
        return result

    def markers_for(result):
        stamp = (result.header.stamp.sec, result.header.stamp.nanosec)
        return [m for array in list(driver.markers) for m in array.markers
                if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp]

    control = ask("grasp the red cup", "control", score_threshold=0.0)  # 0 = always the best mask
    assert len(control.instances) == 1 and control.instances[0].has_3d, node.log()[-2000:]
    assert driver.wait_for(lambda: any(m.action == m.ADD for m in markers_for(control)), 10)

    answers = {"model default": ask("grasp the green bottle", "absent-default")}
    answers["command 0.99"] = ask("grasp the green bottle", "absent-command", score_threshold=0.99)
    set_node_parameter(driver, node, "score_threshold", 0.99)
    try:
        answers["node 0.99"] = ask("grasp the green bottle", "absent-node")
    finally:
        set_node_parameter(driver, node, "score_threshold", -1.0)
    for how, result in answers.items():
        assert result.instances == [] and result.error == "", how
        assert result.message.startswith("not found: best score "), f"{how}: {result.message!r}"
        assert list(result.vocabulary) == ["green bottle"] and result.task == SegmentationCommand.TASK_REFERRING
    assert answers["command 0.99"].message.endswith("< 0.99") and answers["node 0.99"].message.endswith("< 0.99")
    assert abs(answers["node 0.99"].score_threshold - 0.99) < 1e-6
    # The control's markers are deleted by the first empty answer, and no answer adds one.
    first = answers["model default"]
    assert driver.wait_for(lambda: any(m.action in (m.DELETE, m.DELETEALL) for m in markers_for(first)), 10)
    assert not any(m.action == m.ADD for result in answers.values() for m in markers_for(result))
