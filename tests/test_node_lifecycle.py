"""The perception node is a managed (lifecycle) node, driven through its lifecycle services from this process.

One node process starts without ``--autostart`` (as ``ros2 run`` starts it) with the shipped
default model; the test's rclpy node calls ``<node>/change_state`` and ``<node>/get_state``:

    unconfigured -> configure -> inactive -> activate -> active (answers a command)
      -> deactivate -> inactive (no subscription, no answer, model freed: the process's RSS drops)
      -> activate -> active (answers again) -> shutdown -> finalized

and checks in every state what ``ros2 param`` and /diagnostics see. The RSS drop expected on
deactivation is derived from the model size the node logs: its parameters are float32 on the CPU
(4 bytes each), all freed; the test asks for at least half of that, since the allocator keeps
some freed pages and inference buffers come and go.
"""

from __future__ import annotations

import re
import time

import pytest

from node_driver import Driver, NodeProcess, image_msg, module_ros_env, stamp_header

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.srv import GetParameters  # noqa: E402
from xsam_ros.msg import SegmentationCommand  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene  # noqa: E402

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_lifecycle")
    env, domain_id, namespace = module_ros_env("lifecycle")
    node = NodeProcess(env, namespace, workdir, {"use_depth": False, "diagnostics_period_s": 0.2}, autostart=False)
    driver = Driver(domain_id, namespace)
    try:
        yield node, driver, f"{namespace}/perception_node"
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    assert "Traceback" not in node.log(), node.log()


def _diagnosed_state(driver, state: str):
    """Wait for a /diagnostics report of the node in lifecycle state ``state``; its values, or None."""
    return driver.wait_for(lambda: driver.latest_values().get("lifecycle_state") == state and driver.latest_values(), 15)


def _answer(driver, request_id: str, first_sec: int, timeout: float = TIMEOUT):
    """Send a referring command with score threshold 0 and publish frames until its answer arrives (or None)."""
    start = len(driver.instances)
    frame = generate_scene(13, 320, 240).image
    driver.command_pub.publish(SegmentationCommand(request_id=request_id, text="red cup", score_threshold=0.0))
    return driver.publish_frames_until(
        lambda index: [(driver.image_pub, image_msg(frame, stamp_header(first_sec + index)))],
        lambda: driver.result_for(request_id=request_id, after=start), timeout)


def _settled_rss(node, seconds: float = 2.0) -> int:
    """The node's RSS once it stops changing by more than 1 MB over 0.5 s (at most ``seconds`` waiting)."""
    deadline, previous = time.monotonic() + seconds, node.rss_bytes()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = node.rss_bytes()
        if abs(current - previous) < 1 << 20:
            return current
        previous = current
    return previous


def test_unconfigured_to_finalized_through_the_lifecycle_services(session):
    node, driver, name = session
    assert driver.get_state(name, timeout=60) == "unconfigured", node.log()[-2000:]
    # Parameters are declared in every state (ros2 param get / describe work before configure).
    parameters = driver.call(GetParameters, f"{name}/get_parameters", GetParameters.Request(names=["use_depth", "device"]))
    assert parameters is not None and [v.bool_value for v in parameters.values[:1]] == [False]
    assert parameters.values[1].string_value == "auto"
    values = _diagnosed_state(driver, "unconfigured")
    assert values and values["model_state"] == "unloaded", driver.latest_values()
    assert driver.latest_status().level == b"\x00"  # OK: a state the operator chose
    assert driver.command_pub.get_subscription_count() == 0  # nothing subscribed before activation

    assert driver.change_state(name, "configure") is True
    assert driver.get_state(name) == "inactive"
    assert _diagnosed_state(driver, "inactive")
    rss_inactive = _settled_rss(node)

    assert driver.change_state(name, "activate") is True, node.log()[-3000:]
    assert driver.get_state(name) == "active"
    match = re.search(r"Model ready: .* \(([0-9.]+) M parameters\)", node.log())
    assert match, node.log()[-2000:]
    model_bytes = float(match.group(1)) * 1e6 * 4  # float32 on the CPU
    assert driver.wait_for_subscriber(driver.command_pub) and driver.wait_for_subscriber(driver.image_pub)
    first = _answer(driver, "active-1", 1000)
    assert first is not None and first.success, node.log()[-3000:]
    values = _diagnosed_state(driver, "active")
    assert values and values["model_state"] == "ready"
    rss_active = _settled_rss(node)

    assert driver.change_state(name, "deactivate") is True, node.log()[-3000:]
    assert driver.get_state(name) == "inactive"
    values = _diagnosed_state(driver, "inactive")
    assert values and values["model_state"] == "unloaded"
    deadline = time.monotonic() + 10
    while driver.command_pub.get_subscription_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.command_pub.get_subscription_count() == 0 and driver.image_pub.get_subscription_count() == 0
    assert _answer(driver, "inactive", 2000, timeout=3.0) is None  # no subscription: no answer
    rss_inactive_again = _settled_rss(node)
    dropped = rss_active - rss_inactive_again
    assert dropped >= 0.5 * model_bytes, (
        f"RSS: inactive {rss_inactive / 1e6:.1f} MB, active {rss_active / 1e6:.1f} MB, after deactivate "
        f"{rss_inactive_again / 1e6:.1f} MB; the {model_bytes / 1e6:.1f} MB of weights were not freed")

    assert driver.change_state(name, "activate") is True, node.log()[-3000:]
    assert driver.get_state(name) == "active"
    assert driver.wait_for_subscriber(driver.command_pub) and driver.wait_for_subscriber(driver.image_pub)
    again = _answer(driver, "active-2", 3000)
    assert again is not None and again.success, node.log()[-3000:]
    assert node.log().count("Model ready") == 2

    assert driver.change_state(name, "shutdown") is True
    assert driver.get_state(name) == "finalized"
    assert _diagnosed_state(driver, "finalized")
    assert driver.change_state(name, "activate") is False  # finalized is final: refused, the process keeps running
    assert node.alive()

