"""The perception node with ``backend: triton`` against a real Triton Inference Server on 127.0.0.1.

One random-weight tiny model is saved (``model_path``) and its graphs are served by the
``tritonserver`` 2.51 of nvidia-pytriton (``python``-platform repository: ONNX Runtime inside
Triton's Python backend, as in tests/test_triton.py). Five node processes start side by side
(``--autostart``), each in its own namespace:

- ``local``: the same model on the local backend (torch, the CPU default), the reference;
- ``triton`` and ``second``: ``backend: triton`` on server A (two robots sharing one server);
- ``fallback``: ``backend: triton`` on server B, which is down at activation, ``triton_fallback: true``;
- ``no_server``: ``backend: triton`` on server B, ``triton_fallback: false``.

Checked: the triton node answers with the local node's masks (IoU >= 0.999) and the server did
the work (its inference statistics); both sharing nodes answer; server A killed (SIGKILL) while a
tracked command streams: the answers are errors naming the server, /diagnostics is ERROR naming
it (also on the idle node, through the health check), the nodes stay active, and the stream and
new commands are answered again after the restart, without touching the nodes. Server B: an
activation without it fails (ERROR, unconfigured, the reason names the server and the fix);
with the fallback the node runs locally (diagnostics WARN, same masks as the local node) and
returns to the server once it is started; the failed node then configures and activates.

Every server binds 127.0.0.1 on free ports and is closed at the end even on failure; every test
has a pytest-timeout and every wait a deadline.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from node_driver import (
    Driver, NodeProcess, image_msg, iou, mask_from_msg, module_ros_env, save_tiny_model, stamp_header,
    wait_for_node_inputs,
)

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc,http] is needed for the triton backend")
pytest.importorskip("onnxruntime", reason="the served graphs run on onnxruntime")
if importlib.util.find_spec("pytriton") is None:
    pytest.skip("nvidia-pytriton (the bundled tritonserver) is not installed", allow_module_level=True)
rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from xsam_ros.msg import SegmentationCommand  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene  # noqa: E402
from xsam_engine.triton.local_server import LocalTritonServer  # noqa: E402
from xsam_engine.triton.repository import RepositoryOptions, write_triton_repository  # noqa: E402

pytestmark = pytest.mark.timeout(300)
OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"
TIMEOUT = 60.0
START_TIMEOUT = 180.0  # five node processes load at once on a shared 2-core machine
WIDTH, HEIGHT = 160, 120
FRAME = generate_scene(13, WIDTH, HEIGHT).image
# Three tasks that together use every served graph: the LLM's image tokens (vision_encoder, and
# mask_encoder for the SAM tokens), the xsam_frame ensemble (mask encoder -> pixel decoder ->
# mask decoder), and region_encoder (a point prompt).
COMMANDS = (
    SegmentationCommand(request_id="referring", task=SegmentationCommand.TASK_REFERRING, text="red cup",
                        score_threshold=0.0),
    SegmentationCommand(request_id="instance", task=SegmentationCommand.TASK_INSTANCE,
                        vocabulary=["cup", "bowl", "ball"], score_threshold=0.0),
    SegmentationCommand(request_id="point", task=SegmentationCommand.TASK_INTERACTIVE, points=[Point(x=60.0, y=50.0)],
                        point_labels=[1]),
)


class Fleet:
    """The servers, the node processes and one driver per node (see the module docstring)."""

    def __init__(self, workdir) -> None:
        self.model_path = save_tiny_model(workdir / "tiny")
        from xsam_engine.checkpoint import load_pretrained

        model, _ = load_pretrained(self.model_path, device="cpu")  # the weights exactly as the nodes load them
        repository = workdir / "repository"
        write_triton_repository(model, repository, RepositoryOptions(platform="python", python_threads=1))
        self.server_a = LocalTritonServer(repository)
        self.server_b = LocalTritonServer(repository)  # started by the fallback test
        self.nodes: dict[str, NodeProcess] = {}
        self.drivers: dict[str, Driver] = {}
        self.env, self.domain_id, self.namespace = module_ros_env("triton")
        self.workdir = workdir

    def start(self) -> None:
        self.server_a.start()
        common = {"model_path": str(self.model_path), "use_depth": False, "diagnostics_period_s": 0.5,
                  "cpu_threads": 1, "engine_cache_dir": str(self.workdir / "engines")}
        triton = {"backend": "triton", "triton_timeout_s": 5.0}
        settings = {
            "local": {"backend": "torch"},
            "triton": {**triton, "triton_url": self.server_a.grpc_url},
            "second": {**triton, "triton_url": self.server_a.grpc_url},
            "fallback": {**triton, "triton_url": self.server_b.grpc_url, "triton_fallback": True},
            "no_server": {**triton, "triton_url": self.server_b.grpc_url},
        }
        for name, parameters in settings.items():
            self.nodes[name] = NodeProcess(self.env, f"{self.namespace}_{name}", self.workdir, {**common, **parameters})
            self.drivers[name] = Driver(self.domain_id, f"{self.namespace}_{name}")

    def close(self) -> dict[str, int | None]:
        try:
            for driver in self.drivers.values():
                driver.close()
            return {name: node.stop() for name, node in self.nodes.items()}
        finally:
            self.server_a.close()
            self.server_b.close()

    def full_name(self, name: str) -> str:
        return f"{self.nodes[name].namespace}/perception_node"

    def ready(self, name: str) -> Driver:
        """The driver of node ``name`` once the node is active and subscribed to commands and images."""
        node, driver = self.nodes[name], self.drivers[name]
        assert node.wait_for_log("Model ready", START_TIMEOUT), node.log()[-3000:]
        wait_for_node_inputs(driver, [driver.command_pub, driver.image_pub], TIMEOUT)
        return driver


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory.mktemp("node_triton"))
    try:
        fleet.start()
        yield fleet
    finally:
        codes = fleet.close()
    assert set(codes.values()) <= {0}, codes


def answer(driver: Driver, commands, first_sec: int, timeout: float = TIMEOUT) -> dict:
    """Publish ``commands``, then frames stamped ``first_sec``, +1, ... until each has an answer; {request_id: msg}."""
    start = len(driver.instances)
    for command in commands:
        driver.command_pub.publish(command)
    ids = [command.request_id for command in commands]

    def answered():
        found = {i: driver.result_for(request_id=i, after=start) for i in ids}
        return found if all(found.values()) else None

    found = driver.publish_frames_until(
        lambda index: [(driver.image_pub, image_msg(FRAME, stamp_header(first_sec + index)))], answered, timeout)
    assert found is not None, f"no answer to {ids} within {timeout} s"
    return found


def assert_same_masks(expected, actual) -> None:
    """Same instances (count, labels, ids) and every mask IoU >= 0.999."""
    assert expected.success and actual.success, (expected.error, actual.error)
    assert [i.label for i in actual.instances] == [i.label for i in expected.instances]
    assert len(expected.instances) > 0  # score_threshold 0 / a point prompt: the tiny model always answers
    for a, b in zip(expected.instances, actual.instances):
        assert iou(mask_from_msg(a, WIDTH, HEIGHT), mask_from_msg(b, WIDTH, HEIGHT)) >= 0.999


def inference_count(server: LocalTritonServer, model: str) -> int:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model, as_json=True, client_timeout=10.0)["model_stats"][0]
        return int(stats.get("inference_count", 0))
    finally:
        client.close()


def status_where(driver: Driver, predicate, timeout: float = 30.0):
    """The first /diagnostics status of the driver's node (from now on) for which predicate(status, values) holds."""
    def check():
        status = driver.latest_status()
        if status is None:
            return None
        values = {pair.key: pair.value for pair in status.values}
        return (status, values) if predicate(status, values) else None
    return driver.wait_for(check, timeout)


