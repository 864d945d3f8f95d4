"""Start NVIDIA Triton Inference Server on this machine from the `nvidia-pytriton` wheel (tests, benchmarks).

    with LocalTritonServer(repository) as server:      # binds 127.0.0.1 on free ports
        stages = TritonStages(config, TritonOptions(url=server.grpc_url))

The PyPI package `nvidia-pytriton` bundles `tritonserver` (2.51) with the Python backend only,
so a repository written with `platform="python"` (ONNX Runtime inside the Python backend) is
what it can serve. Production servers run NVIDIA's container instead (docs/fleet.md).

What this takes care of (each measured on this machine):

* The Python backend's stub is linked against `libpython3.X.so.1.0` and would load the system's
  copy (3.11.2 here) instead of the running interpreter's (3.11.7), and then fail on
  `RLock._recursion_count`: the interpreter's own LIBDIR goes first on LD_LIBRARY_PATH.
* The stub's embedded Python finds this virtual environment through PATH (its `bin` first).
* The ROS 2 wheels' `ros_wheels_bootstrapper.pth` re-executes every interpreter that starts in
  this venv (`os.execve(sys.executable, ...)`), which the stub's embedded interpreter cannot do
  ("argv must not be empty"): `_ROS_WHEELS_BOOTSTRAP_COMPLETE=1` tells it that it already ran.
* The stub for the running Python version (`python_backend_stubs/3.X`) is linked into a private
  backend directory; nothing inside the installed package is modified.
* Every server binds 127.0.0.1 on ports checked free just before the start; a port taken
  meanwhile (or any start failure) ends in a RuntimeError with the server's log tail within
  `start_timeout_s`, never a hang.
* The server runs in its own session (a terminal's Ctrl-C does not reach it); `stop()` sends
  SIGTERM (Triton's clean shutdown: it unloads the models and the stubs remove their shared
  memory), then SIGKILL after `exit_timeout_s`; `kill()` is the crash (SIGKILL at once). Each
  server has its own shared-memory prefix, so a crashed one cannot disturb the next.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

HOST = "127.0.0.1"


def bundled_server_dir() -> Path:
    """`<site-packages>/pytriton/tritonserver` of the installed nvidia-pytriton wheel (not imported)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed; it ships the Triton server the tests use (make setup installs it).")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


class LocalTritonServer:
    """One `tritonserver` process serving `repository` on 127.0.0.1.

    Args:
        repository: a Triton model repository (e.g. `write_triton_repository(..., platform="python")`).
        grpc_port / http_port: 0 = pick free ports (kept across `restart()`).
        start_timeout_s: deadline for every model to be ready.
        exit_timeout_s: grace period of a clean stop before SIGKILL.
        log_path: server log (default: a file in the private work directory).
        extra_args: more `tritonserver` options (e.g. `--grpc-use-ssl=true ...`).
    """

    def __init__(
        self,
        repository: str | Path,
        grpc_port: int = 0,
        http_port: int = 0,
        start_timeout_s: float = 120.0,
        exit_timeout_s: float = 10.0,
        log_path: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.repository = Path(repository)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.start_timeout_s = start_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="xsam-triton-"))
        self.log_path = Path(log_path) if log_path else self.workdir / "tritonserver.log"
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self._shm_prefix = ""
        self._backends = self._backend_directory()

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    def _backend_directory(self) -> Path:
        server = bundled_server_dir()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub}).")
        python = self.workdir / "backends" / "python"
        python.mkdir(parents=True)
        for source in (server / "backends" / "python" / "libtriton_python.so",
                       server / "backends" / "python" / "triton_python_backend_utils.py", stub):
            (python / source.name).symlink_to(source)
        return python.parent

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
        return env

    def command(self) -> list[str]:
        self._shm_prefix = f"xsam{uuid.uuid4().hex[:12]}_"
        return [
            str(bundled_server_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends}",
            f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
            f"--http-address={HOST}", f"--http-port={self.http_port}",
            "--allow-metrics=false",
            f"--exit-timeout-secs={max(1, int(self.exit_timeout_s) - 1)}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            *self.extra_args,
        ]

    def start(self) -> LocalTritonServer:
        """Start the server and wait until it and every model are ready (RuntimeError otherwise)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"The Triton server at {self.grpc_url} is already running (pid {self.process.pid}).")
        busy = [port for port in (self.grpc_port, self.http_port) if port_in_use(port)]
        if busy:
            raise RuntimeError(f"Port(s) {busy} on {HOST} are in use (a stale server?); stop it or pick other ports.")
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), start_new_session=True,
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import tritonclient.http as httpclient

        deadline = time.monotonic() + self.start_timeout_s
        client = httpclient.InferenceServerClient(self.http_url, connection_timeout=1.0, network_timeout=2.0)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited with {self.process.returncode} during start-up:\n{self.log_tail()}")
                try:
                    if client.is_server_ready():
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        self.kill()
        raise RuntimeError(f"tritonserver at {self.grpc_url} was not ready within {self.start_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Clean stop: SIGTERM, then SIGKILL after `exit_timeout_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.exit_timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._remove_shared_memory()

    def kill(self) -> None:
        """Crash: SIGKILL the server's process group (server + Python-backend stubs) at once."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        """What killed stubs could not remove: this server's own /dev/shm regions (its unique prefix)."""
        if self._shm_prefix:
            for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                region.unlink(missing_ok=True)

    def restart(self) -> None:
        """Start again on the same ports (after `stop()` or `kill()`)."""
        deadline = time.monotonic() + 10
        while any(port_in_use(p) for p in (self.grpc_port, self.http_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
