"""Watching the Triton server of a node with ``backend`` triton, for /diagnostics and the log; no ROS.

Inference only contacts the server when a command or a tracked frame runs, so an idle node would
not notice a server that went away, nor one that came back. ``ServerWatch`` asks the server
whether it is ready (``xsam_engine.backends.triton_stages.ServerProbe``: Triton's readiness, i.e.
live with every model loaded, on a client of its own, bounded by ``triton_timeout_s``) every
``period_s`` on a thread of its own, and combines the answer with what the predictor's stages
know (``using_fallback``: the last inference ran locally) into a ``ServerStatus``:

- ``ready``: the server answered the last check and inference runs there;
- ``unreachable``: the last check failed. Without ``triton_fallback`` every command fails with an
  error naming the server until it is back (the node reports ERROR); with it, the next frame
  runs on the local backend (WARN);
- ``fallback``: the last inference ran on the local backend (``triton_fallback``) because the
  server could not be reached; the stages try the server again every 2 s while frames run (WARN).

Recovery needs nothing from here: the stages reconnect on their next call. ``on_change`` is
called (from the watch thread) with the new status whenever the state changes, so the node logs
one line when the server goes and one when it is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

READY, UNREACHABLE, FALLBACK = "ready", "unreachable", "fallback"


@dataclass(frozen=True)
class ServerStatus:
    """What /diagnostics reports about the Triton server.

    Attributes:
        url: the server as the engine names it ("grpc://host:port").
        state: "ready", "unreachable" or "fallback" (module docstring).
        error: why the server is not used ("" when ready): the health check's or the last inference's
            error, naming the server.
        fallback: the local backend that runs the image stages while the server is unreachable
            (``triton_fallback``); "" = none, commands fail instead.
    """

    url: str
    state: str
    error: str = ""
    fallback: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == READY

    def describe(self) -> str:
        """The one-line summary (diagnostics message, log line) when not ready; "" when ready."""
        if self.healthy:
            return ""
        if self.fallback:
            return (f"Triton server {self.url} unreachable: the image stages run locally on {self.fallback} "
                    "until it is back (triton_fallback)")
        return f"Triton server {self.url} unreachable: commands fail until it is back (triton_fallback is false)"


class ServerWatch:
    """Checks the server every ``period_s`` on a daemon thread; ``status()`` is safe from any thread.

    Args:
        stages: the predictor's ``TritonStages`` (its ``options``, ``using_fallback``, ``last_error``).
        fallback: the local backend of ``triton_fallback`` ("" = none).
        period_s: seconds between the end of one check and the start of the next.
        on_change: called with the new ``ServerStatus`` when the state changes (watch thread).
    """

    def __init__(self, stages, fallback: str, period_s: float,
                 on_change: Callable[[ServerStatus], None] | None = None) -> None:
        from xsam_engine.backends.triton_stages import ServerProbe

        self._stages, self._fallback, self._period_s = stages, fallback, period_s
        self._on_change, self._probe = on_change, ServerProbe(stages.options)
        self._error = ""  # the last check's answer ("" = ready, or not checked yet)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="triton-watch", daemon=True)

    @property
    def url(self) -> str:
        return self._stages.options.display

    def start(self) -> ServerWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        state = self.status().state
        try:
            while not self._stop.is_set():
                self._error = self._probe.check()
                status = self.status()
                if status.state != state and self._on_change is not None and not self._stop.is_set():
                    self._on_change(status)
                state = status.state
                self._stop.wait(self._period_s)
        finally:
            self._probe.close()

    def status(self) -> ServerStatus:
        stages, error = self._stages, self._error
        if stages.using_fallback:
            return ServerStatus(self.url, FALLBACK, error or stages.last_error or "", self._fallback)
        return ServerStatus(self.url, UNREACHABLE if error else READY, error, self._fallback)

    def stop(self, timeout_s: float) -> bool:
        """Stop checking; False when the check in progress did not end within ``timeout_s``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()