def test_a_triton_node_answers_with_the_masks_of_a_local_node(fleet):
    local, remote = fleet.ready("local"), fleet.ready("triton")
    fleet.ready("second")  # its warm-up on the same server is over: the counts below are this test's
    before = inference_count(fleet.server_a, "vision_encoder"), inference_count(fleet.server_a, "region_encoder")
    expected = answer(local, COMMANDS, 1000)
    actual = answer(remote, COMMANDS, 1000)
    for command in COMMANDS:
        assert_same_masks(expected[command.request_id], actual[command.request_id])
    # The server did the work (the local node never talks to it): SigLIP runs once per image that commands
    # were answered on (the image is encoded once for every command waiting for it; all three run the
    # LLM on its tokens), the region encoder once for the point prompt.
    frames = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in actual.values()}
    after = inference_count(fleet.server_a, "vision_encoder"), inference_count(fleet.server_a, "region_encoder")
    assert (after[0] - before[0], after[1] - before[1]) == (len(frames), 1)
    url = f"grpc://{fleet.server_a.grpc_url}"
    status, values = status_where(remote, lambda s, v: v.get("frames_processed", "0") != "0" and s.level == OK)
    assert values["backend"] == "triton" and values["triton_server"] == url and values["triton_state"] == "ready"
    assert values["backend_summary"] == f"image stages: triton at {url}; LLM: torch float32 on cpu"
    assert values["triton_error"] == ""
    _, local_values = status_where(local, lambda s, v: "triton_server" in v)
    assert local_values["triton_server"] == "" and local_values["triton_state"] == ""


