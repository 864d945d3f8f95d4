"""Every failure while the node loads its model fails the activation (ERROR) with the reason; the node is unconfigured again.

The lifecycle node loads its model in ``on_activate`` (on its worker thread); a failure returns
ERROR and ``on_error`` releases everything: the node is unconfigured again (no subscription, so no
command is taken), the log and /diagnostics (ERROR, ``model not available: <reason>``) say why,
and ``configure`` + ``activate`` may be tried again once the model is fixed. Three nodes start side by side (``--autostart``):

- a model whose configuration loads but whose warm-up inference raises (the shipped model with
  ``language.template_index`` 99: the chat template lookup fails at the first inference);
- a model directory whose ``model.safetensors`` is not a safetensors file;
- a model that loads while its requested ONNX Runtime backend raises on start (``engine_cache_dir``
  names a file): the node falls back to torch, becomes ready, and its log carries the backend's
  traceback, not only the one-line reason.

The corrupt-weights node is then fixed (the good weights copied back) and activated again through
its lifecycle service: it answers.
"""

from __future__ import annotations

import json
import shutil

import pytest

from node_driver import (
    REPO_ROOT, Driver, NodeProcess, image_msg, module_ros_env, save_tiny_model, stamp_header, wait_for_node_inputs,
)

rclpy = pytest.importorskip("rclpy")

from xsam_ros.msg import SegmentationCommand  # noqa: E402

from xsam_engine.tabletop.scenes import generate_scene  # noqa: E402

TIMEOUT = 60.0
ERROR = b"\x02"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node_model_failures")
    warm_up_fails = workdir / "warm_up_fails"
    shutil.copytree(REPO_ROOT / "xsam_engine" / "default_model", warm_up_fails)
    config_path = warm_up_fails / "config.json"
    config = json.loads(config_path.read_text())
    config["config"]["language"]["template_index"] = 99
    config_path.write_text(json.dumps(config))
    corrupt = save_tiny_model(workdir / "corrupt_weights")
    shutil.copy(corrupt / "model.safetensors", workdir / "good_weights.safetensors")
    (corrupt / "model.safetensors").write_bytes(b"these bytes are not a safetensors file" * 10)
    fallback = save_tiny_model(workdir / "fallback")
    not_a_directory = workdir / "engine_cache_is_a_file"
    not_a_directory.write_text("")
    env, domain_id, namespace = module_ros_env("load")
    settings = {
        "warm_up": {"model_path": str(warm_up_fails), "use_depth": False},
        "corrupt": {"model_path": str(corrupt), "use_depth": False},
        "fallback": {"model_path": str(fallback), "use_depth": False, "backend": "onnxruntime",
                     "engine_cache_dir": str(not_a_directory)},
    }
    processes, drivers = {}, {}
    try:
        for name, parameters in settings.items():
            processes[name] = NodeProcess(env, f"{namespace}_{name}", workdir, parameters)
            drivers[name] = Driver(domain_id, f"{namespace}_{name}")
        yield processes, drivers, workdir
    finally:
        for driver in drivers.values():
            driver.close()
        codes = {name: process.stop() for name, process in processes.items()}
    assert set(codes.values()) == {0}, codes


@pytest.mark.parametrize("name, reason", [
    ("warm_up", "the model loaded but its warm-up inference (a 64x64 image, 'object') failed: IndexError"),
    ("corrupt", "could not load the model from "),
])
def test_a_loading_failure_fails_the_activation(nodes, name, reason):
    processes, drivers, workdir = nodes
    node, driver = processes[name], drivers[name]
    status = driver.wait_for(lambda: (s := driver.latest_status()) is not None and s.level == ERROR and s, 120)
    assert status is not None, node.log()[-3000:]
    assert status.message.startswith("model not available: ") and reason in status.message
    values = {pair.key: pair.value for pair in status.values}
    assert values["model_state"] == "failed" and reason in values["last_error"]
    full_name = f"{node.namespace}/perception_node"
    assert driver.get_state(full_name) == "unconfigured"  # ERROR -> on_error released everything
    assert node.wait_for_log(f"The node returns to unconfigured: fix the model (model_path), then configure and "
                             f"activate it again (ros2 lifecycle set {full_name} configure, then activate)", 5)
    if name == "warm_up":  # an unexpected inference error: its traceback is in the log
        assert "Traceback (most recent call last)" in node.log() and "IndexError" in node.log()
    assert driver.command_pub.get_subscription_count() == 0  # no subscription: no command is taken
    values = driver.wait_for(lambda: driver.latest_values().get("lifecycle_state") == "unconfigured"
                             and driver.latest_values(), 10)
    assert values and values["model_state"] == "failed" and reason in values["last_error"]  # the reason stays
    assert driver.change_state(full_name, "configure") is True
    assert driver.change_state(full_name, "activate") is False  # still broken: ERROR again, unconfigured again
    assert driver.get_state(full_name) == "unconfigured" and node.alive()
    if name != "corrupt":
        return
    # Fixed on disk: the same node activates and answers.
    shutil.copy(workdir / "good_weights.safetensors", workdir / "corrupt_weights" / "model.safetensors")
    assert driver.change_state(full_name, "configure") is True, node.log()[-3000:]
    assert driver.change_state(full_name, "activate") is True, node.log()[-3000:]
    assert driver.get_state(full_name) == "active"
    wait_for_node_inputs(driver, [driver.command_pub, driver.image_pub])
    driver.command_pub.publish(SegmentationCommand(request_id="fixed", text="red cup", score_threshold=0.0))
    frame = image_msg(generate_scene(13, 160, 120).image, stamp_header(40000))
    answer = driver.publish_frames_until(lambda index: [(driver.image_pub, frame)],
                                         lambda: driver.result_for(request_id="fixed"), TIMEOUT)
    assert answer is not None and answer.success, node.log()[-3000:]
    values = driver.wait_for(lambda: driver.latest_values().get("model_state") == "ready" and driver.latest_values(), 10)
    assert values and values["lifecycle_state"] == "active" and driver.latest_status().level != ERROR


def test_a_backend_that_raises_while_starting_is_logged_with_its_traceback(nodes):
    processes, drivers, _ = nodes
    node, driver = processes["fallback"], drivers["fallback"]
    assert node.wait_for_log("Model ready", 120), node.log()[-3000:]
    log = node.log()
    assert "[xsam_engine.backends] The onnxruntime backend raised while starting; falling back." in log
    assert "Traceback (most recent call last)" in log and "NotADirectoryError" in log and "in ensure_onnx" in log
    assert "backend:=onnxruntime device:=auto cannot run here: onnxruntime failed to start (NotADirectoryError" in log
    values = driver.wait_for(lambda: driver.latest_values().get("model_state") == "ready" and driver.latest_values(), 10)
    assert values and values["backend"] == "torch"
