"""Hold Ctrl-C / SIGTERM while a unit of output is written, then act on it.

The replay ends on Ctrl-C (KeyboardInterrupt, and SIGTERM mapped to it) with a readable output
file. Python raises KeyboardInterrupt between any two bytecodes, also inside the MCAP writer
between updating its statistics and adding the message to the chunk, or between the instances and
the markers of one answer; the file would then count messages it does not hold, or hold half an
answer. Inside ``interrupts_deferred()`` the signal is only recorded; it is raised as
KeyboardInterrupt when the block ends, so an answer is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Record SIGINT / SIGTERM during the block; raise KeyboardInterrupt after it if one came.

    Outside the main thread (where Python cannot change signal handlers) the block runs unchanged.
    Nested blocks are fine: the inner one leaves the outer one's recording in place and re-raises.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt(f"signal {signal.Signals(received[0]).name} (held until the output was consistent)")