def test_two_node_processes_share_one_server(fleet):
    first, second = fleet.ready("triton"), fleet.ready("second")
    command = COMMANDS[0]
    before = inference_count(fleet.server_a, "vision_encoder")
    starts = len(first.instances), len(second.instances)
    first.command_pub.publish(command)
    second.command_pub.publish(command)

    def both():
        a = first.result_for(request_id=command.request_id, after=starts[0])
        b = second.result_for(request_id=command.request_id, after=starts[1])
        return (a, b) if a and b else None

    frames = lambda index: [(driver.image_pub, image_msg(FRAME, stamp_header(2000 + index)))  # noqa: E731
                            for driver in (first, second)]
    answers = first.publish_frames_until(frames, both, TIMEOUT)
    assert answers is not None, (fleet.nodes["triton"].log()[-2000:], fleet.nodes["second"].log()[-2000:])
    assert_same_masks(*answers)
    assert inference_count(fleet.server_a, "vision_encoder") - before == 2  # one per node, both on the server


def test_server_killed_mid_stream_errors_name_it_and_the_nodes_recover_after_restart(fleet):
    driver, idle = fleet.ready("triton"), fleet.ready("second")
    node = fleet.nodes["triton"]
    server = fleet.server_a
    url = f"grpc://{server.grpc_url}"
    track = SegmentationCommand(request_id="track", task=SegmentationCommand.TASK_REFERRING, text="red cup",
                                score_threshold=0.0, continuous=True)
    sec = [3000]

    def stream_until(predicate, timeout: float = TIMEOUT):
        def frames(index: int):
            sec[0] += 1
            return [(driver.image_pub, image_msg(FRAME, stamp_header(sec[0])))]
        return driver.publish_frames_until(frames, predicate, timeout, period=0.2)

    def tracked(after: int, success: bool):
        return lambda: driver.result_for(request_id="track", after=after,
                                         predicate=lambda m: m.tracking == success if success else not m.success)

    try:
        first = answer(driver, [track], sec[0])["track"]
        assert first.success, first.error
        assert stream_until(tracked(len(driver.instances), True)) is not None, "the tracked command does not stream"

        server.kill()  # a crash mid-stream: SIGKILL, no clean shutdown
        failed = stream_until(tracked(len(driver.instances), False))
        assert failed is not None, node.log()[-3000:]
        assert url in failed.error and "unreachable" in failed.error, failed.error
        one_shot = answer(driver, [SegmentationCommand(request_id="while_down", text="red cup")], sec[0] + 500)
        sec[0] += 600
        assert not one_shot["while_down"].success and url in one_shot["while_down"].error
        for watched in (driver, idle):  # the idle node knows too: its health check follows the server
            found = status_where(watched, lambda s, v: s.level == ERROR and v["triton_state"] == "unreachable")
            assert found is not None, watched.latest_values()
            status, values = found
            assert url in status.message and "commands fail until it is back" in status.message
            assert values["triton_server"] == url and url in values["triton_error"]
            assert values["lifecycle_state"] == "active" and values["model_state"] == "ready"
        assert driver.get_state(fleet.full_name("triton")) == "active" and node.alive()

        server.restart()  # same ports; the nodes are not touched
        back = stream_until(tracked(len(driver.instances), True))
        assert back is not None, node.log()[-3000:]
        again = answer(driver, [SegmentationCommand(request_id="after_restart", text="red cup",
                                                    score_threshold=0.0)], sec[0] + 500)
        assert again["after_restart"].success, again["after_restart"].error
        for watched in (driver, idle):
            found = status_where(watched, lambda s, v: v["triton_state"] == "ready" and s.level != ERROR)
            assert found is not None, watched.latest_values()
        assert node.wait_for_log(f"Triton server {url} is ready again", 10)
        assert fleet.nodes["second"].wait_for_log(f"Triton server {url} unreachable: commands fail", 1)
        assert "Traceback" not in node.log()  # a server that went away is not a bug here: no traceback
        assert node.alive() and fleet.nodes["second"].alive()
    finally:
        driver.call(Trigger, f"{fleet.full_name('triton')}/clear", Trigger.Request())  # stop tracking
        if server.process is None or server.process.poll() is not None:
            server.restart()


