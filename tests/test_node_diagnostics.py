"""The level and message of the node's /diagnostics status, and the Triton server's part in it.

``diagnostics.node_level`` decides OK / WARN / ERROR from what the node is doing; with
``backend: triton`` the server's state (``triton_watch.ServerStatus``) adds: ERROR while it is
unreachable and commands fail, WARN while the image stages run on the local fallback, also when
the node is disabled (a broken server is not an operator's choice). tests/test_node_triton.py
checks the same with real node processes and a real server; this is the whole table at once.
"""

from __future__ import annotations

import pytest

pytest.importorskip("diagnostic_msgs")

from xsam_ros import diagnostics, parameters  # noqa: E402
from xsam_ros.diagnostics import ERROR, OK, WARN, NodeView, node_level, node_status, node_view  # noqa: E402
from xsam_ros.triton_watch import ServerStatus  # noqa: E402

URL = "grpc://gpu-server:8001"
DOWN = f"Triton server {URL} is unreachable (health check): connection refused."
READY = ServerStatus(URL, "ready")
UNREACHABLE = ServerStatus(URL, "unreachable", DOWN)
UNREACHABLE_WITH_FALLBACK = ServerStatus(URL, "unreachable", DOWN, "torch")
ON_FALLBACK = ServerStatus(URL, "fallback", DOWN, "onnxruntime")
FAILS = f"Triton server {URL} unreachable: commands fail until it is back (triton_fallback is false)"


def view(server: ServerStatus | None = None, lifecycle_state: str = "active", model_state: str = "ready",
         enabled: bool = True, model_error: str = "") -> NodeView:
    return NodeView("/xsam/perception_node", lifecycle_state, "tiny", model_state, model_error, "triton", "cpu", "",
                    enabled, "/xsam/image", "reliable", 5.0, triton_server=URL, server=server)


@pytest.mark.parametrize("server, state, enabled, expected", [
    (READY, "active", True, (OK, "running")),
    (UNREACHABLE, "active", True, (ERROR, FAILS)),
    (UNREACHABLE, "active", False, (ERROR, FAILS)),  # disabled by choice; the server is not
    (UNREACHABLE_WITH_FALLBACK, "active", True, (
        WARN, f"Triton server {URL} unreachable: the image stages run locally on torch until it is back "
              "(triton_fallback)")),
    (ON_FALLBACK, "active", True, (
        WARN, f"Triton server {URL} unreachable: the image stages run locally on onnxruntime until it is back "
              "(triton_fallback)")),
    (None, "inactive", True, (OK, "inactive (lifecycle): not processing; activate to load the model")),
])
def test_level_and_message_follow_the_server(server, state, enabled, expected):
    assert node_level(view(server, state, enabled=enabled), seconds_since_image=0.5) == expected


def test_a_failed_activation_says_why_whatever_the_server():
    reason = f"the Triton server is not ready for this model: {DOWN}"
    level = node_level(view(None, "unconfigured", "failed", model_error=reason), None)
    assert level == (ERROR, f"model not available: {reason}")


def test_status_values_name_the_server_its_state_and_error():
    snapshot = diagnostics.NodeStats().snapshot()
    values = {pair.key: pair.value for pair in node_status(view(UNREACHABLE), snapshot).values}
    assert (values["triton_server"], values["triton_state"], values["triton_error"]) == (URL, "unreachable", DOWN)
    values = {pair.key: pair.value for pair in node_status(view(READY), snapshot).values}
    assert (values["triton_server"], values["triton_state"], values["triton_error"]) == (URL, "ready", "")


@pytest.mark.parametrize("backend, protocol, expected", [
    ("triton", "grpc", "grpc://gpu-server:8001"),
    ("triton", "http", "http://gpu-server:8001"),
    ("torch", "grpc", ""),  # a local backend has no server
])
def test_before_activation_the_view_names_the_configured_server(backend, protocol, expected):
    values = {**parameters.defaults(), "backend": backend, "triton_protocol": protocol, "triton_url": "gpu-server:8001"}
    built = node_view("/xsam/perception_node", "unconfigured", values, "tiny", "failed", "x", None, True, None, None)
    assert built.triton_server == expected and built.server is None
