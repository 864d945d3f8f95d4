"""Shared pytest fixtures (small and generic; ROS is imported lazily, only by fixtures that need it).

Fixtures
--------
repo_root        pathlib.Path of the repository root.
ros_domain_id    a ROS_DOMAIN_ID in 1..100 for this test (from the pid and a counter).
ros_namespace    a topic namespace unique to this test, e.g. "/xsam_test_1234_3".
ros_env          environment dict for subprocesses that use ROS: the current environment
                 plus ROS_DOMAIN_ID=<ros_domain_id>, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST,
                 the repository root first on PYTHONPATH, PYTHONUNBUFFERED=1.
spawn_python     factory: spawn_python(args, env=None, cwd=None) starts ``sys.executable
                 *args`` (the venv's Python) with ``ros_env`` by default, stdout/stderr
                 piped as text; every process still running at teardown is killed.
run_python       run_python(code, env=None, cwd=None, timeout=120) runs ``python -c code``
                 to completion and returns the subprocess.CompletedProcess (text).
rclpy_context    an initialised rclpy Context on ``ros_domain_id`` for in-process nodes
                 (``rclpy.create_node(name, context=rclpy_context)``); shut down at teardown.
"""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

_counter = itertools.count()


def _next_index():
    return next(_counter)


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture
def ros_domain_id():
    # Different pids (parallel pytest runs) and successive tests get different ids.
    return 1 + (os.getpid() * 7 + _next_index()) % 100


@pytest.fixture
def ros_namespace():
    return f'/xsam_test_{os.getpid()}_{_next_index()}'


@pytest.fixture
def ros_env(ros_domain_id):
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(ros_domain_id)
    # Discovery stays on this host (Jazzy and later; Humble uses ROS_LOCALHOST_ONLY).
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.pop('ROS_LOCALHOST_ONLY', None)
    env.pop('ROS_STATIC_PEERS', None)
    # The tree under test comes first, whatever .pth files the venv carries.
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get('PYTHONPATH', '')) if p)
    env['PYTHONUNBUFFERED'] = '1'
    return env


@pytest.fixture
def spawn_python(ros_env):
    processes = []

    def spawn(args, env=None, cwd=None, **popen_kwargs):
        popen_kwargs.setdefault('stdout', subprocess.PIPE)
        popen_kwargs.setdefault('stderr', subprocess.PIPE)
        popen_kwargs.setdefault('text', True)
        proc = subprocess.Popen(
            [sys.executable, *[str(a) for a in args]],
            env=ros_env if env is None else env,
            cwd=str(cwd or REPO_ROOT),
            **popen_kwargs)
        processes.append(proc)
        return proc

    yield spawn

    for proc in processes:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


@pytest.fixture
def run_python(ros_env):
    def run(code, env=None, cwd=None, timeout=120):
        return subprocess.run(
            [sys.executable, '-c', code],
            env=ros_env if env is None else env,
            cwd=str(cwd or REPO_ROOT),
            capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def rclpy_context(ros_domain_id):
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
