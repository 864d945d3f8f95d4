"""The node's input topics while it is active: camera, depth, camera_info, commands and clicks.

``Inputs`` creates the subscriptions when the lifecycle node activates and destroys them when it
deactivates. Its callbacks run on the executor thread and only check and hand over (never
wait): an image's header facts are checked on arrival (``conversions.check_image_message``;
a refused frame is reported at once and still answers the commands waiting for it) and the
image goes to ``on_frame``; depth and camera_info go into the ``depth.DepthPairer``; commands
and clicks become jobs (``pipeline.command_job`` / ``text_job`` / ``click_job``) for
``on_command``. The image, depth and camera_info subscriptions are ``qos.AdaptiveSubscription``s,
matched to their publishers' reliability (re-checked every ``qos_check_period_s`` and at once
on an incompatible publisher); without images for ``no_image_warning_s`` it warns with the
topic's publishers and what to check.

Topic names are the node's relative names (remapped by the launch file); the derived names
follow image_transport / rqt_image_view: ``<image>/compressed``, ``<image>_mouse_left``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from xsam_ros.msg import SegmentationCommand

from . import conversions
from .conversions import ConversionError
from .depth import DepthPairer
from .pipeline import click_job, command_job, image_problem, text_job
from .qos import COMMAND_QOS, AdaptiveSubscription, no_image_warning


class Inputs:
    """See the module docstring.

    Args:
        node: the rclpy node (subscriptions, timers, logger).
        values: returns the node parameters (read at each use: runtime changes apply).
        stats / reporter: ``diagnostics.NodeStats`` and ``reporting.NodeReporter``.
        depth: where depth images and camera_info go (None: not subscribed).
        on_frame: ``on_frame(msg, rejected)`` for every image ("" or why the arrival checks refused it).
        on_command: ``on_command(job, error)`` for every command and click ("" or why it is invalid).
        frame_seq: the newest frame's sequence number (a job is answered by a later frame).
        answer_header: ``answer_header(header)``: the header for a command without one (text, rqt clicks).
    """

    def __init__(self, node, values: Callable[[], dict], stats, reporter, depth: DepthPairer | None,
                 on_frame: Callable, on_command: Callable, frame_seq: Callable[[], int],
                 answer_header: Callable) -> None:
        self._node, self._values, self._stats, self._reporter, self._depth = node, values, stats, reporter, depth
        self._on_frame = on_frame
        self._logger = node.get_logger()
        self._since = time.monotonic()
        self._warned_at: float | None = None
        # "First image / depth" lines: a flag, not rclpy's once=True, which costs ~1.7 ms per call (it
        # inspects the caller's frame on every call) and would run for every image.
        self._first_image = self._first_depth = True
        name, params = node.resolve_topic_name, values()
        setting, compressed, image = params["image_reliability"], params["compressed_input"], name("image")
        self.image = AdaptiveSubscription(node, CompressedImage if compressed else Image, image + (
            "/compressed" if compressed else ""), self._image, 1, setting)
        self.sensors, inputs = [self.image], [f"images on {self.image.describe()}"]
        if depth is not None:
            self.sensors += [AdaptiveSubscription(node, Image, "depth", self._depth_image, 5, setting),
                             AdaptiveSubscription(node, CameraInfo, "camera_info", self._camera_info, 5, setting)]
            inputs.append(f"depth on {self.sensors[1].describe()} with {self.sensors[2].describe()} (16UC1 mm or 32FC1 "
                          f"m, registered to the image, stamps within {params['depth_slop_s']} s)")
        seq = frame_seq
        self._subscriptions = [
            node.create_subscription(SegmentationCommand, "command", lambda m: on_command(
                *command_job(m, values(), seq())), COMMAND_QOS),
            node.create_subscription(String, "command_text", lambda m: on_command(
                *text_job(m.data, answer_header(None), values(), seq())), COMMAND_QOS),
            node.create_subscription(Point, image + "_mouse_left", lambda m: on_command(
                *click_job(m.x, m.y, answer_header(None), "image_mouse_left", values(), seq())), COMMAND_QOS),
            node.create_subscription(PointStamped, "clicked_point", lambda m: on_command(
                *click_job(m.point.x, m.point.y, m.header, "clicked_point", values(), seq())), COMMAND_QOS)]
        self._timers = [
            node.create_timer(params["qos_check_period_s"], self._check_qos),
            node.create_timer(0.05, lambda: any(s.recheck_requested for s in self.sensors) and self._check_qos()),
            node.create_timer(0.5, self._watch_images)]
        inputs += [f"commands on {name('command')} [SegmentationCommand] and {name('command_text')} [String]",
                   f"clicks on {image}_mouse_left [Point] and {name('clicked_point')} [PointStamped, pixels]"]
        outputs = ", ".join(name(topic) for topic in ("instances", "overlay", "markers", "~/instance_points"))
        outputs += ", /diagnostics"
        self._logger.info("Active. Waiting for " + "; ".join(inputs) + f". Publishing {outputs}.")

    def destroy(self) -> None:
        for subscription in self.sensors:
            subscription.destroy()
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        for timer in self._timers:
            self._node.destroy_timer(timer)
        self.sensors, self._subscriptions, self._timers = [], [], []

    def _image(self, msg) -> None:
        self._stats.image_received()
        topic, rejected = self.image.topic, ""
        try:
            conversions.check_image_message(msg, self._values()["max_image_pixels"])
        except ConversionError as error:  # checked on arrival, whether or not a command waits
            rejected = str(error)
            self._reporter.problem(image_problem(error, topic))
        zero_stamp = msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0
        if zero_stamp or not msg.header.frame_id:
            self._logger.warning(
                f"Images on {topic} have " + ("a zero stamp" if zero_stamp else "no frame_id") + ": every output copies "
                "the image header, so results cannot be matched to a time or frame (and depth is paired by stamp). Fix "
                "the camera driver.", throttle_duration_sec=60.0)
        if self._first_image:
            self._first_image = False
            size = f"{msg.width}x{msg.height} {msg.encoding}" if isinstance(msg, Image) else msg.format
            self._logger.info(f"First image on {topic}: {size}, frame_id '{msg.header.frame_id}' "
                              f"({self.image.reliability_name} subscription).")
        if self._warned_at is not None:
            self._warned_at = None
            self._logger.info(f"Images arrive again on {topic}.")
        self._on_frame(msg, rejected)

    def _depth_image(self, msg: Image) -> None:
        self._stats.count("depth_received")
        self._depth.add_depth(msg)
        if self._first_depth:
            self._first_depth = False
            self._logger.info(f"First depth image on {self.sensors[1].topic}: {msg.width}x{msg.height} {msg.encoding}, "
                              f"frame_id '{msg.header.frame_id}'.")

    def _camera_info(self, msg: CameraInfo) -> None:
        self._stats.count("camera_info_received")
        self._depth.add_camera_info(msg)

    def _check_qos(self) -> None:
        for change in filter(None, (subscription.check() for subscription in self.sensors)):
            self._logger.info(change)

    def _watch_images(self) -> None:
        limit, now = self._values()["no_image_warning_s"], time.monotonic()
        since = now - max(self._stats.last_image_time or 0.0, self._since)  # since the newest image or activation
        if since >= limit and (self._warned_at is None or now - self._warned_at >= limit):
            self._warned_at = now
            self._logger.warning(no_image_warning(self.image, since))
