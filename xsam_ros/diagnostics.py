"""Counters, rates and latencies of the node, and the /diagnostics status built from them."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

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
