"""Unit tests of the node's plumbing: QoS selection (pure and against real rclpy publishers) and the
inference worker's queueing rules and restart (the stamp buffer is in test_node_depth.py)."""

from __future__ import annotations

import threading
import time

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from xsam_ros.qos import AdaptiveSubscription, choose_reliability, describe_publishers, sensor_qos
from xsam_ros.worker import InferenceWorker, Job

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


# -- QoS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, publishers, current, expected", [
    ("auto", [], None, RELIABLE),                         # nothing known yet: reliable
    ("auto", [], BEST_EFFORT, BEST_EFFORT),               # publisher left: keep what worked
    ("auto", [RELIABLE], BEST_EFFORT, RELIABLE),          # all reliable: reliable keeps big frames intact
    ("auto", [RELIABLE, RELIABLE], None, RELIABLE),
    ("auto", [BEST_EFFORT], RELIABLE, BEST_EFFORT),       # reliable would not match a best-effort publisher
    ("auto", [RELIABLE, BEST_EFFORT], RELIABLE, BEST_EFFORT),
    ("reliable", [BEST_EFFORT], None, RELIABLE),          # forced
    ("best_effort", [RELIABLE], None, BEST_EFFORT),
])
def test_choose_reliability(setting, publishers, current, expected):
    assert choose_reliability(setting, publishers, current) == expected


def test_choose_reliability_rejects_unknown_setting():
    with pytest.raises(ValueError, match="auto, reliable or best_effort"):
        choose_reliability("sometimes", [])


def test_sensor_qos_and_description():
    qos = sensor_qos(BEST_EFFORT, 1)
    assert qos.depth == 1 and qos.reliability == BEST_EFFORT
    assert describe_publishers([]) == "none"
    assert describe_publishers([RELIABLE, BEST_EFFORT, BEST_EFFORT]) == "1 reliable, 2 best-effort"


def test_adaptive_subscription_follows_real_publishers(rclpy_context, ros_namespace):
    import rclpy

    node = rclpy.create_node("adaptive_sub", namespace=ros_namespace, context=rclpy_context)
    other = rclpy.create_node("camera", namespace=ros_namespace, context=rclpy_context)
    try:
        subscription = AdaptiveSubscription(node, Image, "image", lambda msg: None, 1, "auto")
        assert subscription.topic == f"{ros_namespace}/image"
        assert subscription.reliability == RELIABLE and subscription.check() is None

        def wait_for_change(timeout=10.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                change = subscription.check()
                if change:
                    return change
                time.sleep(0.05)
            return None

        best_effort = other.create_publisher(Image, "image", QoSProfile(depth=1, reliability=BEST_EFFORT))
        change = wait_for_change()
        assert change and "0 reliable, 1 best-effort" in change and "from reliable to best_effort" in change
        assert subscription.reliability == BEST_EFFORT
        other.destroy_publisher(best_effort)
        other.create_publisher(Image, "image", QoSProfile(depth=1, reliability=RELIABLE))
        change = wait_for_change()
        assert change and "from best_effort to reliable" in change
        forced = AdaptiveSubscription(node, Image, "image", lambda msg: None, 1, "best_effort")
        assert forced.reliability == BEST_EFFORT and forced.check() is None
        assert "forced" in forced.describe() and "auto" in subscription.describe()
    finally:
        node.destroy_node()
        other.destroy_node()


# -- worker ---------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches = []
        self.delay = delay
        self.condition = threading.Condition()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch) -> None:
        self.release.wait(5)
        time.sleep(self.delay)
        with self.condition:
            self.batches.append(batch)
            self.condition.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> bool:
        with self.condition:
            return self.condition.wait_for(lambda: len(self.batches) >= count, timeout)


def job(name: str, worker: InferenceWorker, continuous: bool = False) -> Job:
    return Job(request=name, request_id=name, prompt=name, continuous=continuous, source="test",
               received=time.monotonic(), after_seq=worker.frame_seq)


@pytest.fixture
def make_worker():
    workers = []

    def make(recorder, **kwargs):
        worker = InferenceWorker(recorder, **kwargs)
        worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        assert worker.stop(5.0)


