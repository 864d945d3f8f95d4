"""The replay loop: bag messages in, in bag order; the node's answers out, into an MCAP file. No ROS process.

``Replayer.feed`` takes the bag's messages one by one (``bag_io.BagRecord``) and does with each
what the node's callbacks and worker do with a live message, through the same code
(``pipeline.FramePipeline``, ``depth.DepthPairer``, ``pipeline.text_job`` / ``command_job``):

- depth and camera_info go to the depth pairer; commands become jobs for the **next** image
  (the node's rule: a command applies to the image that arrives after it), refused ones are
  answered at once;
- every image is run through the pipeline, in bag order (``realtime=False``, deterministic), or
  as the live node would have at the recorded rate (``realtime=True``: an image that arrives
  while the previous one is still being processed, in bag time, waits and is replaced by newer
  ones: newest wins, the replaced ones are skipped);
- an image is processed once the bag has been read ``depth_wait_s`` past it, so that its depth
  image, recorded after it, is paired (the node waits up to ``depth_wait_s`` for it the same way);
- each answer is written like the node publishes it, at the image's log time, with the image's
  header: ``instances`` (xsam_ros/InstanceMaskArray, errors included), ``overlay``, ``markers``
  (the node's two marker streams) and ``instance_points`` (``point_clouds``) for every result.

A message that could not be read is counted and reported, never the end of the replay.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from std_msgs.msg import Header

from .bag_io import BagRecord, McapOutput
from .conversions import ConversionError, check_image_message
from .depth import DepthPairer
from .interrupts import interrupts_deferred
from .markers import ONE_SHOT, TRACKED, MarkerStreams
from .pipeline import (
    FrameInput, FramePipeline, Outcome, PipelineSettings, command_job, image_problem, text_job,
)
from .point_clouds import instance_cloud_msg
from .reporting import Problem, Reporter
from .worker import Job, TrackingSlot

STRING = "std_msgs/msg/String"
SEGMENTATION_COMMAND = "xsam_ros/msg/SegmentationCommand"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclasses.dataclass(frozen=True)
class InputTopics:
    """Bag topics to read; ``depth`` and ``camera_info`` together or neither; ``command`` optional."""

    image: str
    depth: str | None = None
    camera_info: str | None = None
    command: str | None = None

    def __post_init__(self) -> None:
        if (self.depth is None) != (self.camera_info is None):
            raise ValueError("give the depth topic and the camera_info topic together (3D needs both), or neither")

    def all(self) -> list[str]:
        return [topic for topic in (self.image, self.depth, self.camera_info, self.command) if topic]


@dataclasses.dataclass(frozen=True)
class OutputTopics:
    """Where the answers go: the node's topic names under its namespace (README "Topics")."""

    instances: str
    overlay: str
    markers: str
    instance_points: str

    @staticmethod
    def for_node(namespace: str = "/xsam", node_name: str = "perception_node") -> OutputTopics:
        """``<namespace>/instances``, ``/overlay``, ``/markers`` and the node's private ``~/instance_points``."""
        base = "/" + namespace.strip("/") if namespace.strip("/") else ""
        return OutputTopics(f"{base}/instances", f"{base}/overlay", f"{base}/markers",
                            f"{base}/{node_name}/instance_points")


@dataclasses.dataclass
class ReplayStats:
    """What the replay did (the summary at the end).

    Attributes:
        frames_read: images read from the bag (readable or not).
        frames_processed: images run through the pipeline.
        frames_skipped: images replaced by newer ones (``realtime`` only).
        unreadable: messages that did not deserialise (any topic).
        commands: commands read or given (``--command``); ``commands_rejected``: refused ones.
        results / errors: InstanceMaskArray written with success true / false.
        instances: instances in the results.
        stage_seconds / stage_counts: per-stage time summed over results, and how many results had the stage.
        written: messages written per output topic.
    """

    frames_read: int = 0
    frames_processed: int = 0
    frames_skipped: int = 0
    unreadable: int = 0
    commands: int = 0
    commands_rejected: int = 0
    results: int = 0
    errors: int = 0
    instances: int = 0
    stage_seconds: Counter = dataclasses.field(default_factory=Counter)
    stage_counts: Counter = dataclasses.field(default_factory=Counter)

    def mean_stage_ms(self) -> dict[str, float]:
        return {stage: 1000.0 * seconds / self.stage_counts[stage] for stage, seconds in self.stage_seconds.items()}


@dataclasses.dataclass(eq=False)
class _PendingImage:
    record: BagRecord
    seq: int
    rejected: str


