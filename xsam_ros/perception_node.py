"""The X-SAM perception node: a managed (lifecycle) node that wires ROS to the ROS-free frame pipeline.

Started by ``ros2 launch xsam_ros perception.launch.py`` (configured and activated: ``autostart:=true``),
or ``ros2 run xsam_ros perception_node`` / ``python -m xsam_ros.perception_node`` (unconfigured unless
``--autostart``). Parameters are declared in ``__init__`` so that ``ros2 param`` works in every state;
``on_configure`` creates publishers, services and the pipeline; ``on_activate`` loads the model on the
worker thread and subscribes; a model that cannot load returns ERROR with the reason (logged and in
/diagnostics), and ``on_error`` releases everything so the node is unconfigured again (fix the model,
then configure and activate); ``on_deactivate`` answers waiting commands, stops the worker and frees
the model. README "Lifecycle", "Architecture".

With ``backend`` triton the image stages run on a Triton server: one that is unreachable or cannot
serve the model at activation fails it like a model that cannot load (unless ``triton_fallback``);
once active, the node stays active whatever the server does: commands fail with an error naming
the server while it is down, ``triton_watch.ServerWatch`` keeps /diagnostics current (ERROR, or
WARN on the fallback), and the stages reconnect by themselves when it is back. README "Fleet / Triton".
"""

from __future__ import annotations

import argparse
import sys

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.utilities import remove_ros_args
from std_msgs.msg import Header
from std_srvs.srv import SetBool, Trigger

from . import diagnostics, model, parameters
from .depth import DepthPairer
from .inputs import Inputs
from .outputs import Outputs
from .pipeline import FrameInput, FramePipeline, PipelineSettings
from .qos import DIAGNOSTICS_QOS
from .reporting import EngineLogHandler, NodeReporter, Problem, with_traceback
from .triton_watch import ServerStatus, ServerWatch
from .worker import Batch, InferenceWorker, Job

