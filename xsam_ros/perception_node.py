"""The X-SAM perception node: camera image + command or click in, instance masks with labels, boxes and 3D out.

Run it with ``ros2 run xsam_ros perception_node``, ``ros2 launch xsam_ros perception.launch.py``
or, in this repository, ``python -m xsam_ros.perception_node``. Topics are relative to the
node's namespace (see README, "Topics"); parameters are in ``xsam_ros/parameters.py``.

Threads: the executor thread runs only cheap callbacks (store the newest frame, queue a
command, answer services, timers). Conversion, inference, 3D and publishing run on one worker
thread (``xsam_ros.worker.InferenceWorker``): a command applies to the next frame that
arrives; a continuous command runs the language model once and then re-applies its condition
to every new frame (tracking, stable ids); frames that arrive while the worker is busy replace
each other (newest wins).

Every output carries the header (stamp and frame_id) of the image it was computed from.
Answers that no image belongs to (a command rejected on arrival, a command that timed out
waiting for an image, the node being disabled or without a model) carry the header of the
newest image received, or the command's own header when no image has arrived yet.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import MarkerArray
from xsam_ros.msg import InstanceMaskArray, SegmentationCommand

from xsam_engine.commands import is_tracking_command

from . import conversions, diagnostics, parameters
from .conversions import ConversionError, ThresholdOverrides
from .geometry import GeometryError, explain_no_valid_depth, object_geometry, valid_depth
from .markers import ONE_SHOT, STREAMS, TRACKED, delete_all, delete_markers, result_markers
from .qos import (
    COMMAND_QOS, DIAGNOSTICS_QOS, MARKER_QOS, RESULT_QOS, VISUALISATION_QOS, AdaptiveSubscription, describe_publishers,
    reliability_name,
)
from .sync import StampBuffer
from .worker import Batch, InferenceWorker, Job, TrackedCommand

NODE_NAME = "perception_node"
DEPTH_BUFFER = 10


class ModelLoadError(RuntimeError):
    """Loading the model failed; the text is the reason the node reports."""


class EngineLogHandler(logging.Handler):
    """Forwards the engine's Python log records (logger "xsam_engine") to the node's ROS logger."""

    def __init__(self, logger) -> None:
        super().__init__(level=logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        except Exception:  # a malformed record must not break inference
            return
        # rclpy ties a severity to each call site, so every level needs its own call.
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


class LogThrottle:
    """At most one log line per key and period; counts what it suppressed."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def allow(self, key: str, period_s: float) -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < period_s:
                self._suppressed[key] += 1
                return False, 0
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


@dataclasses.dataclass(eq=False)
class FrameContext:
    """One converted frame on the worker thread."""

    header: Header
    rgb: np.ndarray
    seconds: dict[str, float]
    depth: np.ndarray | None = None
    depth_encoding: str = ""
    camera_matrix: np.ndarray | None = None
    depth_checked: bool = False
    # (stamp_ns, msg) of the depth / camera_info paired when the frame was taken (None: look again
    # after inference, the depth image may arrive after its colour image).
    depth_match: tuple | None = None
    info_match: tuple | None = None


class PerceptionNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._throttle = LogThrottle()
        try:
            self._params = parameters.declare_all(self)
        except ValueError as error:
            self.get_logger().fatal(f"{self.get_fully_qualified_name()}: {error}")
            self.destroy_node()
            raise
        self.add_on_set_parameters_callback(self._on_set_parameters)
        engine_logger = logging.getLogger("xsam_engine")
        engine_logger.setLevel(logging.INFO)
        engine_logger.propagate = False
        self._engine_log_handler = EngineLogHandler(self.get_logger())
        engine_logger.addHandler(self._engine_log_handler)
        self._stats = diagnostics.NodeStats()
        self._enabled = True
        self._predictor = None
        self._model_state = "loading"  # loading | ready | failed
        self._model_error = ""
        self._model_name = self._params["model_path"] or "built-in tabletop demo model (xsam_engine/default_model)"
        self._device = self._params["device"]
        self._backend = self._params["backend"]
        self._backend_summary = ""
        self._last_header: Header | None = None
        # Marker ids last published per stream (markers.ONE_SHOT / TRACKED); None = clear first.
        self._marker_ids: dict[str, frozenset[int] | None] = dict.fromkeys(STREAMS)
        # Held while results are published and while ~/clear, ~/enable or a failed continuous
        # command change what may be published, so that none of them interleaves with a result.
        self._publish_lock = threading.RLock()
        self._first_image_logged = False
        self._first_depth_logged = False
        self._no_image_warned_at: float | None = None

        # Outputs.
        self._instances_pub = self.create_publisher(InstanceMaskArray, "instances", RESULT_QOS)
        self._overlay_pub = self.create_publisher(Image, "overlay", VISUALISATION_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, "markers", MARKER_QOS)
        self._diagnostics_pub = self.create_publisher(diagnostics.DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)

        # Inputs. Derived names follow image_transport / rqt_image_view: <image>/compressed,
        # <image>_mouse_left, after remapping of `image`.
        self._image_topic = self.resolve_topic_name("image")
        setting = self._params["image_reliability"]
        if self._params["compressed_input"]:
            self._image_sub = AdaptiveSubscription(
                self, CompressedImage, self._image_topic + "/compressed", self._on_image, 1, setting)
        else:
            self._image_sub = AdaptiveSubscription(self, Image, self._image_topic, self._on_image, 1, setting)
        self._sensor_subs = [self._image_sub]
        self._depth_buffer: StampBuffer = StampBuffer(DEPTH_BUFFER)
        self._depth_arrived = threading.Condition()
        self._last_depth_time: float | None = None
        self._info_buffer: StampBuffer = StampBuffer(DEPTH_BUFFER)
        if self._params["use_depth"]:
            self._depth_sub = AdaptiveSubscription(self, Image, "depth", self._on_depth, 5, setting)
            self._info_sub = AdaptiveSubscription(self, CameraInfo, "camera_info", self._on_camera_info, 5, setting)
            self._sensor_subs += [self._depth_sub, self._info_sub]
        self.create_subscription(SegmentationCommand, "command", self._on_command, COMMAND_QOS)
        self.create_subscription(String, "command_text", self._on_command_text, COMMAND_QOS)
        self._mouse_topic = self._image_topic + "_mouse_left"
        self.create_subscription(Point, self._mouse_topic, self._on_mouse_click, COMMAND_QOS)
        self.create_subscription(PointStamped, "clicked_point", self._on_clicked_point, COMMAND_QOS)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/clear", self._on_clear)

        self.create_timer(self._params["qos_check_period_s"], self._check_qos)
        self.create_timer(0.05, self._check_qos_if_requested)
        self.create_timer(self._params["diagnostics_period_s"], self._publish_diagnostics)
        self.create_timer(0.5, self._watch_images)

        self._worker = InferenceWorker(
            self._handle_batch, startup=self._load_model, max_pending=self._params["max_pending_commands"],
            command_timeout_s=lambda: self._params["command_timeout_s"], on_error=self._on_worker_error)
        self._log_startup()
        self._worker.start()

    # -- start-up --------------------------------------------------------------------------------

    def _log_startup(self) -> None:
        inputs = [f"images on {self._image_sub.describe()}"]
        if self._params["use_depth"]:
            inputs.append(f"depth on {self._depth_sub.describe()} with {self._info_sub.describe()} "
                          f"(16UC1 mm or 32FC1 m, registered to the image, stamps within {self._params['depth_slop_s']} s)")
        inputs.append(f"commands on {self.resolve_topic_name('command')} [SegmentationCommand] and "
                      f"{self.resolve_topic_name('command_text')} [String]")
        inputs.append(f"clicks on {self._mouse_topic} [Point] and {self.resolve_topic_name('clicked_point')} "
                      "[PointStamped, pixels]")
        outputs = ", ".join(self.resolve_topic_name(t) for t in ("instances", "overlay", "markers")) + ", /diagnostics"
        self.get_logger().info(
            "Waiting for " + "; ".join(inputs) + f". Publishing {outputs}. Model: {self._model_name} "
            f"(device {self._params['device']}, backend {self._params['backend']}), loading in the background.")

    def _load_model(self) -> None:
        """Load and warm up the model (worker thread, before any frame).

        Every failure, wherever it happens (imports, thread setting, loading, warm-up and its
        clean-up, the summary), ends in the "failed" state with its reason: diagnostics ERROR,
        every command answered with success=false naming it. The node never stays "loading".
        """
        try:
            self._load_model_or_raise()
        except ModelLoadError as error:
            self._fail_model(str(error), error.__cause__)
        except Exception as error:
            self._fail_model(f"loading the model failed: {type(error).__name__}: {error}", error)

    def _load_model_or_raise(self) -> None:
        import os

        import torch

        started = time.monotonic()
        threads = self._params["cpu_threads"] or max(1, (os.cpu_count() or 2) // 2)
        torch.set_num_threads(threads)
        path = self._params["model_path"] or None
        if path is not None and not Path(path).expanduser().is_dir():
            raise ModelLoadError(f"model_path {path!r} is not a directory (expected model.safetensors, config.json "
                                 "and tokenizer files written by save_pretrained)")
        try:
            from xsam_engine.backends import create_predictor

            predictor, info = create_predictor(
                None if path is None else Path(path).expanduser(),
                backend=self._params["backend"],
                device=self._params["device"],
                engine_cache_dir=self._params["engine_cache_dir"] or None,
                engine_file_path=self._params["engine_file_path"] or None,
                force_engine_update=self._params["force_engine_update"],
                enable_fp16=self._params["enable_fp16"],
                enable_int8=self._params["enable_int8"],
                max_workspace_size=self._params["max_workspace_size"] or None,
                log=False,  # the node logs the fallback itself (below), once, through its ROS logger
            )
        except Exception as error:  # missing files, wrong format, out of memory: the node keeps running
            raise ModelLoadError(f"could not load the model from {path or 'xsam_engine/default_model'}: "
                                 f"{type(error).__name__}: {error}") from None
        self._warm_up(predictor)
        if info.fallback:
            self.get_logger().warning(
                f"backend:={info.requested_backend} device:={info.requested_device} cannot run here: {info.reason}; "
                f"using {info.backend} on {info.device}.")
        parameters_count = sum(p.numel() for p in predictor.model.parameters() if p.device.type != "meta")
        summary = info.summary()
        self._device, self._backend, self._backend_summary = info.device, info.backend, summary
        self._predictor = predictor
        self._model_state = "ready"
        self.get_logger().info(
            f"Model ready: {self._model_name} ({parameters_count / 1e6:.1f} M parameters), {summary}, "
            f"{threads} CPU thread(s), loaded in {time.monotonic() - started:.1f} s.")

    def _warm_up(self, predictor) -> None:
        """One small inference, so that the first real command does not pay for lazy initialisation.

        A model that cannot answer it cannot answer a real frame either: the failure is the
        loading's (ModelLoadError).
        """
        from xsam_engine.requests import SegmentationRequest, Task

        try:
            predictor.set_image(np.zeros((64, 64, 3), dtype=np.uint8))
            predictor.segment(SegmentationRequest(Task.REFERRING, text="object"))
        except Exception as error:
            raise ModelLoadError(f"the model loaded but its warm-up inference (a 64x64 image, 'object') failed: "
                                 f"{type(error).__name__}: {error}") from error
        finally:
            predictor.reset_image()

    def _fail_model(self, error: str, cause: BaseException | None = None) -> None:
        self._model_error = error
        self._model_state = "failed"
        self._stats.error(error)
        text = (error + ". The node keeps running and answers every command with success=false; fix model_path "
                "and restart it.")
        if cause is not None:
            text += "\n" + "".join(traceback.format_exception(cause))[-3000:]
        self.get_logger().error(text)
        for job in self._worker.take_pending():
            self._publish_error(job, f"model not available: {error}")

    # -- parameters ------------------------------------------------------------------------------

    def _on_set_parameters(self, changes) -> SetParametersResult:
        proposed = dict(self._params)
        for change in changes:
            if change.name not in parameters.BY_NAME:
                continue
            value = change.value
            if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
                value = list(value)
            proposed[change.name] = value
        errors = parameters.validate_all({name: proposed[name] for name in proposed})
        if errors:
            reason = "; ".join(errors)
            self.get_logger().warning(f"rejected parameter change: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        self._params = proposed
        return SetParametersResult(successful=True)

    def _thresholds(self) -> ThresholdOverrides:
        """The node's threshold parameters (negative = the model's default), read at each use."""
        return ThresholdOverrides.from_values(
            self._params["score_threshold"], self._params["mask_threshold"], self._params["overlap_threshold"])

    # -- input callbacks (executor thread: store and return) --------------------------------------

    def _on_image(self, msg) -> None:
        self._stats.image_received()
        self._last_header = msg.header
        rejected = self._check_image(msg)
        zero_stamp = msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0
        if zero_stamp or not msg.header.frame_id:
            self._log_problem(
                "warning", "header", f"Images on {self._image_sub.topic} have "
                + ("a zero stamp" if zero_stamp else "no frame_id")
                + ": every output copies the image header, so results cannot be matched to a time or frame "
                "(and depth is paired by stamp). Fix the camera driver.", period_s=60.0)
        if not self._first_image_logged:
            self._first_image_logged = True
            size = f"{msg.width}x{msg.height} {msg.encoding}" if isinstance(msg, Image) else f"{msg.format}"
            self.get_logger().info(
                f"First image on {self._image_sub.topic}: {size}, frame_id '{msg.header.frame_id}' "
                f"({reliability_name(self._image_sub.reliability)} subscription).")
        if self._no_image_warned_at is not None:
            self._no_image_warned_at = None
            self.get_logger().info(f"Images arrive again on {self._image_sub.topic}.")
        if not self._enabled:
            return
        self._worker.submit_frame(msg, rejected)

    def _check_image(self, msg) -> str:
        """The cheap header checks on arrival, whether or not a command waits: "" or the reason, logged and counted."""
        try:
            conversions.check_image_message(msg, self._params["max_image_pixels"])
        except ConversionError as error:
            self._image_rejected(error)
            return str(error)
        return ""

    def _image_rejected(self, error: ConversionError) -> None:
        self._stats.count("frames_rejected")
        self._log_problem("error", f"image:{str(error)[:60]}", f"Rejected an image on {self._image_sub.topic}: {error}")
        self._stats.error(f"image rejected: {error}")

    def _on_depth(self, msg: Image) -> None:
        self._stats.count("depth_received")
        self._depth_buffer.add(conversions.stamp_ns(msg.header), msg)
        with self._depth_arrived:
            self._last_depth_time = time.monotonic()
            self._depth_arrived.notify_all()
        if not self._first_depth_logged:
            self._first_depth_logged = True
            self.get_logger().info(
                f"First depth image on {self._depth_sub.topic}: {msg.width}x{msg.height} {msg.encoding}, "
                f"frame_id '{msg.header.frame_id}'.")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._stats.count("camera_info_received")
        self._info_buffer.add(conversions.stamp_ns(msg.header), msg)

    def _on_command(self, msg: SegmentationCommand) -> None:
        self._stats.count("commands_received")
        prompt = msg.text[: conversions.MAX_TEXT_LENGTH]
        try:
            request = conversions.command_to_request(
                msg, self._params["default_vocabulary"], self._params["stuff_vocabulary"], self._thresholds())
        except ConversionError as error:
            self._reject(msg.header, msg.request_id, prompt or "(SegmentationCommand)", str(error), "command",
                         continuous=bool(msg.continuous))
            return
        self._submit(Job(
            request=request, request_id=msg.request_id, prompt=prompt or request.describe(),
            continuous=bool(msg.continuous), source="command", received=time.monotonic(),
            after_seq=self._worker.frame_seq, header=msg.header,
            thresholds=ThresholdOverrides.from_values(msg.score_threshold, msg.mask_threshold, msg.overlap_threshold)))

    def _on_command_text(self, msg: String) -> None:
        self._stats.count("commands_received")
        text = msg.data
        header = self._last_header or Header()
        try:
            request = conversions.text_to_request(
                text, self._params["default_vocabulary"], self._params["stuff_vocabulary"], self._thresholds())
        except ConversionError as error:
            self._reject(header, "", text, str(error), "command_text", continuous=is_tracking_command(text))
            return
        continuous = is_tracking_command(text)
        self._submit(Job(
            request=request, request_id="", prompt=text.strip(), continuous=continuous, source="command_text",
            received=time.monotonic(), after_seq=self._worker.frame_seq, header=header))

    def _on_mouse_click(self, msg: Point) -> None:
        self._click(msg.x, msg.y, self._last_header or Header(), "image_mouse_left")

    def _on_clicked_point(self, msg: PointStamped) -> None:
        self._click(msg.point.x, msg.point.y, msg.header, "clicked_point")

    def _click(self, x: float, y: float, header: Header, source: str) -> None:
        self._stats.count("commands_received")
        try:
            request = conversions.click_to_request(x, y, self._thresholds())
        except ConversionError as error:
            self._reject(header, "click", f"click ({x}, {y})", str(error), source)
            return
        self._submit(Job(
            request=request, request_id="click", prompt=request.describe(), continuous=False,
            source=source, received=time.monotonic(), after_seq=self._worker.frame_seq, header=header))

    def _reject(self, header: Header, request_id: str, prompt: str, error: str, source: str,
                continuous: bool = False) -> None:
        self._stats.count("commands_rejected")
        if continuous:
            error += self._stop_older_tracking(time.monotonic(), header)
        self._log_problem("warning", f"reject:{error[:80]}", f"Rejected a {source} message: {error}")
        self._instances_pub.publish(conversions.error_result(
            self._answer_header(header), f"invalid command: {error}", request_id=request_id, prompt=prompt))
        self._stats.count("errors_published")

    def _submit(self, job: Job) -> None:
        if not self._enabled:
            self._publish_error(job, "the node is disabled (call ~/enable with data: true)")
            return
        if self._model_state == "failed":
            self._publish_error(job, f"model not available: {self._model_error}")
            return
        self._throttled_info("accepted", 1.0, f"{job.source}: {job.prompt[:80]!r} -> {job.request.task.value}"
                             + (" (continuous)" if job.continuous else "") + "; answering on the next image.")
        dropped = self._worker.submit_job(job)
        if dropped is not None:
            self._stats.count("commands_dropped")
            limit = self._params["max_pending_commands"]
            self._log_problem("warning", "dropped", f"Command queue full ({limit} waiting for an image): dropped the "
                              f"oldest ({dropped.prompt[:60]!r}); commands arrive faster than images.")
            self._publish_error(dropped, f"dropped: more than max_pending_commands={limit} commands were waiting "
                                "for an image; a newer command replaced this one")

    def _answer_header(self, fallback: Header | None) -> Header:
        return self._last_header or fallback or Header()

    # -- services --------------------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._publish_lock:  # a result being published finishes first; none is published after this
            self._enabled = bool(request.data)
        if not self._enabled:
            for job in self._worker.take_pending():
                self._publish_error(job, "the node was disabled before an image answered this command")
        response.success = True
        response.message = "enabled" if self._enabled else "disabled: images are ignored, commands are refused"
        self.get_logger().info(f"~/enable: {response.message}.")
        return response

    def _on_clear(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        # Under the publish lock: a tracked result computed before this is published before the
        # DELETEALL or not at all (it re-checks that its command is still tracked under the lock).
        with self._publish_lock:
            tracked = self._worker.clear_tracked()
            self._marker_ids = dict.fromkeys(STREAMS)
            if self._markers_pub.get_subscription_count() > 0:
                self._markers_pub.publish(MarkerArray(markers=[delete_all(self._answer_header(None))]))
        response.success = True
        response.message = (f"stopped tracking {tracked.job.prompt!r}; instance ids start again at 1"
                            if tracked is not None else "nothing was tracked")
        self.get_logger().info(f"~/clear: {response.message}.")
        return response

    # -- timers ------------------------------------------------------------------------------------

    def _check_qos(self) -> None:
        for subscription in self._sensor_subs:
            change = subscription.check()
            if change:
                self.get_logger().info(change)

    def _check_qos_if_requested(self) -> None:
        """A publisher with incompatible QoS appeared: re-match now instead of at the next period."""
        if any(subscription.recheck_requested for subscription in self._sensor_subs):
            self._check_qos()

    def _watch_images(self) -> None:
        limit = self._params["no_image_warning_s"]
        snapshot_time = self._stats.last_image_time
        since = time.monotonic() - (snapshot_time if snapshot_time is not None else self._stats.started)
        if since < limit:
            return
        if self._no_image_warned_at is not None and time.monotonic() - self._no_image_warned_at < limit:
            return
        self._no_image_warned_at = time.monotonic()
        publishers = self._image_sub.publisher_reliabilities()
        hint = ("no publisher: check the topic name / remapping (launch argument image_topic)" if not publishers else
                "publishers exist but nothing arrives: large images over best-effort Fast DDS need the shared-memory "
                "profile config/fastdds_large_images.xml on the publisher (README, 'Camera transport')")
        self.get_logger().warning(
            f"No image received on {self._image_sub.topic} for {since:.1f} s. Publishers: "
            f"{describe_publishers(publishers)}; this subscription is {reliability_name(self._image_sub.reliability)}"
            f" ({self._image_sub.setting}). Hint: {hint}.")

    def _publish_diagnostics(self) -> None:
        snapshot = self._stats.snapshot()
        level, message = diagnostics.OK, "running"
        since = snapshot["seconds_since_image"]
        if self._model_state == "failed":
            level, message = diagnostics.ERROR, f"model not available: {self._model_error}"
        elif self._model_state == "loading":
            level, message = diagnostics.WARN, "loading the model"
        elif not self._enabled:
            level, message = diagnostics.OK, "disabled (~/enable)"
        elif since is None or since > self._params["no_image_warning_s"]:
            level, message = diagnostics.WARN, f"no image on {self._image_sub.topic}"
        tracked = self._worker.tracked
        values: dict[str, object] = {
            "model": self._model_name,
            "model_state": self._model_state,
            "backend": self._backend,
            "device": self._device,
            "backend_summary": self._backend_summary,
            "enabled": self._enabled,
            "image_topic": self._image_sub.topic,
            "image_reliability": reliability_name(self._image_sub.reliability),
            "input_rate_hz": snapshot["input_rate_hz"],
            "processing_rate_hz": snapshot["processing_rate_hz"],
            "seconds_since_image": -1.0 if since is None else since,
            "tracking": tracked.job.prompt if tracked is not None else "",
            "pending_commands": self._worker.pending_count(),
            "inference_busy": self._worker.busy,  # a frame is taken: converting, inferring or publishing
            "frames_skipped": self._worker.frames_skipped,
        }
        values.update(snapshot["counters"])
        for stage, milliseconds in sorted(snapshot["latency_ms"].items()):
            values[f"latency_ms.{stage}"] = milliseconds
        values["last_error"] = snapshot["last_error"]
        status = diagnostics.build_status(
            f"xsam_ros: {self.get_fully_qualified_name()}", f"xsam/{self._device}", level, message, values)
        # Diagnostics describe the node at this moment, not an image: stamped with the node's clock.
        self._diagnostics_pub.publish(diagnostics.diagnostic_array(self.get_clock().now().to_msg(), [status]))

    # -- worker thread -----------------------------------------------------------------------------

    def _on_worker_error(self, error: BaseException) -> None:
        text = f"internal error in the inference thread: {type(error).__name__}: {error}"
        self._stats.error(text)
        self._log_problem("error", "worker", text + "\n" + "".join(traceback.format_exception(error))[-2000:])

    def _handle_batch(self, batch: Batch) -> None:
        for job in batch.expired:
            self._stats.count("commands_expired")
            timeout = self._params["command_timeout_s"]
            self._log_problem("warning", "expired", f"No image arrived on {self._image_sub.topic} within {timeout} s "
                              f"after the {job.source} {job.prompt[:60]!r}; answered with success=false.")
            self._publish_error(job, f"no image arrived on {self._image_sub.topic} within command_timeout_s="
                                f"{timeout} s after the command")
        if batch.frame is None:
            return
        jobs, tracked = batch.jobs, batch.tracked
        header = batch.frame.msg.header
        started = time.perf_counter()
        seconds = {"queue": max(0.0, time.monotonic() - batch.frame.received)}
        try:
            if batch.frame.rejected:  # refused on arrival (logged and counted there)
                raise ConversionError(batch.frame.rejected)
            if isinstance(batch.frame.msg, CompressedImage):
                rgb = conversions.compressed_to_rgb(batch.frame.msg, self._params["max_image_pixels"])
            else:
                rgb = conversions.image_to_rgb(batch.frame.msg, self._params["max_image_pixels"])
        except ConversionError as error:
            if not batch.frame.rejected:  # found only by decoding (e.g. a corrupt JPEG body)
                self._image_rejected(error)
            for job in jobs:
                self._publish_error(job, f"image rejected: {error}", header)
            if tracked is not None:
                self._publish_error(tracked.job, f"image rejected: {error}", header)
            return
        seconds["image_conversion"] = time.perf_counter() - started
        if self._model_state != "ready":
            for job in jobs:
                self._publish_error(job, f"model not available: {self._model_error or self._model_state}", header)
            return
        context = FrameContext(header=header, rgb=rgb, seconds=seconds)
        if self._params["use_depth"]:
            # Pair now: a slow inference must not let the buffer drop this frame's depth image.
            stamp, slop_ns = conversions.stamp_ns(header), int(self._params["depth_slop_s"] * 1e9)
            context.depth_match = self._depth_buffer.find(stamp, slop_ns)
            context.info_match = self._info_buffer.find(stamp, slop_ns)
        try:
            self._predictor.set_image(rgb)
        except Exception as error:
            text = f"the model could not encode the {rgb.shape[1]}x{rgb.shape[0]} image: {type(error).__name__}: {error}"
            self._log_problem("error", "set_image", text)
            self._stats.error(text)
            size = (rgb.shape[0], rgb.shape[1])
            for job in jobs:
                self._publish_error(job, text, header, size)
            if tracked is not None:
                self._publish_error(tracked.job, text, header, size)
            return
        replaced = False
        for job in jobs:
            replaced |= job.continuous
            self._run_job(context, job)
        if tracked is not None and not replaced and self._worker.still_tracked(tracked):
            self._run_tracked(context, tracked)
        self._stats.frame_processed(time.perf_counter() - started)

    def _run_job(self, context: FrameContext, job: Job) -> None:
        try:
            result = self._predictor.segment(job.request)
        except Exception as error:
            self._engine_error(context, job, error)
            return
        self._stats.count("llm_runs")
        instances = result.instances[: self._params["max_instances"]]
        if job.continuous:
            if result.condition is None:
                self._publish_error(job, "the model produced no condition to track", context.header)
                return
            from xsam_engine.tracking import InstanceTracker

            tracker = InstanceTracker(self._params["tracking_min_iou"], self._params["tracking_max_missed"])
            tracked = TrackedCommand(job=job, condition=result.condition, tracker=tracker)
            instances = tracker.update(instances)
            with self._publish_lock:
                self._worker.set_tracked(tracked)
                self._marker_ids[TRACKED] = None  # a new tracked command: clear the previous one's markers
            self.get_logger().info(f"Tracking {job.prompt[:80]!r}: the language model ran once; following frames "
                                   "reuse its condition.")
            self._publish_result(context, result, instances, job, tracking=False, tracked=tracked)
            return
        instances = [dataclasses.replace(instance, instance_id=index + 1) for index, instance in enumerate(instances)]
        self._publish_result(context, result, instances, job, tracking=False)

    def _run_tracked(self, context: FrameContext, tracked: TrackedCommand) -> None:
        job = tracked.job
        # The command's own thresholds, else the node's parameters as they are now, else the model's.
        thresholds = (job.thresholds or ThresholdOverrides()).over(self._thresholds())
        try:
            result = self._predictor.decode(tracked.condition, **thresholds.as_request_fields())
        except Exception as error:
            self._engine_error(context, job, error)
            return
        instances = tracked.tracker.update(result.instances[: self._params["max_instances"]])
        tracked.frames += 1
        if not self._worker.still_tracked(tracked):
            return  # cleared or replaced while decoding (checked again, under the lock, before publishing)
        if self._publish_result(context, result, instances, job, tracking=True, tracked=tracked):
            self._stats.count("tracked_frames")

    def _engine_error(self, context: FrameContext, job: Job, error: Exception) -> None:
        if isinstance(error, ValueError):
            text = str(error)  # the engine's messages say what to fix
        else:
            text = f"{type(error).__name__}: {error}"
            self._log_problem("error", f"engine:{type(error).__name__}", "Inference failed: " + text + "\n"
                              + "".join(traceback.format_exception(error))[-2000:])
        self._stats.error(text)
        self._publish_error(job, text, context.header, (context.rgb.shape[0], context.rgb.shape[1]))

    # -- depth / 3D ------------------------------------------------------------------------------

    def _prepare_depth(self, context: FrameContext) -> None:
        """Find and convert the depth image paired with this frame (once per frame); log why not."""
        if context.depth_checked:
            return
        context.depth_checked = True
        if not self._params["use_depth"]:
            return
        stamp = conversions.stamp_ns(context.header)
        slop_ns = int(self._params["depth_slop_s"] * 1e9)
        found = context.depth_match or self._wait_for_depth(stamp, slop_ns)
        if found is None:
            self._stats.count("depth_missing")
            received = self._stats.snapshot()["counters"]["depth_received"]
            detail = (f"none has arrived on {self._depth_sub.topic} yet" if received == 0 else
                      f"buffered depth stamps differ by more than depth_slop_s={self._params['depth_slop_s']} s")
            self._log_problem("warning", "depth-missing", f"No depth image for the image stamped "
                              f"{context.header.stamp.sec}.{context.header.stamp.nanosec:09d}: {detail}; no 3D for this "
                              "result (set use_depth:=false if there is no depth camera).", period_s=10.0)
            return
        depth_msg = found[1]
        try:
            depth = conversions.depth_to_metres(depth_msg, self._params["max_image_pixels"])
            height, width = context.rgb.shape[:2]
            if depth.shape != (height, width):
                raise GeometryError(
                    f"depth image is {depth.shape[1]}x{depth.shape[0]} but the colour image is {width}x{height}; the depth "
                    "must be registered to the colour image at the same resolution (e.g. aligned_depth_to_color)")
        except (ConversionError, GeometryError) as error:
            self._depth_rejected(error)
            return
        info = context.info_match or self._info_buffer.find(stamp, slop_ns) or self._info_buffer.latest()
        if info is None:
            self._stats.count("depth_missing")
            self._log_problem("warning", "info-missing", f"Depth arrived but no camera_info on {self._info_sub.topic}; "
                              "no 3D until it does.", period_s=10.0)
            return
        try:
            matrix = conversions.camera_matrix(info[1], (width, height))
        except GeometryError as error:
            self._depth_rejected(error)
            return
        if depth_msg.header.frame_id and context.header.frame_id and depth_msg.header.frame_id != context.header.frame_id:
            self._log_problem("warning", "depth-frame", f"Depth frame_id '{depth_msg.header.frame_id}' differs from the "
                              f"image's '{context.header.frame_id}'; using it as registered to the image.", period_s=60.0)
        context.depth, context.camera_matrix, context.depth_encoding = depth, matrix, depth_msg.encoding

    def _wait_for_depth(self, stamp: int, slop_ns: int):
        """The depth image paired with `stamp`; waits up to depth_wait_s (worker thread only) while a
        depth stream is active, since a depth image may arrive after its colour image."""
        found = self._depth_buffer.find(stamp, slop_ns)
        if found is not None or self._params["depth_wait_s"] <= 0:
            return found
        deadline = time.monotonic() + self._params["depth_wait_s"]
        with self._depth_arrived:
            while found is None:
                remaining = deadline - time.monotonic()
                stream_active = self._last_depth_time is not None and time.monotonic() - self._last_depth_time < 2.0
                if remaining <= 0 or not stream_active:
                    break
                self._depth_arrived.wait(remaining)
                found = self._depth_buffer.find(stamp, slop_ns)
        return found

    def _depth_rejected(self, error: Exception) -> None:
        self._stats.count("depth_rejected")
        self._stats.error(f"depth rejected: {error}")
        self._log_problem("error", f"depth:{str(error)[:60]}", f"Depth not used: {error}; has_3d=false.")

    def _geometries(self, context: FrameContext, instances) -> list:
        if not self._params["use_depth"] or not instances:
            return [None] * len(instances)
        self._prepare_depth(context)
        if context.depth is None:
            return [None] * len(instances)
        results = []
        for instance in instances:
            x0, y0, x1, y1 = instance.box_xyxy
            if x1 <= x0 or y1 <= y0:
                results.append(None)
                continue
            crop = instance.mask[y0:y1, x0:x1]
            try:
                geometry = object_geometry(
                    crop, context.depth, context.camera_matrix, self._params["min_depth_m"],
                    self._params["max_depth_m"], roi=(x0, y0, x1 - x0, y1 - y0))
            except GeometryError as error:
                self._log_problem("error", "geometry", f"3D estimate failed: {error}")
                geometry = None
            if geometry is None:
                self._check_depth_range(context, instance.label, context.depth[y0:y1, x0:x1][crop])
            results.append(geometry)
        return results

    def _check_depth_range(self, context: FrameContext, label: str, depths: np.ndarray) -> None:
        """No pixel of a mask with depth in [min_depth_m, max_depth_m]: say why (wrong units, holes)."""
        low, high = self._params["min_depth_m"], self._params["max_depth_m"]
        if valid_depth(depths, low, high).any():
            return  # some valid depth, too few points for an estimate: not a units problem
        explanation = explain_no_valid_depth(depths, low, high, context.depth_encoding)
        text = f"no 3D for {label!r}: {explanation}"
        self._stats.count("depth_no_valid_pixels")
        self._stats.error(text)
        # One line per cause and 10 s (the numbers in the text vary from frame to frame, the cause does not).
        key = "depth-range:" + re.sub(r"[-+0-9.e]+ m\b", "", explanation)
        self._log_problem("warning", key, text + "; has_3d=false.", period_s=10.0)

    # -- publishing --------------------------------------------------------------------------------

    def _publish_result(self, context: FrameContext, result, instances, job: Job, tracking: bool,
                        tracked: TrackedCommand | None = None) -> bool:
        """Publish instances, overlay and markers of one result; False when it was not published.

        ``tracked``: the tracked command the result belongs to (its first, LLM answer or a
        tracked frame); its markers go to the tracked stream. Right before publishing, under the
        publish lock: a tracked frame whose command was cleared or replaced meanwhile is
        dropped (no stale markers after ~/clear's DELETEALL); while the node is disabled nothing
        is published, and a command's answer becomes an error saying so.
        """
        started = time.perf_counter()
        geometries = self._geometries(context, instances)
        depth_seconds = time.perf_counter() - started
        seconds = {**result.timings, "queue": context.seconds["queue"],
                   "image_conversion": context.seconds["image_conversion"]}
        if self._params["use_depth"]:
            seconds["depth_3d"] = depth_seconds
        started = time.perf_counter()
        message = conversions.result_to_msg(
            result, context.header, instances, [instance.instance_id for instance in instances], geometries,
            job.request_id, job.prompt, tracking, self._params["publish_label_image"], {})
        seconds["ros_conversion"] = time.perf_counter() - started
        message.timings = conversions.timings_msg(seconds)
        overlay = None
        if self._overlay_pub.get_subscription_count() > 0:
            from xsam_engine.visualization import draw_overlay

            caption = job.prompt + (" [tracking]" if tracking else "")
            overlay = conversions.rgb_to_image_msg(draw_overlay(context.rgb, instances, caption=caption),
                                                   conversions.copy_header(context.header))
        stream = ONE_SHOT if tracked is None else TRACKED
        with self._publish_lock:
            current = tracked is None or self._worker.still_tracked(tracked)
            if tracking and not current:
                return False
            if not self._enabled:
                if not tracking:  # the command's answer is owed: say why there is none
                    text = "the node was disabled (~/enable) while this command was being answered"
                    if tracked is not None and current:
                        self._worker.clear_tracked()
                        text += "; tracking did not start"
                    self._publish_error(job, text, context.header, result.image_size)
                return False
            self._instances_pub.publish(message)
            if overlay is not None:
                self._overlay_pub.publish(overlay)
            if current and self._markers_pub.get_subscription_count() > 0:
                markers, self._marker_ids[stream] = result_markers(message, self._marker_ids[stream], stream)
                self._markers_pub.publish(markers)
        self._stats.record_stages(seconds)
        self._stats.count("results_published")
        return True

    def _publish_error(self, job: Job, error: str, header: Header | None = None,
                       image_size: tuple[int, int] = (0, 0)) -> None:
        """success=false answer to ``job``. A failed continuous command still replaces the tracked one."""
        header = header if header is not None else self._answer_header(job.header)
        tracked = self._worker.tracked
        if job.continuous and (tracked is None or tracked.job is not job):
            error += self._stop_older_tracking(job.received, header)
        self._instances_pub.publish(conversions.error_result(
            header, error, request_id=job.request_id, prompt=job.prompt, task=job.request.task, image_size=image_size))
        self._stats.count("errors_published")

    def _stop_older_tracking(self, received: float, header: Header) -> str:
        """A new continuous command (received at ``received``) failed: stop the tracked command
        that arrived before it, as a successful one would have replaced it; "" when there was none,
        else the sentence to append to the error."""
        with self._publish_lock:
            tracked = self._worker.tracked
            if tracked is None or tracked.job.received > received:
                return ""
            self._worker.clear_tracked()
            ids, self._marker_ids[TRACKED] = self._marker_ids[TRACKED], None
            if ids and self._markers_pub.get_subscription_count() > 0:
                self._markers_pub.publish(MarkerArray(markers=delete_markers(header, ids, TRACKED)))
        note = (f"; the previously tracked command {tracked.job.prompt[:80]!r} was stopped (a new continuous "
                "command replaces it, also when it fails)")
        self.get_logger().warning(f"Stopped tracking {tracked.job.prompt[:80]!r}: a newer continuous command failed.")
        return note

    # -- logging -----------------------------------------------------------------------------------

    def _log_problem(self, level: str, key: str, text: str, period_s: float = 5.0) -> None:
        allowed, suppressed = self._throttle.allow(key, period_s)
        if not allowed:
            return
        if suppressed:
            text += f" ({suppressed} similar message(s) suppressed in the last {period_s:.0f} s)"
        # rclpy ties a severity to each call site, so every level needs its own call.
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    def _throttled_info(self, key: str, period_s: float, text: str) -> None:
        allowed, suppressed = self._throttle.allow(key, period_s)
        if allowed:
            self.get_logger().info(text + (f" (+{suppressed} more)" if suppressed else ""))

    # -- shutdown ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the worker thread (waits up to 5 s for the current inference)."""
        if not self._worker.stop(5.0):
            self.get_logger().warning("The inference thread did not stop within 5 s; exiting anyway.")
        logging.getLogger("xsam_engine").removeHandler(self._engine_log_handler)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except ValueError as error:
        print(f"[{NODE_NAME}] cannot start: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
