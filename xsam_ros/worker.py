"""The inference thread: newest frame wins, bounded command queue, tracked command; no ROS calls.

The node's callbacks only hand messages to ``InferenceWorker`` (``submit_frame``,
``submit_job``) and return. ``start(startup)`` starts the thread, which first runs ``startup``
(the lifecycle node loads its model there, so that inference and loading share one thread;
``wait_started`` tells the caller how it went) and then loops: it waits until a frame newer than the last processed one is there *and* there is
something to do with it (a command that arrived before that frame, or a tracked command), takes
the frame and the ready commands under the lock, and calls ``handler`` outside the lock. A
frame that arrives while the handler runs replaces any unprocessed one (counted as skipped), so
the worker never builds a backlog. Commands that see no new frame within ``command_timeout_s``
are handed to the handler as expired. ``stop`` ends the thread; ``start`` may be called again
after it (a lifecycle node deactivated and activated again).

The worker's ``slot`` (``TrackingSlot``) holds the tracked command, under the worker's own lock,
because a tracked command is what makes a new frame worth taking.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Frame:
    """One input image message, as received (converted later, on the worker thread)."""

    msg: Any
    seq: int
    received: float  # time.monotonic()
    rejected: str = ""  # why the arrival checks refused it ("" = not refused); the handler answers with it


@dataclass(eq=False)
class Job:
    """A command waiting for the next frame.

    Attributes:
        request: the engine request (thresholds resolved).
        request_id / prompt: echoed in the result.
        continuous: keep applying it to every following frame (tracking).
        source: "command", "command_text", "click" (for logs).
        received: time.monotonic() of arrival.
        after_seq: only frames with a larger sequence number answer it (the next frame).
        header: the command's header (used for answers that no image belongs to).
        thresholds: the command's own thresholds (unset ones fall back to the node's parameters,
            read again on every tracked frame so runtime parameter changes apply).
    """

    request: Any
    request_id: str
    prompt: str
    continuous: bool
    source: str
    received: float
    after_seq: int
    header: Any = None
    thresholds: Any = None


@dataclass(eq=False)
class TrackedCommand:
    """A continuous command after its first (LLM) pass: the condition reused on every new frame."""

    job: Job
    condition: Any
    tracker: Any
    frames: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Batch:
    """What the handler gets: a frame (or None when only expired jobs are to be answered)."""

    frame: Frame | None
    jobs: list[Job]
    expired: list[Job]
    tracked: TrackedCommand | None


class TrackingSlot:
    """Holds the tracked command; thread-safe. ``condition`` (optional) is notified when it is set.

    The node's worker shares its condition with it (a tracked command is what makes a new frame
    worth taking); ``pipeline.FramePipeline`` sets and clears it; ``~/clear`` clears it.
    """

    def __init__(self, condition: threading.Condition | None = None) -> None:
        self._condition = condition or threading.Condition()
        self._tracked: TrackedCommand | None = None

    @property
    def tracked(self) -> TrackedCommand | None:
        with self._condition:
            return self._tracked

    def set_tracked(self, tracked: TrackedCommand | None) -> None:
        with self._condition:
            self._tracked = tracked
            self._condition.notify_all()

    def clear_tracked(self) -> TrackedCommand | None:
        """Drop the tracked command; returns it (None if there was none)."""
        with self._condition:
            tracked, self._tracked = self._tracked, None
            return tracked

    def clear_if(self, tracked: TrackedCommand) -> bool:
        """Drop ``tracked`` if it is still the tracked command; True when it was."""
        with self._condition:
            if self._tracked is not tracked:
                return False
            self._tracked = None
            return True

    def still_tracked(self, tracked: TrackedCommand) -> bool:
        """False once ``tracked`` was cleared or replaced (checked again right before publishing)."""
        with self._condition:
            return self._tracked is tracked


class InferenceWorker:
    """See the module docstring. Thread-safe; every public method returns immediately."""

    def __init__(
        self,
        handler: Callable[[Batch], None],
        max_pending: int = 8,
        command_timeout_s: Callable[[], float] = lambda: 10.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._handler = handler
        self._max_pending = max_pending
        self._command_timeout_s = command_timeout_s
        self._on_error = on_error
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0
        self._last_processed_seq = 0
        self._jobs: deque[Job] = deque()
        self.slot = TrackingSlot(self._condition)  # the tracked command
        self._stopping = False
        self.frames_skipped = 0
        self.busy = False
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.startup_error: BaseException | None = None

    # -- called from ROS callbacks ------------------------------------------------------------

    def start(self, startup: Callable[[], None] | None = None) -> None:
        """Start the thread; it runs ``startup`` first and handles batches only if that returned."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the inference thread is already running; stop() it first")
        with self._condition:
            self._stopping = False
        self._started.clear()
        self.startup_error = None
        self._thread = threading.Thread(target=self._run, args=(startup,), name="xsam_inference", daemon=True)
        self._thread.start()

    def wait_started(self, timeout: float | None = None) -> bool:
        """True once ``startup`` has finished (successfully or not: see ``startup_error``)."""
        return self._started.wait(timeout)

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to finish (after the batch it is handling); True when it did within ``timeout``."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    @property
    def frame_seq(self) -> int:
        with self._condition:
            return self._seq

    def submit_frame(self, msg: Any, rejected: str = "") -> int:
        """Store the newest frame (replacing an unprocessed one); returns its sequence number.

        ``rejected``: the reason the caller's arrival checks refused the frame; it still answers
        the commands waiting for the next frame (with that error) instead of a later good frame.
        """
        with self._condition:
            if self._frame is not None and self._frame.seq > self._last_processed_seq and self._has_work_locked():
                self.frames_skipped += 1
            self._seq += 1
            self._frame = Frame(msg, self._seq, time.monotonic(), rejected)
            self._condition.notify_all()
            return self._seq

    def submit_job(self, job: Job) -> Job | None:
        """Queue a command for the next frame; returns the oldest job if it had to be dropped."""
        with self._condition:
            dropped = None
            if len(self._jobs) >= self._max_pending:
                dropped = self._jobs.popleft()
            self._jobs.append(job)
            self._condition.notify_all()
            return dropped

    def take_pending(self) -> list[Job]:
        """Remove and return every queued job (e.g. when the node is disabled)."""
        with self._condition:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def pending_count(self) -> int:
        with self._condition:
            return len(self._jobs)

    # -- the thread -------------------------------------------------------------------------------

    def _has_work_locked(self) -> bool:
        return bool(self._jobs) or self.slot.tracked is not None

    def _next_batch(self) -> Batch | None:
        """Block until there is work; None when stopping."""
        with self._condition:
            while True:
                if self._stopping:
                    return None
                now = time.monotonic()
                timeout_s = self._command_timeout_s()
                frame = self._frame
                new_frame = frame is not None and frame.seq > self._last_processed_seq
                ready = [job for job in self._jobs if new_frame and job.after_seq < frame.seq]
                expired = [job for job in self._jobs
                           if job not in ready and now - job.received >= timeout_s]
                tracked = self.slot.tracked
                if ready or expired or (new_frame and tracked is not None):
                    for job in ready + expired:
                        self._jobs.remove(job)
                    use_frame = new_frame and (ready or tracked is not None)
                    if use_frame:
                        self._last_processed_seq = frame.seq
                    self.busy = True
                    return Batch(frame if use_frame else None, ready, expired, tracked if use_frame else None)
                deadlines = [job.received + timeout_s - now for job in self._jobs]
                self._condition.wait(timeout=max(0.01, min(deadlines)) if deadlines else None)

    def _run(self, startup: Callable[[], None] | None) -> None:
        try:
            if startup is not None:
                startup()
        except BaseException as error:  # the caller of start() decides what a failed start means
            self.startup_error = error
            return
        finally:
            self._started.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._handler(batch)
            except BaseException as error:  # never let the thread die: report and go on
                if self._on_error is not None:
                    self._on_error(error)
            finally:
                with self._condition:
                    self.busy = False
