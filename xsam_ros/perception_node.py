"""The X-SAM perception node: a managed (lifecycle) node that wires ROS to the ROS-free frame pipeline.

``ros2 launch xsam_ros perception.launch.py`` configures and activates it (``autostart:=true``);
``ros2 run xsam_ros perception_node [--autostart]`` / ``python -m xsam_ros.perception_node`` start it
unconfigured unless ``--autostart``. README "Lifecycle", "Topics", "Architecture".

Parameters are declared in ``__init__`` (``ros2 param`` works in every state); ``on_configure``
creates the lifecycle publishers, services and pipeline; ``on_activate`` loads the model on the
worker thread (failure: FAILURE, the node stays inactive) and subscribes; ``on_deactivate`` answers
waiting commands, stops the worker and frees the model; ``on_cleanup`` / ``on_shutdown`` release
everything. The executor thread only checks and stores inputs; ``worker.InferenceWorker`` runs
``pipeline.FramePipeline`` on the newest frame and this node publishes the outcomes.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool, Trigger
from xsam_ros.msg import SegmentationCommand

from . import conversions, diagnostics, model, parameters
from .conversions import ConversionError
from .depth import DepthPairer
from .outputs import Outputs
from .pipeline import FrameInput, FramePipeline, PipelineSettings, click_job, command_job, image_problem, text_job
from .qos import COMMAND_QOS, DIAGNOSTICS_QOS, AdaptiveSubscription, no_image_warning, reliability_name
from .reporting import EngineLogHandler, NodeReporter, Problem, with_traceback
from .worker import Batch, InferenceWorker, Job

NODE_NAME = "perception_node"
SUCCESS, FAILURE, ERROR = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE, TransitionCallbackReturn.ERROR
STOP_TIMEOUT_S = 10.0  # on_deactivate waits this long for the frame in flight


def _logged(transition):
    """rclpy turns an exception in a transition callback into ERROR without a word: log it first."""
    def callback(self, state):
        try:
            return transition(self, state)
        except Exception as error:
            self.get_logger().error(with_traceback(f"{transition.__name__} failed: {error!r}", error, 3000))
            return ERROR
    return callback


class PerceptionNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._params = parameters.declare_all(self)
        except ValueError as error:
            self.get_logger().fatal(f"{self.get_fully_qualified_name()}: {error}")
            self.destroy_node()
            raise
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._engine_log = EngineLogHandler(self.get_logger())
        self._engine_log.attach()
        self._stats = diagnostics.NodeStats()
        self._reporter = NodeReporter(self.get_logger(), self._stats)
        self._loaded, self._model_state, self._model_error, self._last_header = None, "unloaded", "", None
        self._worker = self._pipeline = self._outputs = self._image_sub = None
        self._sensor_subs, self._command_subs, self._active_timers, self._state_services = [], [], [], []
        self._no_image_warned_at, self._active_since = None, time.monotonic()
        self._image_topic = self.resolve_topic_name("image")
        self._diagnostics_pub = self.create_publisher(diagnostics.DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_timer(self._params["diagnostics_period_s"], self._publish_diagnostics)  # in every state

    # -- lifecycle ---------------------------------------------------------------------------------

    @_logged
    def on_configure(self, state) -> TransitionCallbackReturn:
        self._depth = DepthPairer(self.resolve_topic_name("depth"), self.resolve_topic_name("camera_info"))
        self._worker = InferenceWorker(self._handle_batch, self._params["max_pending_commands"],
                                       lambda: self._params["command_timeout_s"], self._on_worker_error)
        self._pipeline = FramePipeline(self._worker, lambda: PipelineSettings.from_parameters(self._params),
                                       self._reporter, self._depth if self._params["use_depth"] else None,
                                       self._image_topic)
        self._outputs = Outputs(self, self._pipeline, self._worker, self._stats,
                                lambda: self._params["publish_label_image"])
        self._state_services = [self.create_service(SetBool, "~/enable", self._on_enable),
                          self.create_service(Trigger, "~/clear", self._on_clear)]
        return SUCCESS

    @_logged
    def on_activate(self, state) -> TransitionCallbackReturn:
        self._model_state, self._model_error = "loading", ""
        self._worker.start(self._load_model)
        while not self._worker.wait_started(self._params["diagnostics_period_s"]) and self.context.ok():
            self._publish_diagnostics()  # this transition holds the executor: report "activating" meanwhile
        error = self._worker.startup_error
        if error is not None or not self._worker.wait_started(0):
            self._worker.stop(STOP_TIMEOUT_S)
            reason, text, cause = model.failure(error, self.get_fully_qualified_name())
            self._model_state, self._model_error = "failed", reason
            self._stats.error(reason)
            self.get_logger().error(with_traceback(text, cause, 3000) if cause is not None else text)
            return FAILURE
        self._create_inputs()
        self._model_state, self._active_since = "ready", time.monotonic()
        return super().on_activate(state)  # activates the lifecycle publishers

    @_logged
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate("the node was deactivated before an image answered this command")
        return super().on_deactivate(state)

    @_logged
    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._cleanup()
        return SUCCESS

    @_logged
    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    @_logged
    def on_error(self, state) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS  # -> unconfigured

    def _load_model(self) -> None:
        """Worker thread: load and warm up (model.load_model), then hand the predictor to the pipeline."""
        loaded = model.load_model(self._params)
        if loaded.fallback_warning():
            self.get_logger().warning(loaded.fallback_warning())
        self._pipeline.predictor, self._loaded = loaded.predictor, loaded
        self.get_logger().info(loaded.describe(model.model_name(self._params)))

    def _create_inputs(self) -> None:
        # Derived names follow image_transport / rqt_image_view: <image>/compressed, <image>_mouse_left.
        setting, compressed, mouse = self._params["image_reliability"], self._params["compressed_input"], "_mouse_left"
        self._image_sub = AdaptiveSubscription(self, CompressedImage if compressed else Image, self._image_topic + (
            "/compressed" if compressed else ""), self._on_image, 1, setting)
        self._sensor_subs, inputs = [self._image_sub], [f"images on {self._image_sub.describe()}"]
        if self._params["use_depth"]:
            self._sensor_subs += [AdaptiveSubscription(self, Image, "depth", self._on_depth, 5, setting),
                                  AdaptiveSubscription(self, CameraInfo, "camera_info", self._on_camera_info, 5, setting)]
            inputs.append(f"depth on {self._sensor_subs[1].describe()} with {self._sensor_subs[2].describe()} (16UC1 mm "
                          f"or 32FC1 m, registered to the image, stamps within {self._params['depth_slop_s']} s)")
        self._command_subs = [
            self.create_subscription(SegmentationCommand, "command", self._on_command, COMMAND_QOS),
            self.create_subscription(String, "command_text", self._on_command_text, COMMAND_QOS),
            self.create_subscription(Point, self._image_topic + mouse, lambda m: self._click(
                m.x, m.y, self._answer_header(None), "image_mouse_left"), COMMAND_QOS),
            self.create_subscription(PointStamped, "clicked_point", lambda m: self._click(
                m.point.x, m.point.y, m.header, "clicked_point"), COMMAND_QOS)]
        self._active_timers = [
            self.create_timer(self._params["qos_check_period_s"], self._check_qos),
            self.create_timer(0.05, lambda: any(s.recheck_requested for s in self._sensor_subs) and self._check_qos()),
            self.create_timer(0.5, self._watch_images)]
        name = self.resolve_topic_name
        inputs += [f"commands on {name('command')} [SegmentationCommand] and {name('command_text')} [String]",
                   f"clicks on {self._image_topic + mouse} [Point] and {name('clicked_point')} [PointStamped, pixels]"]
        outputs = ", ".join(name(topic) for topic in ("instances", "overlay", "markers")) + ", /diagnostics"
        self.get_logger().info("Active. Waiting for " + "; ".join(inputs) + f". Publishing {outputs}.")

    def _deactivate(self, reason: str, publishing: bool = True) -> None:
        """Stop taking input, answer waiting commands with ``reason`` (unless not ``publishing``: after Ctrl-C),
        stop the worker, drop tracking and its markers, free the model."""
        for subscription in self._sensor_subs:
            subscription.destroy()
        for entity in self._command_subs + self._active_timers:
            self.destroy_subscription(entity) if entity in self._command_subs else self.destroy_timer(entity)
        self._sensor_subs, self._command_subs, self._active_timers, self._image_sub = [], [], [], None
        if self._worker is None:
            return
        for job in self._worker.take_pending() if publishing else ():
            self._outputs.publish(self._pipeline.fail(job, reason, self._answer_header(job.header)))
        if not self._worker.stop(STOP_TIMEOUT_S):
            self.get_logger().warning(f"The inference thread did not stop within {STOP_TIMEOUT_S:.0f} s.")
        self._outputs.clear(self._answer_header(None)) if publishing else self._worker.clear_tracked()  # markers go
        device = self._loaded.info.device if self._loaded is not None else ""
        self._pipeline.predictor, self._loaded = None, None
        self._model_state = "failed" if self._model_state == "failed" else "unloaded"
        model.release_model(device)

    def _cleanup(self) -> None:
        if self._outputs is not None:
            self._outputs.destroy()
        for service in self._state_services:
            self.destroy_service(service)
        self._state_services, self._worker, self._pipeline, self._outputs = [], None, None, None

    def release(self, publishing: bool = True) -> None:
        """Leave whatever state the node is in: inputs, worker and model, outputs (shutdown; Ctrl-C: not publishing)."""
        self._deactivate("the node is shutting down", publishing)
        self._cleanup()
        self._engine_log.detach()

    def autostart(self) -> None:
        """Configure and activate once the executor spins (``--autostart``; the launch file uses events)."""
        def start() -> None:
            timer.cancel()
            self.destroy_timer(timer)
            if self.trigger_configure() == SUCCESS:
                self.trigger_activate()
        timer = self.create_timer(0.0, start)

    # -- parameters --------------------------------------------------------------------------------

    def _on_set_parameters(self, changes) -> SetParametersResult:
        proposed = dict(self._params)
        for change in changes:
            if change.name in parameters.BY_NAME:
                value = change.value
                array = isinstance(value, (list, tuple)) or type(value).__name__ == "array"
                proposed[change.name] = list(value) if array else value
        errors = parameters.validate_all(proposed)
        if errors:
            self.get_logger().warning(f"rejected parameter change: {'; '.join(errors)}")
            return SetParametersResult(successful=False, reason="; ".join(errors))
        self._params = proposed
        return SetParametersResult(successful=True)

    # -- inputs (executor thread: check, store, return) ----------------------------------------------

    def _on_image(self, msg) -> None:
        self._stats.image_received()
        self._last_header, topic, rejected = msg.header, self._image_sub.topic, ""
        try:
            conversions.check_image_message(msg, self._params["max_image_pixels"])
        except ConversionError as error:  # checked on arrival, whether or not a command waits
            rejected = str(error)
            self._reporter.problem(image_problem(error, topic))
        zero_stamp = msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0
        if zero_stamp or not msg.header.frame_id:
            self.get_logger().warning(
                f"Images on {topic} have " + ("a zero stamp" if zero_stamp else "no frame_id") + ": every output copies "
                "the image header, so results cannot be matched to a time or frame (and depth is paired by stamp). Fix "
                "the camera driver.", throttle_duration_sec=60.0)
        size = f"{msg.width}x{msg.height} {msg.encoding}" if isinstance(msg, Image) else msg.format
        self.get_logger().info(f"First image on {topic}: {size}, frame_id '{msg.header.frame_id}' "
                               f"({reliability_name(self._image_sub.reliability)} subscription).", once=True)
        if self._no_image_warned_at is not None:
            self._no_image_warned_at = None
            self.get_logger().info(f"Images arrive again on {topic}.")
        if self._outputs.enabled:
            self._worker.submit_frame(msg, rejected)

    def _on_depth(self, msg: Image) -> None:
        self._stats.count("depth_received")
        self._depth.add_depth(msg)
        self.get_logger().info(f"First depth image on {self._sensor_subs[1].topic}: {msg.width}x{msg.height} "
                               f"{msg.encoding}, frame_id '{msg.header.frame_id}'.", once=True)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._stats.count("camera_info_received")
        self._depth.add_camera_info(msg)

    def _on_command(self, msg: SegmentationCommand) -> None:
        self._command(*command_job(msg, self._params, self._worker.frame_seq))

    def _on_command_text(self, msg: String) -> None:
        self._command(*text_job(msg.data, self._answer_header(None), self._params, self._worker.frame_seq))

    def _click(self, x: float, y: float, header: Header, source: str) -> None:
        self._command(*click_job(x, y, header, source, self._params, self._worker.frame_seq))

    def _command(self, job: Job, error: str) -> None:
        """Refuse (``error``), or queue ``job`` for the next frame."""
        self._stats.count("commands_received")
        answer_header = self._answer_header(job.header)
        if error:
            self._reporter.problem(Problem("warning", f"reject:{error[:80]}", f"Rejected a {job.source} message: {error}",
                                           counter="commands_rejected"))
            return self._outputs.publish(self._pipeline.fail(job, f"invalid command: {error}", answer_header))
        if not self._outputs.enabled:
            return self._outputs.publish(self._pipeline.fail(
                job, "the node is disabled (call ~/enable with data: true)", answer_header))
        self.get_logger().info(f"{job.source}: {job.prompt[:80]!r} -> {job.request.task.value}" + (
            " (continuous)" if job.continuous else "") + "; answering on the next image.", throttle_duration_sec=1.0)
        dropped = self._worker.submit_job(job)
        if dropped is not None:
            limit = self._params["max_pending_commands"]
            self._stats.count("commands_dropped")
            self.get_logger().warning(f"Command queue full ({limit} waiting for an image): dropped the oldest; commands "
                                      "arrive faster than images.", throttle_duration_sec=5.0)
            self._outputs.publish(self._pipeline.fail(
                dropped, f"dropped: more than max_pending_commands={limit} commands were waiting for an image; a "
                "newer command replaced this one", self._answer_header(dropped.header)))

    def _answer_header(self, fallback: Header | None) -> Header:
        """Answers that no image belongs to carry the newest image's header, else the command's."""
        return self._last_header or fallback or Header()

    # -- services and timers -------------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._outputs.set_enabled(bool(request.data))
        if not request.data:
            for job in self._worker.take_pending():
                self._outputs.publish(self._pipeline.fail(
                    job, "the node was disabled before an image answered this command", self._answer_header(job.header)))
        response.success = True
        response.message = "enabled" if request.data else "disabled: images are ignored, commands are refused"
        self.get_logger().info(f"~/enable: {response.message}.")
        return response

    def _on_clear(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        tracked = self._outputs.clear(self._answer_header(None))
        response.success = True
        response.message = (f"stopped tracking {tracked.job.prompt!r}; instance ids start again at 1"
                            if tracked is not None else "nothing was tracked")
        self.get_logger().info(f"~/clear: {response.message}.")
        return response

    def _check_qos(self) -> None:
        for subscription in self._sensor_subs:
            change = subscription.check()
            if change:
                self.get_logger().info(change)

    def _watch_images(self) -> None:
        limit, now = self._params["no_image_warning_s"], time.monotonic()
        since = now - max(self._stats.last_image_time or 0.0, self._active_since)
        if since >= limit and (self._no_image_warned_at is None or now - self._no_image_warned_at >= limit):
            self._no_image_warned_at = now
            self.get_logger().warning(no_image_warning(self._image_sub, since))

    def _publish_diagnostics(self) -> None:
        worker, loaded, tracked = self._worker, self._loaded, self._worker and self._worker.tracked
        view = diagnostics.NodeView(
            self.get_fully_qualified_name(), self._state_machine.current_state[1], model.model_name(self._params),
            self._model_state, self._model_error, loaded.info.backend if loaded else self._params["backend"],
            loaded.info.device if loaded else self._params["device"], loaded.info.summary() if loaded else "",
            self._outputs is None or self._outputs.enabled, self._image_topic,
            reliability_name(self._image_sub.reliability) if self._image_sub else "", self._params["no_image_warning_s"],
            tracked.job.prompt if tracked else "", worker.pending_count() if worker else 0, bool(worker and worker.busy),
            worker.frames_skipped if worker else 0)
        status = diagnostics.node_status(view, self._stats.snapshot())
        # Diagnostics describe the node at this moment, not an image: stamped with the node's clock.
        self._diagnostics_pub.publish(diagnostics.diagnostic_array(self.get_clock().now().to_msg(), [status]))

    # -- worker thread -------------------------------------------------------------------------------

    def _on_worker_error(self, error: BaseException) -> None:
        text = f"internal error in the inference thread: {type(error).__name__}: {error}"
        self._reporter.problem(Problem("error", "worker", with_traceback(text, error), last_error=text))

    def _handle_batch(self, batch: Batch) -> None:
        for job in batch.expired:
            timeout = self._params["command_timeout_s"]
            self._stats.count("commands_expired")
            self.get_logger().warning(f"No image arrived on {self._image_topic} within {timeout} s after the {job.source} "
                                      f"{job.prompt[:60]!r}; answered with success=false.", throttle_duration_sec=5.0)
            self._outputs.publish(self._pipeline.fail(job, f"no image arrived on {self._image_topic} within "
                                                      f"command_timeout_s={timeout} s after the command",
                                                      self._answer_header(job.header)))
        if batch.frame is not None:
            frame = FrameInput(batch.frame.msg.header, batch.frame.msg, batch.frame.received, batch.frame.rejected)
            for outcome in self._pipeline.run(frame, batch.jobs, batch.tracked):
                self._outputs.publish(outcome)


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv if args is None else args)
    parser = argparse.ArgumentParser(prog=NODE_NAME, description="X-SAM perception node (lifecycle node).")
    parser.add_argument("--autostart", action="store_true",
                        help="configure and activate at start, as the launch file's autostart:=true does")
    options = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    try:
        node = PerceptionNode()
    except ValueError as error:
        print(f"[{NODE_NAME}] cannot start: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    if options.autostart:
        node.autostart()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release(publishing=False)  # the context is shut down: no more messages
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
