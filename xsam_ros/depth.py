"""Depth for a colour image: pairing by stamp, conversion, size and unit checks, camera_info, the bounded wait.

No ROS node, no rclpy: the node's callbacks (or a bag reader) hand every depth image and
camera_info message to a ``DepthPairer`` as it arrives (``add_depth`` / ``add_camera_info``: they
only append to short buffers). The frame pipeline then

1. pairs when it takes a frame (``match``): the depth image and camera_info whose stamp equals
   the image's, else the closest within ``DepthSettings.slop_s`` (message_filters is not on
   PyPI; a slow inference must not let the buffer drop the frame's depth meanwhile);
2. after inference asks for the frame's ``registered`` depth: the paired depth image or, if it
   has not arrived yet, the one that arrives within ``DepthSettings.wait_s`` while a depth stream
   is active (a depth image in the last ``STREAM_ACTIVE_S``; a colour-only camera never waits),
   converted to metres (REP-118: 16UC1 millimetres, 32FC1 metres), checked to be registered to
   the image (same size), with the K of the image from camera_info (REP-104: ROI offset and
   binning applied, ``geometry.image_camera_matrix``);
3. computes each instance's 3D with ``instance_geometry``, which says why when no pixel of the
   mask has valid depth (holes, or REP-118 units: ``geometry.explain_no_valid_depth``).

Every problem comes back as a ``reporting.Problem`` (log text, throttle key, diagnostics counter),
never as a log line: the caller reports it. Only the worker thread may wait (``registered``).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .conversions import ConversionError, camera_matrix, depth_to_metres, stamp_ns
from .geometry import GeometryError, ObjectGeometry, explain_no_valid_depth, object_geometry, valid_depth
from .reporting import Problem

T = TypeVar("T")
BUFFER = 10  # depth images / camera_infos kept for pairing
STREAM_ACTIVE_S = 2.0  # the worker waits for a late depth image only if one arrived this recently


class StampBuffer(Generic[T]):
    """The last ``capacity`` (stamp_ns, item) pairs; thread-safe."""

    def __init__(self, capacity: int = BUFFER) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[int, T]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            self._items.append((int(stamp_ns), item))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def latest(self) -> tuple[int, T] | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def find(self, stamp_ns: int, slop_ns: int) -> tuple[int, T] | None:
        """The item with exactly ``stamp_ns``, else the closest with |difference| <= ``slop_ns``, else None.

        Ties go to the most recently added item.
        """
        with self._lock:
            items = list(self._items)
        best: tuple[int, T] | None = None
        best_difference = None
        for stamp, item in reversed(items):
            difference = abs(stamp - stamp_ns)
            if difference == 0:
                return stamp, item
            if difference <= slop_ns and (best_difference is None or difference < best_difference):
                best, best_difference = (stamp, item), difference
        return best

    def stamps(self) -> list[int]:
        with self._lock:
            return [stamp for stamp, _ in self._items]


@dataclass(frozen=True)
class DepthSettings:
    """The depth parameters of the node (README "Parameters"); read once per frame.

    Attributes:
        slop_s: largest stamp difference between an image and its depth / camera_info (s).
        wait_s: how long to wait for a late depth image while a depth stream is active (s).
        min_depth_m / max_depth_m: valid depth range (m).
        max_image_pixels: larger depth images are refused (None = no limit).
    """

    slop_s: float = 0.02
    wait_s: float = 0.1
    min_depth_m: float = 0.05
    max_depth_m: float = 10.0
    max_image_pixels: int | None = None


@dataclass(frozen=True, eq=False)
class DepthMatch:
    """(stamp_ns, message) of the depth image and camera_info paired with a frame (None: none yet)."""

    depth: tuple | None = None
    info: tuple | None = None


@dataclass(frozen=True, eq=False)
class RegisteredDepth:
    """The depth of one frame, ready for 3D.

    Attributes:
        depth: (H, W) float32 metres in the image's pixel grid; NaN where there is no depth.
        camera_matrix: (3, 3) K of the image (camera_info's ROI and binning applied, REP-104).
        encoding: the depth message's encoding ("16UC1", "32FC1", "mono16"), for unit diagnosis.
    """

    depth: np.ndarray
    camera_matrix: np.ndarray
    encoding: str


class DepthPairer:
    """Depth images and camera_info by stamp, for the frames of one camera (see the module docstring).

    ``depth_topic`` / ``info_topic`` only name the inputs in problem texts.
    """

    def __init__(self, depth_topic: str = "depth", info_topic: str = "camera_info", capacity: int = BUFFER) -> None:
        self.depth_topic, self.info_topic = depth_topic, info_topic
        self._depth: StampBuffer = StampBuffer(capacity)
        self._info: StampBuffer = StampBuffer(capacity)
        self._arrived = threading.Condition()
        self._last_depth_time: float | None = None
        self.depth_received = 0

    def add_depth(self, msg) -> None:
        """A sensor_msgs/Image depth message arrived (never blocks)."""
        self._depth.add(stamp_ns(msg.header), msg)
        with self._arrived:
            self.depth_received += 1
            self._last_depth_time = time.monotonic()
            self._arrived.notify_all()

    def add_camera_info(self, msg) -> None:
        """A sensor_msgs/CameraInfo arrived (never blocks)."""
        self._info.add(stamp_ns(msg.header), msg)

    def match(self, header, slop_s: float) -> DepthMatch:
        """What is buffered now for the image with ``header`` (call when the frame is taken)."""
        stamp, slop_ns = stamp_ns(header), int(slop_s * 1e9)
        return DepthMatch(self._depth.find(stamp, slop_ns), self._info.find(stamp, slop_ns))

    def wait_for_depth(self, header, slop_s: float, wait_s: float):
        """(stamp_ns, depth message) paired with ``header``, waiting up to ``wait_s`` while a depth
        stream is active; None if none came. Worker thread only."""
        stamp, slop_ns = stamp_ns(header), int(slop_s * 1e9)
        found = self._depth.find(stamp, slop_ns)
        if found is not None or wait_s <= 0:
            return found
        deadline = time.monotonic() + wait_s
        with self._arrived:
            while found is None:
                now = time.monotonic()
                stream_active = self._last_depth_time is not None and now - self._last_depth_time < STREAM_ACTIVE_S
                if now >= deadline or not stream_active:
                    break
                self._arrived.wait(deadline - now)
                found = self._depth.find(stamp, slop_ns)
        return found

    def registered(self, header, image_size: tuple[int, int], settings: DepthSettings,
                   early: DepthMatch | None = None) -> tuple[RegisteredDepth | None, list[Problem]]:
        """The frame's depth in metres with K, or None; and the problems to report (warnings even on success).

        Args:
            header: the colour image's std_msgs/Header (stamp pairs, frame_id is compared).
            image_size: (height, width) of the colour image.
            early: what ``match`` found when the frame was taken (looked up again if None).
        """
        early = early or DepthMatch()
        height, width = image_size
        found = early.depth or self.wait_for_depth(header, settings.slop_s, settings.wait_s)
        stamp = f"{header.stamp.sec}.{header.stamp.nanosec:09d}"
        if found is None:
            detail = (f"none has arrived on {self.depth_topic} yet" if self.depth_received == 0 else
                      f"buffered depth stamps differ by more than depth_slop_s={settings.slop_s} s")
            return None, [Problem(
                "warning", "depth-missing", f"No depth image for the image stamped {stamp}: {detail}; no 3D for this "
                "result (set use_depth:=false if there is no depth camera).", period_s=10.0, counter="depth_missing")]
        depth_msg = found[1]
        try:
            depth = depth_to_metres(depth_msg, settings.max_image_pixels)
            if depth.shape != (height, width):
                raise GeometryError(
                    f"depth image is {depth.shape[1]}x{depth.shape[0]} but the colour image is {width}x{height}; the depth "
                    "must be registered to the colour image at the same resolution (e.g. aligned_depth_to_color)")
        except (ConversionError, GeometryError) as error:
            return None, [rejected(error)]
        slop_ns = int(settings.slop_s * 1e9)
        info = early.info or self._info.find(stamp_ns(header), slop_ns) or self._info.latest()
        if info is None:
            return None, [Problem("warning", "info-missing", f"Depth arrived but no camera_info on {self.info_topic}; "
                                  "no 3D until it does.", period_s=10.0, counter="depth_missing")]
        try:
            matrix = camera_matrix(info[1], (width, height))
        except GeometryError as error:
            return None, [rejected(error)]
        problems = []
        depth_frame, image_frame = depth_msg.header.frame_id, header.frame_id
        if depth_frame and image_frame and depth_frame != image_frame:
            problems.append(Problem("warning", "depth-frame", f"Depth frame_id '{depth_frame}' differs from the image's "
                                    f"'{image_frame}'; using it as registered to the image.", period_s=60.0))
        return RegisteredDepth(depth, matrix, depth_msg.encoding), problems


def rejected(error: Exception) -> Problem:
    """The problem of a depth image or camera_info that cannot be used (wrong size, encoding, K)."""
    return Problem("error", f"depth:{str(error)[:60]}", f"Depth not used: {error}; has_3d=false.",
                   counter="depth_rejected", last_error=f"depth rejected: {error}")


def instance_geometry(instance, depth: RegisteredDepth, settings: DepthSettings
                      ) -> tuple[ObjectGeometry | None, Problem | None]:
    """3D centroid and extent of one engine Instance (camera optical frame, m), or None and why.

    A mask of which no pixel has depth within [min_depth_m, max_depth_m] gives the explanation
    (holes, or the REP-118 unit mistake: millimetres in 32FC1, metres in 16UC1) as a warning
    throttled per cause (the numbers in the text vary from frame to frame, the cause does not).
    """
    x0, y0, x1, y1 = instance.box_xyxy
    if x1 <= x0 or y1 <= y0:
        return None, None
    crop = instance.mask[y0:y1, x0:x1]
    low, high = settings.min_depth_m, settings.max_depth_m
    try:
        geometry = object_geometry(crop, depth.depth, depth.camera_matrix, low, high, roi=(x0, y0, x1 - x0, y1 - y0))
    except GeometryError as error:
        return None, Problem("error", "geometry", f"3D estimate failed: {error}")
    if geometry is not None:
        return geometry, None
    depths = depth.depth[y0:y1, x0:x1][crop]
    if valid_depth(depths, low, high).any():
        return None, None  # some valid depth, too few points for an estimate: not a units problem
    explanation = explain_no_valid_depth(depths, low, high, depth.encoding)
    text = f"no 3D for {instance.label!r}: {explanation}"
    key = "depth-range:" + re.sub(r"[-+0-9.e]+ m\b", "", explanation)
    return None, Problem("warning", key, text + "; has_3d=false.", period_s=10.0, counter="depth_no_valid_pixels",
                         last_error=text)