def test_activation_without_a_server_fails_and_the_fallback_runs_locally_until_it_is_back(fleet):
    url = f"grpc://{fleet.server_b.grpc_url}"
    failed_driver = fleet.drivers["no_server"]
    found = status_where(failed_driver, lambda s, v: s.level == ERROR and v["lifecycle_state"] == "unconfigured",
                         START_TIMEOUT)
    assert found is not None, fleet.nodes["no_server"].log()[-3000:]
    status, values = found
    assert status.message.startswith("model not available: the Triton server is not ready for this model: "
                                     f"Triton server {url} is unreachable")
    assert values["model_state"] == "failed" and values["triton_server"] == url
    assert fleet.nodes["no_server"].wait_for_log(
        "The node returns to unconfigured: start the Triton server or correct triton_url / triton_protocol", 10)
    assert failed_driver.command_pub.get_subscription_count() == 0  # unconfigured: no command is taken

    fallback, local = fleet.ready("fallback"), fleet.ready("local")
    found = status_where(fallback, lambda s, v: s.level == WARN and v["triton_state"] == "fallback")
    assert found is not None, fallback.latest_values()
    status, values = found
    assert status.message == (f"Triton server {url} unreachable: the image stages run locally on torch until it "
                              "is back (triton_fallback)")
    assert url in values["triton_error"] and values["lifecycle_state"] == "active"
    assert fleet.nodes["fallback"].wait_for_log(f"backend:=triton device:=auto: Triton server {url} is unreachable", 1)
    expected = answer(local, COMMANDS[:1], 4000)["referring"]
    assert_same_masks(expected, answer(fallback, COMMANDS[:1], 4000)["referring"])  # computed locally

    fleet.server_b.start()
    before = inference_count(fleet.server_b, "vision_encoder")
    assert_same_masks(expected, answer(fallback, COMMANDS[:1], 4100)["referring"])
    assert inference_count(fleet.server_b, "vision_encoder") - before == 1  # back on the server
    found = status_where(fallback, lambda s, v: v["triton_state"] == "ready" and s.level != WARN)
    assert found is not None, fallback.latest_values()

    # The node that failed its activation: configure and activate again now that the server is there.
    name = fleet.full_name("no_server")
    assert failed_driver.change_state(name, "configure") is True
    assert failed_driver.change_state(name, "activate") is True, fleet.nodes["no_server"].log()[-3000:]
    wait_for_node_inputs(failed_driver, [failed_driver.command_pub, failed_driver.image_pub], TIMEOUT)
    assert_same_masks(expected, answer(failed_driver, COMMANDS[:1], 4200)["referring"])
    assert re.search(r"Model ready: .* image stages: triton at " + re.escape(url), fleet.nodes["no_server"].log())
