"""What the node says about problems: ``Problem`` records, the ``Reporter`` they go to, and log throttling.

The ROS-free parts (``xsam_ros.pipeline``, ``xsam_ros.depth``) never log: they hand each problem to a
``Reporter`` as a ``Problem`` (level, throttle key, text, the diagnostics counter it increments, the
``last_error`` it sets). The base ``Reporter`` records everything (unit tests, the bag-replay tool);
``NodeReporter`` logs through the node's rclpy logger, at most once per key and period
(``LogThrottle``), and updates the node's ``diagnostics.NodeStats``.

Throttling: a warning at a fixed call site in the node uses rclpy's own
``logger.warning(text, throttle_duration_sec=...)``. ``LogThrottle`` is for keys that are dynamic
(one line per distinct image error, engine exception type, depth-unit cause, ...), which rclpy
cannot express because it throttles by call site, and for the problems the ROS-free modules
report (they have no rclpy logger). rclpy's filters inspect the caller's frame on every call
(about 1.7 ms on a busy 2-core machine), so a line logged once per process on a path that runs
for every image ("First image on ...") uses a flag instead of ``once=True``.

No ROS import: the logger is any object with rclpy's ``info`` / ``warning`` / ``error`` methods.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass

LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong (or deserves a warning) while handling a frame or a command.

    Attributes:
        level: "info", "warning" or "error" (the log severity).
        key: throttle key: at most one log line per key and ``period_s`` (suppressed ones are counted).
        text: the log line: what was wrong and how to fix it.
        period_s: throttle period in seconds.
        counter: the ``diagnostics.NodeStats`` counter it increments ("" = none).
        last_error: the text ``/diagnostics`` reports as ``last_error`` ("" = leave it).
    """

    level: str
    key: str
    text: str
    period_s: float = 5.0
    counter: str = ""
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"Problem level must be one of {', '.join(LEVELS)}, got {self.level!r}")


class Reporter:
    """Receives the pipeline's problems, counts and notes; this base class records them.

    Thread-safe. ``counts`` (collections.Counter), ``problems`` and ``notes`` (lists) are what a
    test or the replay tool reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.errors: list[str] = []

    def count(self, counter: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[counter] += amount

    def problem(self, problem: Problem) -> None:
        with self._lock:
            self.problems.append(problem)
            if problem.counter:
                self.counts[problem.counter] += 1

    def note(self, text: str) -> None:
        """An informational line (e.g. "Tracking 'red cup': ..."), not a problem."""
        with self._lock:
            self.notes.append(text)

    def error(self, text: str) -> None:
        """Set ``last_error`` without a log line (the answer itself says it, e.g. an engine ValueError)."""
        with self._lock:
            self.errors.append(text)

    def frame_processed(self, seconds: float) -> None:
        """A frame went through (conversion, every command's inference, 3D; and what the caller did meanwhile)."""
        self.count("frames_processed")


class LogThrottle:
    """At most one log line per key and period; counts what it suppressed. Thread-safe."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def allow(self, key: str, period_s: float) -> tuple[bool, int]:
        """(whether to log now, how many lines with this key were suppressed since the last one)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < period_s:
                self._suppressed[key] += 1
                return False, 0
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


def log_at(logger, level: str, text: str) -> None:
    """``text`` at ``level`` on an rclpy logger (rclpy ties a severity to each call site: one call per level)."""
    if level == "error":
        logger.error(text)
    elif level == "warning":
        logger.warning(text)
    else:
        logger.info(text)


class NodeReporter(Reporter):
    """The node's reporter: throttled log lines through ``logger``, counters and last_error in ``stats``."""

    def __init__(self, logger, stats) -> None:
        super().__init__()
        self._logger = logger
        self._stats = stats
        self._throttle = LogThrottle()

    def count(self, counter: str, amount: int = 1) -> None:
        self._stats.count(counter, amount)

    def problem(self, problem: Problem) -> None:
        if problem.counter:
            self._stats.count(problem.counter)
        if problem.last_error:
            self._stats.error(problem.last_error)
        allowed, suppressed = self._throttle.allow(problem.key, problem.period_s)
        if not allowed:
            return
        text = problem.text
        if suppressed:
            text += f" ({suppressed} similar message(s) suppressed in the last {problem.period_s:.0f} s)"
        log_at(self._logger, problem.level, text)

    def note(self, text: str) -> None:
        self._logger.info(text)

    def error(self, text: str) -> None:
        self._stats.error(text)

    def frame_processed(self, seconds: float) -> None:
        self._stats.frame_processed(seconds)


def with_traceback(text: str, error: BaseException, limit: int = 2000) -> str:
    """``text`` followed by the end (``limit`` characters) of ``error``'s traceback."""
    return text + "\n" + "".join(traceback.format_exception(type(error), error, error.__traceback__))[-limit:]


class EngineLogHandler(logging.Handler):
    """Forwards the engine's Python log records (logger "xsam_engine") to an rclpy logger."""

    def __init__(self, logger) -> None:
        super().__init__(level=logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text = with_traceback(text, record.exc_info[1], limit=100_000).rstrip()
        except Exception:  # a malformed record must not break inference
            return
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING else "info"
        log_at(self._logger, level, text)

    def attach(self) -> None:
        """Route the "xsam_engine" logger (INFO and above, not propagated) to this handler."""
        engine_logger = logging.getLogger("xsam_engine")
        engine_logger.setLevel(logging.INFO)
        engine_logger.propagate = False
        engine_logger.addHandler(self)

    def detach(self) -> None:
        logging.getLogger("xsam_engine").removeHandler(self)
