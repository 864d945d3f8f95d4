"""xsam_ros.interrupts: Ctrl-C / SIGTERM during a unit of output is held until the unit is written."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from xsam_ros.interrupts import interrupts_deferred


def raise_interrupt(signum, frame):  # what `python -m xsam_ros.replay` installs for SIGTERM
    raise KeyboardInterrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_the_block_is_raised_after_it(signum):
    written = []
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(signum).name):
            with interrupts_deferred():
                os.kill(os.getpid(), signum)  # delivered now, in the middle of the "answer"
                for topic in ("instances", "overlay", "markers", "instance_points"):
                    written.append(topic)
        assert written == ["instances", "overlay", "markers", "instance_points"]  # the whole answer
        # The handlers in place before the block are back: SIGTERM raises at once again.
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_no_signal_no_exception_and_handlers_restored():
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with interrupts_deferred():
        value = 1 + 1
    assert value == 2 and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_exception_in_the_block_propagates_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(ValueError):
        with interrupts_deferred():
            raise ValueError("a write failed")
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_the_block_runs_unchanged():
    errors: list[BaseException] = []

    def work():
        try:
            with interrupts_deferred():
                pass
        except BaseException as error:  # signal.signal would raise ValueError here
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert errors == []
