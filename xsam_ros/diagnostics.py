"""Counters, rates and latencies of the node, and the /diagnostics status built from them.

``NodeStats`` is updated from the callbacks and the worker; ``node_status`` assembles the node's
``DiagnosticStatus`` from a ``NodeView`` (what the node is doing: lifecycle state, model, inputs)
and a stats snapshot. Message types only; no rclpy.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from .triton_watch import ServerStatus

RATE_WINDOW_S = 10.0
LATENCY_WINDOW = 50


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)
        self._trim(self._times[-1])

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-6)
        return (len(self._times) - 1) / span if span < self._window_s else len(self._times) / self._window_s


class NodeStats:
    """Thread-safe counters of the perception node (callbacks and the worker both update them)."""

    COUNTERS = (
        "frames_received", "frames_rejected", "frames_processed", "results_published", "errors_published",
        "commands_received", "commands_rejected", "commands_dropped", "commands_expired", "llm_runs",
        "tracked_frames", "depth_received", "camera_info_received", "depth_missing", "depth_rejected",
        "depth_no_valid_pixels",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.input_rate = RateMeter()
        self.processing_rate = RateMeter()
        self._latencies: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LATENCY_WINDOW))
        self.last_error = ""
        self.last_error_time: float | None = None
        self.last_image_time: float | None = None
        self.started = time.monotonic()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def image_received(self) -> None:
        with self._lock:
            self.counters["frames_received"] += 1
            self.last_image_time = time.monotonic()
            self.input_rate.tick(self.last_image_time)

    def frame_processed(self, total_s: float) -> None:
        """One frame went through the worker (conversion, inference of every command, publishing)."""
        with self._lock:
            self.counters["frames_processed"] += 1
            self.processing_rate.tick()
            self._latencies["total"].append(total_s)

    def record_stages(self, timings_s: dict[str, float]) -> None:
        """Per-stage seconds of one published result."""
        with self._lock:
            for stage, seconds in timings_s.items():
                self._latencies[stage].append(seconds)

    def error(self, text: str) -> None:
        with self._lock:
            self.last_error = text
            self.last_error_time = time.monotonic()

    def snapshot(self) -> dict:
        with self._lock:
            now = time.monotonic()
            return {
                "counters": dict(self.counters),
                "input_rate_hz": self.input_rate.rate(now),
                "processing_rate_hz": self.processing_rate.rate(now),
                "latency_ms": {stage: 1000.0 * sum(values) / len(values)
                               for stage, values in self._latencies.items() if values},
                "last_error": self.last_error,
                "seconds_since_image": None if self.last_image_time is None else now - self.last_image_time,
                "uptime_s": now - self.started,
            }


def build_status(name: str, hardware_id: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    def text(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return DiagnosticStatus(
        level=level,
        name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=key, value=text(value)) for key, value in values.items()],
    )


def diagnostic_array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    array = DiagnosticArray(status=statuses)
    array.header.stamp = stamp
    return array


OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


@dataclass(frozen=True)
class NodeView:
    """What the node reports besides its counters.

    Attributes:
        node: fully qualified node name ("/xsam/perception_node").
        lifecycle_state: the managed node's state label ("unconfigured", "inactive", "active",
            "activating", ...).
        model_state: "unloaded" (not active), "loading" (activating), "ready", or "failed" (the
            last activation could not load the model; ``model_error`` says why).
        enabled: ``~/enable``.
        image_topic / image_reliability: the image input and its current reliability.
        no_image_warning_s: after this long without an image an active node warns.
        triton_server: backend triton: the server ("grpc://host:port"; "" for the local backends).
        server: backend triton while active: the ``triton_watch.ServerStatus``; None otherwise.
    """

    node: str
    lifecycle_state: str
    model: str
    model_state: str
    model_error: str
    backend: str
    device: str
    backend_summary: str
    enabled: bool
    image_topic: str
    image_reliability: str
    no_image_warning_s: float
    tracking: str = ""
    pending_commands: int = 0
    inference_busy: bool = False
    frames_skipped: int = 0
    triton_server: str = ""
    server: ServerStatus | None = None


def node_view(node: str, lifecycle_state: str, values: dict, model_name: str, model_state: str, model_error: str,
              loaded, enabled: bool, image_sub, worker, server: ServerStatus | None = None) -> NodeView:
    """The NodeView of the perception node from its parts (each may be None before configure / activate).

    ``values``: the node parameters; ``loaded``: ``model.LoadedModel``; ``image_sub``:
    ``qos.AdaptiveSubscription``; ``worker``: ``worker.InferenceWorker``; ``server``: the Triton
    server's status (``triton_watch.ServerWatch.status()``).
    """
    info = loaded.info if loaded is not None else None
    tracked = worker.slot.tracked if worker is not None else None
    triton_server = ""
    if server is not None:
        triton_server = server.url
    elif values["backend"] == "triton":  # not connected (yet): the server the parameters name
        triton_server = f"{values['triton_protocol']}://{values['triton_url']}"
    return NodeView(
        node, lifecycle_state, model_name, model_state, model_error, info.backend if info else values["backend"],
        info.device if info else values["device"], info.summary() if info else "", enabled,
        image_sub.topic if image_sub is not None else "", image_sub.reliability_name if image_sub is not None else "",
        values["no_image_warning_s"], tracked.job.prompt if tracked is not None else "",
        worker.pending_count() if worker is not None else 0, bool(worker is not None and worker.busy),
        worker.frames_skipped if worker is not None else 0, triton_server, server)


def node_level(view: NodeView, seconds_since_image: float | None) -> tuple[bytes, str]:
    """(level, message) of the node's status: ERROR without a model after a failed activation, WARN
    while activating or while active without images, OK otherwise (inactive and disabled are states
    an operator chose). Backend triton while active: ERROR while the server is unreachable and
    commands fail, WARN while the image stages run on the local fallback (``triton_fallback``),
    whether or not the node is enabled."""
    if view.model_state == "failed":
        return ERROR, f"model not available: {view.model_error}"
    if view.model_state == "loading":
        return WARN, f"{view.lifecycle_state}: loading the model"
    if view.lifecycle_state != "active":
        return OK, f"{view.lifecycle_state} (lifecycle): not processing; activate to load the model"
    if view.server is not None and not view.server.healthy:
        return (WARN if view.server.fallback else ERROR), view.server.describe()
    if not view.enabled:
        return OK, "disabled (~/enable)"
    if seconds_since_image is None or seconds_since_image > view.no_image_warning_s:
        return WARN, f"no image on {view.image_topic}"
    return OK, "running"


def node_status(view: NodeView, snapshot: dict) -> DiagnosticStatus:
    """The status "xsam_ros: <node>" with the view, every counter, rates and per-stage latency."""
    since = snapshot["seconds_since_image"]
    level, message = node_level(view, since)
    values: dict[str, object] = {
        "model": view.model,
        "lifecycle_state": view.lifecycle_state,
        "model_state": view.model_state,
        "backend": view.backend,
        "device": view.device,
        "backend_summary": view.backend_summary,
        "enabled": view.enabled,
        "image_topic": view.image_topic,
        "image_reliability": view.image_reliability,
        "input_rate_hz": snapshot["input_rate_hz"],
        "processing_rate_hz": snapshot["processing_rate_hz"],
        "seconds_since_image": -1.0 if since is None else since,
        "tracking": view.tracking,
        "pending_commands": view.pending_commands,
        "inference_busy": view.inference_busy,  # a frame is taken: converting, inferring or publishing
        "frames_skipped": view.frames_skipped,
        # backend triton: the server, "ready" / "unreachable" / "fallback" while active, and why it is not used
        "triton_server": view.triton_server,
        "triton_state": view.server.state if view.server is not None else "",
        "triton_error": view.server.error if view.server is not None else "",
    }
    values.update(snapshot["counters"])
    for stage, milliseconds in sorted(snapshot["latency_ms"].items()):
        values[f"latency_ms.{stage}"] = milliseconds
    values["last_error"] = snapshot["last_error"]
    return build_status(f"xsam_ros: {view.node}", f"xsam/{view.device}", level, message, values)
