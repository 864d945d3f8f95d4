"""Helpers shared by the benchmarks: timing statistics, FLOP counting, machine peak, rooflines, plots.

Import-safe everywhere (torch is imported inside the functions that need it), so the pure helpers
are unit-tested on any machine (tests/test_bench_helpers.py).
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
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

# Dense FP16 tensor peak (TFLOP/s) and DRAM bandwidth (GB/s), research/perf-anchors.md section 2.
DEVICE_PEAKS = {
    "H100 SXM": {"fp16_tflops": 989.4, "int8_tops": 1978.9, "bandwidth_gbs": 3350.0},
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
