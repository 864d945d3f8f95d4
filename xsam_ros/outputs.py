"""The node's result topics: publishing the frame pipeline's outcomes as instances, overlay, markers and clouds.

``Outputs`` owns the four lifecycle publishers (``instances``, ``overlay``, ``markers``,
``~/instance_points``; they publish only while the node is active), the marker ids last published
per stream (``markers.MarkerStreams``: one-shot and tracked), ``~/enable``'s flag and the lock under which
results are published and under which ``~/clear``, ``~/enable`` and a failed continuous command
change what may be published:

- a tracked frame's result is dropped when its command was cleared or replaced meanwhile (no
  stale result or marker after ``~/clear``'s DELETEALL);
- while disabled nothing is published; a command's own answer becomes an error saying so;
- a failed continuous command that stopped the tracked one deletes that one's markers.

The overlay, the markers and the per-instance point cloud (``point_clouds``: the inlier points of
each instance's 3D estimate, x / y / z / instance_id) are built only while someone subscribes; the
cloud's build time is the ``point_cloud`` stage of the result's ``timings``.
"""

from __future__ import annotations

import threading
import time

from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray
from xsam_ros.msg import InstanceMaskArray

from .markers import ONE_SHOT, TRACKED, MarkerStreams, delete_all
from .pipeline import FramePipeline, Outcome
from .point_clouds import instance_cloud_msg
from .qos import MARKER_QOS, RESULT_QOS, VISUALISATION_QOS


class Outputs:
    """See the module docstring.

    Args:
        node: the rclpy LifecycleNode that owns the publishers.
        pipeline: builds error answers (``FramePipeline.fail``); its tracking slot is ``slot``.
        slot: the tracked command's holder (``worker.TrackingSlot``, the worker's ``slot``).
        stats: ``diagnostics.NodeStats`` (results / errors published, per-stage latency).
        publish_label_image: returns the parameter's current value.
    """

    def __init__(self, node, pipeline: FramePipeline, slot, stats, publish_label_image) -> None:
        self._node, self._pipeline, self._slot, self._stats = node, pipeline, slot, stats
        self._label_image = publish_label_image
        self.instances = node.create_lifecycle_publisher(InstanceMaskArray, "instances", RESULT_QOS)
        self.overlay = node.create_lifecycle_publisher(Image, "overlay", VISUALISATION_QOS)
        self.markers = node.create_lifecycle_publisher(MarkerArray, "markers", MARKER_QOS)
        self.points = node.create_lifecycle_publisher(PointCloud2, "~/instance_points", VISUALISATION_QOS)
        self.lock = threading.RLock()
        self.enabled = True
        self._streams = MarkerStreams()

    def destroy(self) -> None:
        for publisher in (self.instances, self.overlay, self.markers, self.points):
            self._node.destroy_lifecycle_publisher(publisher)

    def set_enabled(self, enabled: bool) -> None:
        with self.lock:  # a result being published finishes first; none is published after this
            self.enabled = enabled

    def clear(self, header: Header):
        """Drop the tracked command (returned, or None) and delete every marker (one DELETEALL)."""
        with self.lock:  # a tracked result computed before this is published before the DELETEALL or not at all
            tracked = self._slot.clear_tracked()
            self._streams.reset()
            if self.markers.get_subscription_count() > 0:
                self.markers.publish(MarkerArray(markers=[delete_all(header)]))
        return tracked

    def publish(self, outcome: Outcome) -> None:
        """Publish one answer of the pipeline (see the module docstring for what is dropped)."""
        if not outcome.success:
            return self._publish_error(outcome)
        cloud = None
        if self.points.get_subscription_count() > 0:
            started = time.perf_counter()
            cloud = instance_cloud_msg(outcome.header, [instance.instance_id for instance in outcome.instances],
                                       outcome.geometries)
            outcome.seconds["point_cloud"] = time.perf_counter() - started
        message = outcome.to_msg(self._label_image())
        overlay = outcome.overlay_msg() if self.overlay.get_subscription_count() > 0 else None
        tracked = outcome.tracked
        with self.lock:
            current = tracked is None or self._slot.still_tracked(tracked)
            if outcome.tracking and not current:
                return
            if not self.enabled:
                if not outcome.tracking:  # the command's answer is owed: say why there is none
                    text = "the node was disabled (~/enable) while this command was being answered"
                    if tracked is not None and self._slot.clear_if(tracked):
                        text += "; tracking did not start"
                    self._publish_error(self._pipeline.fail(outcome.job, text, outcome.header, outcome.image_size))
                return
            if tracked is not None and not outcome.tracking:
                self._streams.start_tracked()  # a new tracked command: clear the previous one's markers
            self.instances.publish(message)
            if overlay is not None:
                self.overlay.publish(overlay)
            if cloud is not None:
                self.points.publish(cloud)
            if current and self.markers.get_subscription_count() > 0:
                self.markers.publish(self._streams.for_result(message, ONE_SHOT if tracked is None else TRACKED))
        self._stats.record_stages(outcome.seconds)
        self._stats.count("results_published")
        if outcome.tracking:
            self._stats.count("tracked_frames")

    def _publish_error(self, outcome: Outcome) -> None:
        if outcome.stopped is not None:  # a failed continuous command stopped the tracked one: its markers go
            with self.lock:
                deletions = self._streams.stop_tracked(outcome.header)
                if deletions is not None and self.markers.get_subscription_count() > 0:
                    self.markers.publish(deletions)
            self._node.get_logger().warning(
                f"Stopped tracking {outcome.stopped.job.prompt[:80]!r}: a newer continuous command failed.")
        self.instances.publish(outcome.to_msg())
        self._stats.count("errors_published")