def test_a_command_is_answered_by_the_next_frame_not_an_older_one(make_worker):
    recorder = Recorder()
    worker = make_worker(recorder)
    worker.submit_frame("old")
    worker.submit_job(job("cup", worker))
    assert not recorder.wait(1, timeout=0.3)  # the frame before the command does not answer it
    worker.submit_frame("new")
    assert recorder.wait(1)
    batch = recorder.batches[0]
    assert batch.frame.msg == "new" and [j.prompt for j in batch.jobs] == ["cup"] and batch.tracked is None


def test_newest_frame_wins_while_busy(make_worker):
    recorder = Recorder()
    recorder.release.clear()
    worker = make_worker(recorder)
    first = job("first", worker)
    worker.submit_job(first)
    worker.submit_frame("f1")  # taken; the handler blocks on `release`
    deadline = time.monotonic() + 5
    while not worker.busy and time.monotonic() < deadline:
        time.sleep(0.005)
    second = job("second", worker)
    worker.submit_job(second)
    for name in ("f2", "f3", "f4"):
        worker.submit_frame(name)
    recorder.release.set()
    assert recorder.wait(2)
    assert [b.frame.msg for b in recorder.batches] == ["f1", "f4"]
    assert worker.frames_skipped == 2


def test_commands_without_a_frame_expire(make_worker):
    recorder = Recorder()
    worker = make_worker(recorder, command_timeout_s=lambda: 0.3)
    started = time.monotonic()
    worker.submit_job(job("lonely", worker))
    assert recorder.wait(1, timeout=3)
    batch = recorder.batches[0]
    assert batch.frame is None and [j.prompt for j in batch.expired] == ["lonely"]
    assert 0.25 <= time.monotonic() - started < 2.0


def test_queue_is_bounded_and_drops_the_oldest(make_worker):
    recorder = Recorder()
    worker = make_worker(recorder, max_pending=3)
    dropped = [worker.submit_job(job(str(i), worker)) for i in range(5)]
    assert [d.prompt if d else None for d in dropped] == [None, None, None, "0", "1"]
    assert worker.pending_count() == 3
    worker.submit_frame("frame")
    assert recorder.wait(1)
    assert [j.prompt for j in recorder.batches[0].jobs] == ["2", "3", "4"]  # all on one frame


def test_tracked_command_runs_on_every_new_frame_until_cleared(make_worker):
    recorder = Recorder()
    worker = make_worker(recorder)
    tracked = object()
    worker.slot.set_tracked(tracked)
    worker.submit_frame("a")
    assert recorder.wait(1)
    worker.submit_frame("b")
    assert recorder.wait(2)
    assert [b.frame.msg for b in recorder.batches] == ["a", "b"]
    assert all(b.tracked is tracked and not b.jobs for b in recorder.batches)
    assert worker.slot.still_tracked(tracked)
    assert worker.slot.clear_tracked() is tracked and not worker.slot.still_tracked(tracked)
    worker.submit_frame("c")
    assert not recorder.wait(3, timeout=0.3)  # nothing to do with it


def test_handler_exceptions_do_not_kill_the_thread(make_worker):
    errors = []
    calls = []

    def handler(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("boom")

    worker = make_worker(handler, on_error=errors.append)
    worker.submit_job(job("a", worker))
    worker.submit_frame("1")
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.submit_job(job("b", worker))
    worker.submit_frame("2")
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [str(e) for e in errors] == ["boom"] and len(calls) == 2


def test_the_worker_restarts_and_reports_a_failed_startup():
    """A lifecycle node starts the worker on every activation: startup runs on the worker thread first."""
    recorder = Recorder()
    worker = InferenceWorker(recorder)
    threads = []
    worker.start(lambda: threads.append(threading.current_thread().name))
    assert worker.wait_started(5) and worker.startup_error is None and threads == ["xsam_inference"]
    worker.submit_job(job("a", worker))
    worker.submit_frame("1")
    assert recorder.wait(1)
    assert worker.stop(5.0)
    worker.start(lambda: (_ for _ in ()).throw(RuntimeError("no model")))  # a startup that raises
    assert worker.wait_started(5) and str(worker.startup_error) == "no model"
    assert worker.stop(5.0)  # the thread ended after the failed startup: no batch is handled
    worker.submit_job(job("b", worker))
    worker.submit_frame("2")
    assert not recorder.wait(2, timeout=0.3)
    worker.start()  # and it starts again after that
    assert worker.wait_started(5) and recorder.wait(2)
    assert worker.stop(5.0)