NODE_NAME = "perception_node"
SUCCESS, ERROR = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.ERROR
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
        self._server_watch: ServerWatch | None = None  # backend triton while active
        self._worker = self._pipeline = self._outputs = self._inputs = None
        self._state_services: list = []
        self._image_topic = self.resolve_topic_name("image")
        self._diagnostics_pub = self.create_publisher(diagnostics.DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_timer(self._params["diagnostics_period_s"], self._publish_diagnostics)  # in every state

    # -- lifecycle ---------------------------------------------------------------------------------

    @_logged
    def on_configure(self, state) -> TransitionCallbackReturn:
        self._depth = DepthPairer(self.resolve_topic_name("depth"), self.resolve_topic_name("camera_info"))
        self._worker = InferenceWorker(self._handle_batch, self._params["max_pending_commands"],
                                       lambda: self._params["command_timeout_s"], self._on_worker_error)
        self._pipeline = FramePipeline(self._worker.slot, lambda: PipelineSettings.from_parameters(self._params),
                                       self._reporter, self._depth if self._params["use_depth"] else None,
                                       self._image_topic)
        self._outputs = Outputs(self, self._pipeline, self._worker.slot, self._stats,
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
            return ERROR  # -> on_error -> unconfigured
        self._inputs = Inputs(self, lambda: self._params, self._stats, self._reporter,
                              self._depth if self._params["use_depth"] else None, self._on_frame, self._command,
                              lambda: self._worker.frame_seq, self._answer_header)
        self._model_state = "ready"
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
        """After a transition returned ERROR (a model that cannot load): release inputs, worker, model and
        outputs, keep the reason for /diagnostics; SUCCESS takes the node to unconfigured."""
        self._deactivate("the node's activation failed: " + (self._model_error or "see its log"))
        self._cleanup()
        return SUCCESS

    def _load_model(self) -> None:
        """Worker thread: load and warm up (model.load_model), then hand the predictor to the pipeline."""
        loaded = model.load_model(self._params)
        if loaded.fallback_warning():
            self.get_logger().warning(loaded.fallback_warning())
        if loaded.info.backend == "triton":  # /diagnostics follows the server also while no command runs
            self._server_watch = ServerWatch(loaded.predictor.stages, loaded.info.local_backend,
                                             self._params["diagnostics_period_s"], self._on_server_change).start()
        self._pipeline.predictor, self._loaded = loaded.predictor, loaded
        self.get_logger().info(loaded.describe(model.model_name(self._params)))

    def _deactivate(self, reason: str, publishing: bool = True) -> None:
        """Stop taking input, answer waiting commands with ``reason`` (unless not ``publishing``: after Ctrl-C),
        stop the worker, drop tracking and its markers, free the model."""
        if self._inputs is not None:
            self._inputs.destroy()
            self._inputs = None
        if self._worker is None:
            return
        for job in self._worker.take_pending() if publishing else ():
            self._fail(job, reason)
        if not self._worker.stop(STOP_TIMEOUT_S):
            self.get_logger().warning(f"The inference thread did not stop within {STOP_TIMEOUT_S:.0f} s.")
        self._outputs.clear(self._answer_header(None)) if publishing else self._worker.slot.clear_tracked()  # markers go
        if self._server_watch is not None:
            self._server_watch.stop(self._params["triton_timeout_s"] + 1.0)
            self._server_watch = None
        device = self._loaded.info.device if self._loaded is not None else ""
        if self._loaded is not None:
            model.close_stages(self._loaded.predictor)
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
        values, errors = parameters.apply_changes(self._params, changes)
        if errors:
            self.get_logger().warning(f"rejected parameter change: {'; '.join(errors)}")
            return SetParametersResult(successful=False, reason="; ".join(errors))
        self._params = values
        return SetParametersResult(successful=True)

    # -- inputs (executor thread: check, store, return) ----------------------------------------------

    def _on_frame(self, msg, rejected: str) -> None:
        self._last_header = msg.header
        if self._outputs.enabled:
            self._worker.submit_frame(msg, rejected)

    def _command(self, job: Job, error: str) -> None:
        """Refuse (``error``), or queue ``job`` for the next frame."""
        self._stats.count("commands_received")
        if error:
            self._reporter.problem(Problem("warning", f"reject:{error[:80]}", f"Rejected a {job.source} message: {error}",
                                           counter="commands_rejected"))
            return self._fail(job, f"invalid command: {error}")
        if not self._outputs.enabled:
            return self._fail(job, "the node is disabled (call ~/enable with data: true)")
        self.get_logger().info(f"{job.source}: {job.prompt[:80]!r} -> {job.request.task.value}" + (
            " (continuous)" if job.continuous else "") + "; answering on the next image.", throttle_duration_sec=1.0)
        dropped = self._worker.submit_job(job)
        if dropped is not None:
            limit = self._params["max_pending_commands"]
            self._stats.count("commands_dropped")
            self.get_logger().warning(f"Command queue full ({limit} waiting for an image): dropped the oldest "
                                      f"({dropped.prompt[:60]!r}); commands arrive faster than images.",
                                      throttle_duration_sec=5.0)
            self._fail(dropped, f"dropped: more than max_pending_commands={limit} commands were waiting for an image; "
                       "a newer command replaced this one")

    def _answer_header(self, fallback: Header | None) -> Header:
        """Answers that no image belongs to carry the newest image's header, else the command's."""
        return self._last_header or fallback or Header()

    def _fail(self, job: Job, error: str) -> None:
        """Publish the success=false answer to ``job`` (no image belongs to it)."""
        self._outputs.publish(self._pipeline.fail(job, error, self._answer_header(job.header)))

    # -- services and timers -------------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._outputs.set_enabled(bool(request.data))
        if not request.data:
            for job in self._worker.take_pending():
                self._fail(job, "the node was disabled before an image answered this command")
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

    def _on_server_change(self, status: ServerStatus) -> None:
        """Watch thread: one log line when the Triton server goes away and one when it is back."""
        if status.healthy:
            self.get_logger().info(f"Triton server {status.url} is ready again; the image stages run there.")
        else:
            self._stats.error(status.error)
            self.get_logger().error(f"{status.describe()}: {status.error}")

    def _publish_diagnostics(self) -> None:
        watch = self._server_watch
        view = diagnostics.node_view(
            self.get_fully_qualified_name(), self._state_machine.current_state[1], self._params,
            model.model_name(self._params), self._model_state, self._model_error, self._loaded,
            self._outputs is None or self._outputs.enabled, self._inputs and self._inputs.image, self._worker,
            watch.status() if watch is not None else None)
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
            self._fail(job, f"no image arrived on {self._image_topic} within command_timeout_s={timeout} s after the "
                       "command")
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
