"""640x480 frames from another process reach the node over reliable and over best-effort QoS.

A publisher process (tests/node_image_publisher.py) plays the camera. With a reliable
publisher the node's subscription stays reliable; with a best-effort publisher (which uses the
shipped Fast DDS profile config/fastdds_large_images.xml, as the README tells camera drivers
to) the node switches its subscription to best-effort within qos_check_period_s, logs it,
receives the frames and answers a command on them. A second node with compressed_input
reads JPEG frames from <image>/compressed.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from node_driver import FASTDDS_PROFILE, REPO_ROOT, Driver, NodeProcess, module_ros_env, save_tiny_model

rclpy = pytest.importorskip("rclpy")

from xsam_ros.msg import SegmentationCommand  # noqa: E402

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_transport")
    model_dir = save_tiny_model(workdir / "tiny_model")
    env, domain_id, namespace = module_ros_env("transport")
    node = NodeProcess(env, namespace, workdir, {"model_path": str(model_dir), "use_depth": False})
    jpeg_node = NodeProcess(env, namespace + "_jpeg", workdir, {
        "model_path": str(model_dir), "use_depth": False, "compressed_input": True})
    driver = Driver(domain_id, namespace, sensors=False)
    jpeg_driver = Driver(domain_id, namespace + "_jpeg", sensors=False)
    try:
        assert node.wait_for_log("Model ready", 90), node.log()
        assert driver.wait_for_subscriber(driver.command_pub)
        yield node, driver, env, workdir, jpeg_node, jpeg_driver
    finally:
        driver.close()
        jpeg_driver.close()
        codes = node.stop(), jpeg_node.stop()
    assert codes == (0, 0), node.log()[-3000:] + jpeg_node.log()[-3000:]


def _start_camera(env, workdir, namespace, reliability, first_sec, profile):
    camera_env = dict(env)
    if profile:
        camera_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    out = open(workdir / f"camera_{reliability}.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "node_image_publisher.py"), "--namespace", namespace,
         "--reliability", reliability, "--first-sec", str(first_sec), "--rate", "10"],
        env=camera_env, cwd=str(REPO_ROOT), stdout=out, stderr=subprocess.STDOUT, text=True)
    return process, out


def _stop_camera(process, out):
    process.send_signal(signal.SIGINT)
    process.wait(20)
    out.close()
    lines = [line for line in open(out.name).read().splitlines() if line.startswith("published ")]
    return int(lines[-1].split()[1]) if lines else 0


@pytest.mark.parametrize("reliability, profile, first_sec", [
    ("reliable", False, 11000),
    ("best_effort", True, 12000),
])
def test_frames_reach_the_node_and_get_answered(session, reliability, profile, first_sec):
    node, driver, env, workdir, _, _ = session
    process, out = _start_camera(env, workdir, node.namespace, reliability, first_sec, profile)
    try:
        if reliability == "best_effort":
            assert node.wait_for_log("subscription switched from reliable to best_effort", 30), node.log()[-3000:]
        received_before = int(driver.wait_for(driver.latest_values, 10).get("frames_received", 0))
        # Wait until frames of this camera arrive, then ask.
        assert driver.wait_for(lambda: int(driver.latest_values().get("frames_received", 0)) >= received_before + 5,
                               30), node.log()[-3000:]
        start = len(driver.instances)
        request_id = f"transport-{reliability}"
        driver.command_pub.publish(SegmentationCommand(request_id=request_id, text="grasp the red cup"))
        result = driver.wait_for(lambda: driver.result_for(request_id=request_id, after=start), TIMEOUT)
        assert result is not None, node.log()[-3000:]
        assert result.success and result.header.stamp.sec > first_sec
        assert (result.image_width, result.image_height) == (640, 480)
        assert driver.latest_values()["image_reliability"] == reliability
        # Keep streaming; the frames keep arriving (counted against what the camera sent below).
        values = driver.wait_for(lambda: int(driver.latest_values().get("frames_received", 0)) >= received_before + 25
                                 and driver.latest_values(), 30)
        assert values and float(values["input_rate_hz"]) > 0.0, values
    finally:
        published = _stop_camera(process, out)
    received = int(driver.latest_values()["frames_received"]) - received_before
    assert published > 0 and received >= 0.5 * (published - 5), (received, published, node.log()[-2000:])


def test_compressed_input_reads_jpeg_from_image_compressed(session):
    import cv2
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from node_driver import stamp_header
    from xsam_engine.tabletop.scenes import generate_scene

    _, _, _, _, node, driver = session
    assert node.wait_for_log("Model ready", 90), node.log()
    assert f"images on {node.namespace}/image/compressed [CompressedImage" in node.log()
    publisher = driver.node.create_publisher(CompressedImage, "image/compressed",
                                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    assert driver.wait_for_subscriber(publisher) and driver.wait_for_subscriber(driver.command_pub)
    ok, jpeg = cv2.imencode(".jpg", generate_scene(13, 640, 480).image[..., ::-1])
    assert ok
    driver.command_pub.publish(SegmentationCommand(request_id="jpeg", text="grasp the red cup"))

    def frames(index):
        return [(publisher, CompressedImage(header=stamp_header(13000 + index), format="jpeg", data=jpeg.tobytes()))]

    result = driver.publish_frames_until(frames, lambda: driver.result_for(request_id="jpeg"), TIMEOUT)
    assert result is not None and result.success, node.log()[-3000:]
    assert (result.image_width, result.image_height) == (640, 480) and result.header.stamp.sec >= 13000
    assert "First image on" in node.log() and "jpeg" in node.log()
