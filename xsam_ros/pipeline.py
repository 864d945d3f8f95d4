"""The frame pipeline: one image, the commands waiting for it and the tracked command in; answers out.

No ROS node and no threads: the perception node's worker thread calls ``FramePipeline.run`` for
each frame it takes, and a bag-replay tool can call it on every frame in bag order. Input is
plain data (``FrameInput``: a sensor_msgs Image / CompressedImage or an (H, W, 3) uint8 RGB array,
with the image's std_msgs/Header); output is one ``Outcome`` per answer, yielded as soon as it
is ready so that the caller publishes the first command's answer before the next one runs.

Rules (README "Topics", "How commands are answered", "Thresholds"):

- the image is converted once (``conversions``; a frame refused by the arrival checks, or found
  bad only by decoding, answers every waiting command with ``image rejected: ...``) and encoded
  once (``predictor.set_image``) for every command that waits for it;
- thresholds follow the request contract: a command's own threshold, else the node's parameter
  (``PipelineSettings.thresholds``, read for every frame, so a runtime change applies to the next
  tracked frame), else the model's default;
- instance ids: 1..n by score for a one-shot command; for a continuous command an
  ``InstanceTracker`` (``tracking_min_iou``, ``tracking_max_missed``) keeps them stable;
- tracking: a continuous command runs the language model once and becomes the tracked command
  (``worker.TrackingSlot``), replacing the previous one; every later frame reuses its
  condition (``predictor.decode``). A continuous command that fails, for any reason, stops the
  tracked command that arrived before it (``fail``), as a successful one would have replaced it;
- an engine error answers the command with its text: a ValueError says what to fix in the
  request; a ``TritonServerError`` (backend triton: the server is unreachable or refused) names
  the server (logged once per 5 s per kind, no traceback); anything else is logged with its
  traceback;
- 3D per instance from the frame's registered depth (``depth.DepthPairer``,
  ``depth.instance_geometry``), when a depth source is given.

Problems go to a ``reporting.Reporter`` (the node logs and counts them; tests and replay read them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage

from xsam_engine.commands import is_tracking_command
from xsam_engine.requests import MAX_TEXT_LENGTH
from xsam_engine.triton.errors import TritonServerError

from . import conversions
from .conversions import ConversionError, ThresholdOverrides
from .depth import DepthMatch, DepthPairer, DepthSettings, RegisteredDepth, instance_geometry
from .reporting import Problem, Reporter, with_traceback
from .worker import Job, TrackedCommand, TrackingSlot

REPLACED_NOTE = ("; the previously tracked command {prompt!r} was stopped (a new continuous command replaces it, "
                 "also when it fails)")


@dataclass(frozen=True)
class PipelineSettings:
    """The node parameters the pipeline reads, once per frame (names as in xsam_ros/parameters.py).

    ``depth`` is None when ``use_depth`` is false (no 3D).
    """

    max_instances: int = 20
    tracking_min_iou: float = 0.3
    tracking_max_missed: int = 15
    thresholds: ThresholdOverrides = ThresholdOverrides()
    max_image_pixels: int | None = None
    depth: DepthSettings | None = DepthSettings()

    @staticmethod
    def from_parameters(values: Mapping[str, Any]) -> PipelineSettings:
        depth = DepthSettings(values["depth_slop_s"], values["depth_wait_s"], values["min_depth_m"],
                              values["max_depth_m"], values["max_image_pixels"]) if values["use_depth"] else None
        return PipelineSettings(
            values["max_instances"], values["tracking_min_iou"], values["tracking_max_missed"],
            ThresholdOverrides.from_values(values["score_threshold"], values["mask_threshold"],
                                           values["overlap_threshold"]),
            values["max_image_pixels"], depth)


@dataclass(eq=False)
class FrameInput:
    """One camera frame.

    Attributes:
        header: the image's std_msgs/Header; every answer on this frame carries it.
        image: sensor_msgs/Image, sensor_msgs/CompressedImage, or (H, W, 3) uint8 RGB.
        received: time.monotonic() of arrival (the "queue" stage is measured from it).
        rejected: why the arrival checks refused the frame ("" = not refused).
    """

    header: Any
    image: Any
    received: float = field(default_factory=time.monotonic)
    rejected: str = ""


@dataclass(eq=False)
class Outcome:
    """One answer to publish: a result (``error`` == "") or an error, for ``job``.

    Attributes:
        job: the command answered (for a tracked frame: the tracked command's job).
        header: the header of the image it was computed from (or of the newest image / the
            command for answers that no image belongs to).
        image_size: (height, width); (0, 0) when no image belongs to it.
        error: why there is no result ("" = success).
        result: the engine's SegmentationResult.
        instances: the selected instances (at most max_instances, highest score first) with ids set.
        geometries: ObjectGeometry or None per instance.
        tracked: the tracked command this answer belongs to (a continuous command's first answer
            or a tracked frame); None for one-shot commands.
        tracking: True for a tracked frame (condition reused, no language model run).
        stopped: the tracked command this failed continuous command stopped (its markers go).
        seconds: per-stage timings in seconds (engine stages, queue, image_conversion, depth_3d).
        rgb: the converted image (for the overlay).
    """

    job: Job
    header: Any
    image_size: tuple[int, int] = (0, 0)
    error: str = ""
    result: Any = None
    instances: list = field(default_factory=list)
    geometries: list = field(default_factory=list)
    tracked: TrackedCommand | None = None
    tracking: bool = False
    stopped: TrackedCommand | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    rgb: np.ndarray | None = None

    @property
    def success(self) -> bool:
        return not self.error

    def to_msg(self, publish_label_image: bool = False):
        """The xsam_ros/InstanceMaskArray; adds the "ros_conversion" stage to ``seconds``."""
        job = self.job
        if self.error:
            task = job.request.task if job.request is not None else None
            return conversions.error_result(self.header, self.error, request_id=job.request_id, prompt=job.prompt,
                                            task=task, image_size=self.image_size)
        started = time.perf_counter()
        message = conversions.result_to_msg(
            self.result, self.header, self.instances, [instance.instance_id for instance in self.instances],
            self.geometries, job.request_id, job.prompt, self.tracking, publish_label_image, {})
        self.seconds["ros_conversion"] = time.perf_counter() - started
        message.timings = conversions.timings_msg(self.seconds)
        return message

    def overlay_msg(self):
        """sensor_msgs/Image rgb8: the image with the instances drawn and the command as caption."""
        from xsam_engine.visualization import draw_overlay

        caption = self.job.prompt + (" [tracking]" if self.tracking else "")
        return conversions.rgb_to_image_msg(draw_overlay(self.rgb, self.instances, caption=caption),
                                            conversions.copy_header(self.header))


@dataclass(eq=False)
class _Frame:
    predictor: Any
    header: Any
    rgb: np.ndarray
    settings: PipelineSettings
    seconds: dict[str, float]
    depth_match: DepthMatch | None
    depth_checked: bool = False  # the registered depth is looked up once per frame, however many answers
    registered: RegisteredDepth | None = None


class FramePipeline:
    """See the module docstring.

    Args:
        slot: holds the tracked command (shared with whoever clears it, e.g. the node's ~/clear).
        settings: returns the current settings; called once per frame.
        reporter: receives problems, counts ("llm_runs") and notes.
        depth: the depth source (None: no 3D whatever the settings say).
        image_topic: names the image input in problem texts.
        predictor: an ``XSamPredictor``; may be set later (``predictor`` attribute), e.g. when a
            lifecycle node activates. ``fail`` works without one.
    """

    def __init__(self, slot: TrackingSlot, settings: Callable[[], PipelineSettings], reporter: Reporter,
                 depth: DepthPairer | None = None, image_topic: str = "image", predictor: Any = None) -> None:
        self.predictor, self.image_topic = predictor, image_topic
        self._slot, self._settings, self._report, self._depth = slot, settings, reporter, depth

    # -- answers without a frame ----------------------------------------------------------------

    def fail(self, job: Job, error: str, header: Any, image_size: tuple[int, int] = (0, 0)) -> Outcome:
        """The success=false answer to ``job``; a continuous job stops the older tracked command."""
        stopped = self.stop_older_tracking(job) if job.continuous else None
        if stopped is not None:
            error += REPLACED_NOTE.format(prompt=stopped.job.prompt[:80])
        return Outcome(job=job, header=header, image_size=image_size, error=error, stopped=stopped)

    def stop_older_tracking(self, job: Job) -> TrackedCommand | None:
        """Stop the tracked command if ``job`` (continuous, failed) arrived after it; returns it, or None."""
        tracked = self._slot.tracked
        if tracked is None or tracked.job is job or tracked.job.received > job.received:
            return None
        return tracked if self._slot.clear_if(tracked) else None

    # -- one frame ------------------------------------------------------------------------------

    def run(self, frame: FrameInput, jobs: Sequence[Job], tracked: TrackedCommand | None) -> Iterator[Outcome]:
        """Answer every job, then the tracked command (unless a continuous job replaced it), on ``frame``."""
        predictor = self.predictor  # this frame keeps it even if the node drops it meanwhile (deactivation)
        if predictor is None:
            raise RuntimeError("FramePipeline.run needs a predictor (the model is not loaded)")
        settings = self._settings()
        header = frame.header
        waiting = list(jobs) + ([tracked.job] if tracked is not None else [])
        depth_match = None
        if self._depth is not None and settings.depth is not None:
            # Pair now: a slow inference must not let the buffer drop this frame's depth image.
            depth_match = self._depth.match(header, settings.depth.slop_s)
        seconds = {"queue": max(0.0, time.monotonic() - frame.received)}
        started = time.perf_counter()
        try:
            rgb = self._to_rgb(frame, settings)
        except ConversionError as error:
            if not frame.rejected:  # found only by decoding (e.g. a corrupt JPEG body); arrival checks reported theirs
                self._report.problem(image_problem(error, self.image_topic))
            for job in waiting:
                yield self.fail(job, f"image rejected: {error}", header)
            return
        seconds["image_conversion"] = time.perf_counter() - started
        size = (rgb.shape[0], rgb.shape[1])
        try:
            predictor.set_image(rgb)
        except Exception as error:
            text = f"the model could not encode the {size[1]}x{size[0]} image: {type(error).__name__}: {error}"
            self._report.problem(Problem("error", "set_image", text, last_error=text))
            for job in waiting:
                yield self.fail(job, text, header, size)
            return
        context = _Frame(predictor, header, rgb, settings, seconds, depth_match)
        replaced = False
        for job in jobs:
            replaced |= job.continuous
            yield self._answer(context, job)
        if tracked is not None and not replaced and self._slot.still_tracked(tracked):
            outcome = self._track(context, tracked)
            if outcome is not None:
                yield outcome
        self._report.frame_processed(time.perf_counter() - started)  # publishing between the yields included

    def _to_rgb(self, frame: FrameInput, settings: PipelineSettings) -> np.ndarray:
        if frame.rejected:  # refused on arrival (reported there)
            raise ConversionError(frame.rejected)
        image = frame.image
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
                raise ConversionError(f"an RGB frame must be a non-empty (H, W, 3) uint8 array, got {image.dtype} "
                                      f"{image.shape}")
            return image
        if isinstance(image, CompressedImage):
            return conversions.compressed_to_rgb(image, settings.max_image_pixels)
        return conversions.image_to_rgb(image, settings.max_image_pixels)

    def _answer(self, context: _Frame, job: Job) -> Outcome:
        try:
            result = context.predictor.segment(job.request)
        except Exception as error:
            return self._engine_error(context, job, error)
        self._report.count("llm_runs")
        settings = context.settings
        instances = result.instances[: settings.max_instances]
        if not job.continuous:
            instances = [dataclasses.replace(instance, instance_id=index + 1) for index, instance in enumerate(instances)]
            return self._result(context, job, result, instances)
        if result.condition is None:
            return self.fail(job, "the model produced no condition to track", context.header)
        from xsam_engine.tracking import InstanceTracker

        tracked = TrackedCommand(job=job, condition=result.condition,
                                 tracker=InstanceTracker(settings.tracking_min_iou, settings.tracking_max_missed))
        instances = tracked.tracker.update(instances)
        self._slot.set_tracked(tracked)
        self._report.note(f"Tracking {job.prompt[:80]!r}: the language model ran once; following frames reuse its "
                          "condition.")
        return self._result(context, job, result, instances, tracked)

    def _track(self, context: _Frame, tracked: TrackedCommand) -> Outcome | None:
        """The tracked command on a new frame; None when it was cleared or replaced meanwhile."""
        job = tracked.job
        # The command's own thresholds, else the node's parameters as they are now, else the model's.
        thresholds = (job.thresholds or ThresholdOverrides()).over(context.settings.thresholds)
        try:
            result = context.predictor.decode(tracked.condition, **thresholds.as_request_fields())
        except Exception as error:
            return self._engine_error(context, job, error)
        instances = tracked.tracker.update(result.instances[: context.settings.max_instances])
        tracked.frames += 1
        if not self._slot.still_tracked(tracked):
            return None
        return self._result(context, job, result, instances, tracked, tracking=True)

    def _result(self, context: _Frame, job: Job, result, instances: list, tracked: TrackedCommand | None = None,
                tracking: bool = False) -> Outcome:
        started = time.perf_counter()
        geometries = self._geometries(context, instances)
        seconds = {**result.timings, **context.seconds}
        if context.settings.depth is not None and self._depth is not None:
            seconds["depth_3d"] = time.perf_counter() - started
        return Outcome(job=job, header=context.header, image_size=result.image_size, result=result,
                       instances=instances, geometries=geometries, tracked=tracked, tracking=tracking,
                       seconds=seconds, rgb=context.rgb)

    def _geometries(self, context: _Frame, instances: list) -> list:
        settings = context.settings.depth
        if settings is None or self._depth is None or not instances:
            return [None] * len(instances)
        if not context.depth_checked:
            context.depth_checked = True
            context.registered, problems = self._depth.registered(
                context.header, context.rgb.shape[:2], settings, context.depth_match)
            for problem in problems:
                self._report.problem(problem)
        if context.registered is None:
            return [None] * len(instances)
        geometries = []
        for instance in instances:
            geometry, problem = instance_geometry(instance, context.registered, settings)
            if problem is not None:
                self._report.problem(problem)
            geometries.append(geometry)
        return geometries

    def _engine_error(self, context: _Frame, job: Job, error: Exception) -> Outcome:
        if isinstance(error, ValueError):
            text = str(error)  # the engine's messages say what to fix
            self._report.error(text)
        elif isinstance(error, TritonServerError):  # the server, not a bug here: its message names it, no traceback
            text = str(error)
            self._report.problem(Problem("error", f"triton:{type(error).__name__}", "Inference failed: " + text,
                                         last_error=text))
        else:
            text = f"{type(error).__name__}: {error}"
            self._report.problem(Problem("error", f"engine:{type(error).__name__}",
                                         with_traceback("Inference failed: " + text, error), last_error=text))
        return self.fail(job, text, context.header, (context.rgb.shape[0], context.rgb.shape[1]))


# -- commands -> jobs (the node's callbacks, and a replay tool reading commands from a bag) ---------


def _job(source: str, header: Any, request_id: str, prompt: str, fallback: str, continuous: bool, build,
         values: Mapping[str, Any], after_seq: int, thresholds: ThresholdOverrides | None = None) -> tuple[Job, str]:
    """(the job, "" or why its command is invalid); ``build(vocabulary, stuff, thresholds)`` makes the request.

    ``values``: the node parameters (default_vocabulary, stuff_vocabulary, thresholds); ``after_seq``:
    the newest frame's sequence number (only a later frame answers the job). A refused job keeps
    ``request`` None and its prompt is ``prompt or fallback``.
    """
    job = Job(request=None, request_id=request_id, prompt=prompt or fallback, continuous=continuous, source=source,
              received=time.monotonic(), after_seq=after_seq, header=header, thresholds=thresholds)
    try:
        job.request = build(values["default_vocabulary"], values["stuff_vocabulary"],
                            PipelineSettings.from_parameters(values).thresholds)
    except ConversionError as error:
        return job, str(error)
    job.prompt = prompt or job.request.describe()
    return job, ""


def command_job(msg, values: Mapping[str, Any], after_seq: int) -> tuple[Job, str]:
    """A xsam_ros/SegmentationCommand (its own thresholds override the node's)."""
    return _job("command", msg.header, msg.request_id, msg.text[:MAX_TEXT_LENGTH], "(SegmentationCommand)",
                bool(msg.continuous), lambda *args: conversions.command_to_request(msg, *args), values, after_seq,
                ThresholdOverrides.from_values(msg.score_threshold, msg.mask_threshold, msg.overlap_threshold))


def text_job(text: str, header: Any, values: Mapping[str, Any], after_seq: int) -> tuple[Job, str]:
    """A natural-language command (std_msgs/String); "track ..." / "follow ..." are continuous."""
    return _job("command_text", header, "", text.strip(), text, is_tracking_command(text),
                lambda *args: conversions.text_to_request(text, *args), values, after_seq)


def click_job(x: float, y: float, header: Any, source: str, values: Mapping[str, Any], after_seq: int
              ) -> tuple[Job, str]:
    """A click in image pixels (x = column, y = row): an interactive point prompt, request_id "click"."""
    return _job(source, header, "click", "", f"click ({x}, {y})", False,
                lambda vocabulary, stuff, thresholds: conversions.click_to_request(x, y, thresholds), values, after_seq)


def image_problem(error: ConversionError, topic: str) -> Problem:
    """The problem of an image on ``topic`` refused on arrival or when decoding (logged per distinct error)."""
    return Problem("error", f"image:{str(error)[:60]}", f"Rejected an image on {topic}: {error}", counter="frames_rejected",
                   last_error=f"image rejected: {error}")