class Replayer:
    """See the module docstring.

    Args:
        predictor: a loaded ``XSamPredictor`` (``model.load_model``).
        output: the MCAP file the answers go to.
        topics: the bag topics read; ``outputs``: the topics written.
        values: the node's parameters (``parameters.defaults()`` updated with a parameter file).
        reporter: receives problems and notes (the CLI prints them).
        command: a natural command applied, continuously, from the first image on (None: only the
            bag's commands).
        realtime: newest frame wins at the recorded rate (see the module docstring).
    """

    def __init__(self, predictor, output: McapOutput, topics: InputTopics, values: Mapping[str, Any],
                 reporter: Reporter, command: str | None = None, realtime: bool = False,
                 outputs: OutputTopics | None = None) -> None:
        self._output = output
        self._topics = topics
        self._outputs = outputs or OutputTopics.for_node()
        self._values = dict(values)
        self._reporter = reporter
        self._realtime = realtime
        use_depth = topics.depth is not None and bool(self._values["use_depth"])
        self._values["use_depth"] = use_depth
        settings = PipelineSettings.from_parameters(self._values)
        if settings.depth is not None:  # never block: the replay reads ahead instead (see _ready)
            settings = dataclasses.replace(settings, depth=dataclasses.replace(settings.depth, wait_s=0.0))
        self._settings = settings
        self._lookahead_ns = int(self._values["depth_wait_s"] * 1e9) if use_depth else 0
        self._slot = TrackingSlot()
        self._depth = DepthPairer(topics.depth or "depth", topics.camera_info or "camera_info") if use_depth else None
        self._pipeline = FramePipeline(self._slot, lambda: self._settings, reporter, self._depth, topics.image,
                                       predictor)
        self._images: deque[_PendingImage] = deque()
        self._jobs: list[tuple[Job, int]] = []  # (job, log time of the command)
        self._seq = 0
        self._last_header = None
        self._busy_until_ns = 0  # realtime: bag time at which the simulated worker is free again
        self._streams = MarkerStreams()
        self._command = command
        self.stats = ReplayStats()

    # -- input ------------------------------------------------------------------------------------

    def feed(self, record: BagRecord) -> int:
        """One bag message; returns how many images were finished (processed or skipped) meanwhile."""
        done = self._process_ready(record.log_time_ns)
        topic = record.topic
        if topic == self._topics.image:
            self.stats.frames_read += 1
        if record.error:
            self.stats.unreadable += 1
            self._reporter.problem(Problem("error", f"unreadable:{topic}", f"Skipped a message on {topic}: "
                                           f"{record.error}", counter="messages_unreadable"))
            return done
        message = record.message
        if topic == self._topics.image:
            self._add_image(record)
        elif topic == self._topics.depth:
            self._depth.add_depth(message)
        elif topic == self._topics.camera_info:
            self._depth.add_camera_info(message)
        elif topic == self._topics.command:
            if record.msgtype == STRING:
                self._add_job(*text_job(message.data, self._answer_header(None), self._values, self._seq),
                              record.log_time_ns)
            else:
                self._add_job(*command_job(message, self._values, self._seq), record.log_time_ns)
        return done

    def finish(self) -> int:
        """The end of the bag: process what waits; commands no image followed are answered with an error."""
        done = self._process_ready(None)
        for job, log_time in self._jobs:
            self._write_outcome(self._pipeline.fail(job, f"the bag ends before an image on {self._topics.image} "
                                                    "arrived after this command", self._answer_header(job)), log_time)
        self._jobs = []
        return done

    def _add_image(self, record: BagRecord) -> None:
        message = record.message
        self._last_header = message.header
        rejected = ""
        try:
            check_image_message(message, self._values["max_image_pixels"])  # the node's arrival checks
        except ConversionError as error:
            rejected = str(error)
            self._reporter.problem(image_problem(error, self._topics.image))
        if self._seq == 0 and self._command is not None:  # --command: continuous from the first image on
            job, error = text_job(self._command, message.header, self._values, 0)
            job.continuous = True
            self._add_job(job, error, record.log_time_ns)
        self._seq += 1
        self._images.append(_PendingImage(record, self._seq, rejected))

    def _add_job(self, job: Job, error: str, log_time_ns: int) -> None:
        self.stats.commands += 1
        if error:
            self.stats.commands_rejected += 1
            self._reporter.problem(Problem("warning", f"reject:{error[:80]}", f"Rejected a {job.source} message: "
                                           f"{error}", counter="commands_rejected"))
            self._write_outcome(self._pipeline.fail(job, f"invalid command: {error}", self._answer_header(job)),
                                log_time_ns)
            return
        self._jobs.append((job, log_time_ns))
        limit = self._values["max_pending_commands"]
        if len(self._jobs) > limit:  # the node's bounded queue: the oldest goes
            dropped, log_time = self._jobs.pop(0)
            self._write_outcome(self._pipeline.fail(
                dropped, f"dropped: more than max_pending_commands={limit} commands were waiting for an image; a "
                "newer command replaced this one", self._answer_header(dropped)), log_time)

    def _answer_header(self, job: Job | None):
        """Answers that no image belongs to carry the newest image's header, else the command's (as the node's)."""
        return self._last_header or (job.header if job is not None else None) or Header()

    # -- processing -------------------------------------------------------------------------------

    def _ready(self, now_ns: int | None) -> bool:
        """The oldest waiting image can be processed: the bag has been read ``depth_wait_s`` past it
        (its depth is in) and, in realtime mode, past the moment the simulated worker is free (every
        image that could replace it is known); always at the end of the bag (``now_ns`` None)."""
        if now_ns is None:
            return True
        arrived = self._images[0].record.log_time_ns
        return now_ns - arrived >= self._lookahead_ns and (not self._realtime or now_ns >= self._busy_until_ns)

    def _process_ready(self, now_ns: int | None) -> int:
        """Process the images that are ready (all of them at the end of the bag); returns how many."""
        done = 0
        while self._images and self._ready(now_ns):
            pending = self._images.popleft()
            done += 1
            if self._realtime and self._replaced(pending):
                self.stats.frames_skipped += 1
                continue
            started = time.perf_counter()
            self._process(pending)
            if self._realtime:  # the worker starts when the image is there and it is free, for as long as it took
                start = max(pending.record.log_time_ns, self._busy_until_ns)
                self._busy_until_ns = start + int((time.perf_counter() - started) * 1e9)
        return done

    def _replaced(self, pending: _PendingImage) -> bool:
        """Realtime: a newer image arrived before the worker got free, so the worker takes that one (newest wins)."""
        return bool(self._images) and self._images[0].record.log_time_ns <= self._busy_until_ns

    def _process(self, pending: _PendingImage) -> None:
        message = pending.record.message
        jobs = [job for job, _ in self._jobs if job.after_seq < pending.seq]
        self._jobs = [(job, log_time) for job, log_time in self._jobs if job.after_seq >= pending.seq]
        tracked = self._slot.tracked
        if not jobs and tracked is None:
            return  # nothing to answer on this image (the node's worker does not take it either)
        self.stats.frames_processed += 1
        frame = FrameInput(message.header, message, time.monotonic(), pending.rejected)
        for outcome in self._pipeline.run(frame, jobs, tracked):
            self._write_outcome(outcome, pending.record.log_time_ns)

    # -- output -----------------------------------------------------------------------------------

    def _write_outcome(self, outcome: Outcome, log_time_ns: int) -> None:
        """Write one answer as the node publishes it (``outputs.Outputs.publish``), whole: Ctrl-C /
        SIGTERM during the writes is acted on after them (``interrupts.interrupts_deferred``)."""
        with interrupts_deferred():
            self._write_answer(outcome, log_time_ns)

    def _write_answer(self, outcome: Outcome, log_time_ns: int) -> None:
        topics, write = self._outputs, self._output.write
        if not outcome.success:
            deletions = self._streams.stop_tracked(outcome.header) if outcome.stopped is not None else None
            if deletions is not None:  # a failed continuous command stopped the tracked one: its markers go
                write(topics.markers, deletions, log_time_ns)
            write(topics.instances, outcome.to_msg(), log_time_ns)
            self.stats.errors += 1
            return
        started = time.perf_counter()
        ids = [instance.instance_id for instance in outcome.instances]
        cloud = instance_cloud_msg(outcome.header, ids, outcome.geometries)
        outcome.seconds["point_cloud"] = time.perf_counter() - started
        message = outcome.to_msg(self._values["publish_label_image"])
        write(topics.instances, message, log_time_ns)
        write(topics.overlay, outcome.overlay_msg(), log_time_ns)
        tracked = outcome.tracked
        if tracked is not None and not outcome.tracking:
            self._streams.start_tracked()  # a new tracked command: clear the previous one's markers
        write(topics.markers, self._streams.for_result(message, ONE_SHOT if tracked is None else TRACKED), log_time_ns)
        write(topics.instance_points, cloud, log_time_ns)
        self.stats.results += 1
        self.stats.instances += len(outcome.instances)
        for stage, seconds in outcome.seconds.items():
            self.stats.stage_seconds[stage] += seconds
            self.stats.stage_counts[stage] += 1

