"""Helpers shared by the benchmarks: timing statistics, FLOP counting, machine peak, rooflines, plots,
and the guard rails of an unattended run (time budget, section time limits, atomic result files,
SIGTERM/SIGINT and a hard-deadline watchdog).

Import-safe everywhere (torch is imported inside the functions that need it), so the pure helpers
are unit-tested on any machine (tests/test_bench_helpers.py, tests/test_bench_gpu_all.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import select
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NOT_MEASURED_GPU = "not measured: no GPU in this environment"

# Analytic FLOPs of the released configuration (research/perf-anchors.md section 3; FLOPs = 2 x MACs).
RELEASED_STAGE_TFLOP = {
    "mask_encoder": 2.99 + 0.045 + 0.086,  # SAM ViT-L @1024 + seg projector + conv connector (42.9 GMAC)
    "vision_encoder": 0.66,  # SigLIP2-so400m @384 (26 layers) + visual projector
    "pixel_decoder": 0.22,  # input projections + 6 deformable layers + FPN + mask projection (3.8 + 94.1 + 12.9 GMAC)
    "decoder": 0.053,  # masked-attention decoder, 200 queries (26.6 GMAC)
    "llm_prefill_1800": 13.7,
}

# Dense FP16 tensor peak (TFLOP/s) and DRAM bandwidth (GB/s), research/perf-anchors.md section 2;
# H200 from NVIDIA's H200 datasheet (SXM: 1,979 TFLOP/s FP16 with sparsity = 989.4 dense, 4.8 TB/s;
# NVL: 1,671 with sparsity = 835.5 dense, 4.8 TB/s).
DEVICE_PEAKS = {
    "H100 SXM": {"fp16_tflops": 989.4, "int8_tops": 1978.9, "bandwidth_gbs": 3350.0},
    "H200 SXM": {"fp16_tflops": 989.4, "int8_tops": 1978.9, "bandwidth_gbs": 4800.0},
    "H200 NVL": {"fp16_tflops": 835.5, "int8_tops": 1671.0, "bandwidth_gbs": 4800.0},
    "H100 SXM (measured)": {"fp16_tflops": 798.0, "int8_tops": None, "bandwidth_gbs": 3000.0},
    "AGX Orin 64GB MAXN": {"fp16_tflops": 42.6, "int8_tops": 85.2, "bandwidth_gbs": 204.8},
    "Orin NX 16GB 25W": {"fp16_tflops": 15.0, "int8_tops": 30.1, "bandwidth_gbs": 102.4},
    "Orin NX 16GB Super": {"fp16_tflops": 19.2, "int8_tops": 38.4, "bandwidth_gbs": 102.4},
}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty list."""
    if not values:
        raise ValueError("percentile of an empty list")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(seconds: list[float]) -> dict:
    """p50 / p95 / mean / min in ms and throughput (runs per second at p50)."""
    ms = [1000.0 * s for s in seconds]
    p50 = percentile(ms, 50)
    return {
        "p50_ms": round(p50, 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "runs": len(ms),
        "throughput_per_s": round(1000.0 / p50, 3) if p50 > 0 else None,
    }


def time_call(function: Callable[[], object], repeats: int, warmup: int = 1, synchronize: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` calls (synchronising around each if given)."""
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        function()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return times


def count_flops(function: Callable[[], object]) -> int:
    """FLOPs of one call, counted by `torch.utils.flop_counter.FlopCounterMode` (matmul/conv/attention;
    elementwise ops and grid_sample are not counted, so this is a lower bound)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


def cpu_peak_gflops(size: int = 2048, repeats: int = 5, dtype_name: str = "float32") -> float:
    """Best measured GFLOP/s of a square GEMM with all torch threads (this CPU's practical peak)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = min(time_call(lambda: torch.mm(a, b), repeats, warmup=1))
    return 2.0 * size**3 / best / 1e9


def roofline_ms(flops: float, peak_flops_per_s: float, bytes_moved: float = 0.0, bandwidth_bytes_per_s: float | None = None) -> float:
    """max(FLOPs / peak, bytes / bandwidth) in ms: the floor no implementation can beat."""
    if peak_flops_per_s <= 0:
        raise ValueError("peak must be positive")
    compute = flops / peak_flops_per_s
    memory = bytes_moved / bandwidth_bytes_per_s if bandwidth_bytes_per_s else 0.0
    return 1000.0 * max(compute, memory)


def roofline_multiple(measured_ms: float, bound_ms: float) -> float | None:
    """How many times the roofline bound a measurement is (1.0 = at the bound)."""
    if bound_ms is None or bound_ms <= 0 or measured_ms is None:
        return None
    return round(measured_ms / bound_ms, 2)


def machine_info() -> dict:
    import os

    import torch

    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": model_name,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: `columns` = [(header, key)], missing values shown as '-'."""
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for _, key in columns) + " |" for row in rows]
    return "\n".join(lines)


# -- Unattended runs --------------------------------------------------------------------------------


class SectionTimeout(BaseException):
    """A section's time limit passed (raised in the main thread by `time_limit`).

    A BaseException, like KeyboardInterrupt, so that library code which catches `Exception` (e.g.
    torch.compile wrapping backend errors) cannot swallow it and carry on past the limit.
    """


@dataclass
class Budget:
    """Wall-clock budget of a run, in seconds from `start` (time.perf_counter).

    `reserve_s` at the end is kept free for writing the results: `remaining()` and `allows()` count
    only the time sections may use.
    """

    seconds: float
    reserve_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds sections may still use (negative once overrun)."""
        return self.seconds - self.reserve_s - self.elapsed()

    def allows(self, estimate_s: float = 0.0) -> bool:
        """False once starting something that takes `estimate_s` would overrun."""
        return self.remaining() >= estimate_s


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `SectionTimeout` in the main thread after `seconds` of wall time (SIGALRM, POSIX).

    Python runs the handler between bytecodes, so pure-Python work (torch.compile's tracing and
    code generation, measurement loops) stops on time; a single native call that never returns
    to Python is the watchdog's case (`RunGuard`). Must be entered from the main thread.
    """
    if seconds <= 0:
        raise SectionTimeout("no time left for this section")

    def expired(signum, frame):
        raise SectionTimeout(f"time limit of {seconds:.1f} s reached")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a killed run) sees the old file or the new one, never half.

    Each writer thread uses its own temporary file in the same directory, then `os.replace`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RunGuard:
    """Ends an unattended run with its results written, whatever the main thread is doing.

    A watchdog thread waits for SIGTERM / SIGINT (delivered through `signal.set_wakeup_fd`, so
    they arrive even while the main thread is inside a native call) and for `hard_deadline`
    (a time.perf_counter value). On either it calls `finish(reason)` once, flushes stdout/stderr
    and ends the process with exit status 0 (`os._exit`: no atexit hooks, which a half-finished
    torch.compile worker pool could hang). `stop()` disarms it after a normal finish.

    Args:
        hard_deadline: perf_counter time at which the run is ended regardless.
        finish: writes the results; gets "interrupted by SIGTERM" or "hard deadline reached ...".
        exit: how the process ends (default `os._exit`; injectable for tests of the thread).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, hard_deadline: float, finish: Callable[[str], None], exit: Callable[[int], None] = os._exit) -> None:
        self.hard_deadline = hard_deadline
        self.finish = finish
        self.exit = exit
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pipe: tuple[int, int] | None = None
        self._previous_handlers: dict[int, object] = {}
        self._previous_wakeup_fd = -1

    def start(self) -> None:
        """Install the signal plumbing (main thread only) and start the watchdog."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            # A Python-level handler must exist for the C handler to write to the wakeup fd;
            # it does nothing itself: the watchdog thread acts.
            self._previous_handlers[signum] = signal.signal(signum, lambda *_: None)
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disarm (after the run finished normally) and restore the previous signal handling."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _watch(self) -> None:
        read_fd = self._pipe[0]
        reason = ""
        while not self._stopped.is_set():
            left = self.hard_deadline - time.perf_counter()
            if left <= 0:
                reason = "hard deadline reached while a section was still running (stopped by the watchdog)"
                break
            ready, _, _ = select.select([read_fd], [], [], min(0.25, left))
            if not ready:
                continue
            names = [signal.Signals(b).name for b in os.read(read_fd, 64) if b in self.SIGNALS]
            if names:  # other bytes are SIGALRM from `time_limit`: not ours
                reason = f"interrupted by {names[0]}"
                break
        if self._stopped.is_set():
            return
        try:
            self.finish(reason)
        except BaseException:  # the exit below must happen whatever finish did
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            self.exit(0)
