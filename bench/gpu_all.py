"""Everything the acceleration issue's H100 targets list, in ONE unattended run on an NVIDIA GPU.

Full-size X-SAM (`XSamConfig.released()`, random weights, built on the GPU: nothing is
downloaded), batch 1, warm, p50, in this order (cheap eager numbers first, risky compiles last):

    gemm_peak              bf16 GEMM TFLOP/s and device-to-device copy GB/s (roofline basis)
    build                  the released model on the GPU in bf16, SDPA attention
    encoders               SAM ViT-L @1024 + connector; SigLIP2-so400m @384 + projector; seg projector
    seg_decoder            pixel decoder + mask decoder (1 condition)
    prefill                Phi-3 over ~1,800 tokens (`XSamLanguageModel.hidden_states`)
    decode                 ms/token at that context, dynamic KV cache (eager)
    predictor              command -> masks (referring, image already received) and tracking
                           frames/s through `create_predictor(backend="torch")`; peak GPU memory
    decode_compiled        static KV cache + torch.compile "reduce-overhead" decode step (CUDA graphs)
    seg_decoder_compiled   mask decoder under torch.compile "reduce-overhead"
    tensorrt               FP16 engines of the image graphs via `create_predictor(backend="tensorrt")`,
                           only if `tensorrt` and `onnx` import

    timeout 580 python bench/gpu_all.py        # ~9 min; writes bench/results/gpu_<gpu-name>.json + .png
    python bench/gpu_all.py --dry-run          # the same code on the tiny config on the CPU (~30-60 s)
    python bench/gpu_all.py --plot-only bench/results/gpu_nvidia-h200.json   # redraw the figure

Unattended by design: every section estimates its cost and is skipped with the reason when it
would overrun `--budget-s`; a running section is stopped at its limit (SIGALRM: measurement loops
shorten themselves first, a hung torch.compile is interrupted); SIGTERM / SIGINT or a native call
that never returns end the run through a watchdog thread. The JSON is rewritten atomically after
every section, so an interrupted run still leaves numbers, and the process exits 0 whenever it
wrote it (its "status" says how far it got). `--dry-run` runs exactly these functions on
`XSamConfig.tiny()` on the CPU; tests/test_bench_gpu_all.py runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    DEVICE_PEAKS,
    RELEASED_STAGE_TFLOP,
    RESULTS,
    Budget,
    RunGuard,
    SectionTimeout,
    atomic_write_text,
    latency_stats,
    peak_rss_mb,
    roofline_ms,
    roofline_multiple,
    time_limit,
)

PREFILL_TOKENS = 1800
SCHEMA = 2

# (metric, unit, issue target, research stretch goal, better): the targets of the acceleration
# issue (#8) and the H100 stretch column of research/perf-anchors.md section 7.
H100_TARGETS = (
    ("sam_encoder_ms", "ms", 6.0, 3.5, "lower"),
    ("siglip_ms", "ms", 1.5, 1.0, "lower"),
    ("seg_decoder_ms", "ms", 2.0, 1.0, "lower"),
    ("prefill_ms", "ms", 22.0, 12.0, "lower"),
    ("decode_ms_per_token", "ms", 3.5, 1.8, "lower"),
    ("command_to_masks_ms", "ms", 40.0, 20.0, "lower"),
    ("tracking_fps", "frames/s", 100.0, 200.0, "higher"),
    ("peak_gpu_memory_gb", "GB", 12.0, None, "lower"),
)

# Roofline work per metric (TFLOP), from the analytic counts of the released configuration.
METRIC_TFLOP = {
    "sam_encoder_ms": RELEASED_STAGE_TFLOP["mask_encoder"],
    "siglip_ms": RELEASED_STAGE_TFLOP["vision_encoder"],
    "seg_decoder_ms": RELEASED_STAGE_TFLOP["pixel_decoder"] + RELEASED_STAGE_TFLOP["decoder"],
    "prefill_ms": RELEASED_STAGE_TFLOP["llm_prefill_1800"],
    "command_to_masks_ms": 17.5,
}
DECODE_BYTES_BF16 = 8.15e9  # 7.44 GB weights + 0.71 GB KV at 1.8k context (perf-anchors 3.5)


@dataclass(frozen=True)
class SectionPlan:
    """One section: expected and maximum wall time (s) on the GPU and in the dry run, what it needs.

    A section starts only when its estimate fits in the remaining budget; it is stopped at
    min(limit, remaining budget). `needs`: sections that must have ended "ok"; `modules`: Python
    modules it imports (missing -> skipped with the install hint).
    """

    name: str
    gpu_estimate_s: float
    gpu_limit_s: float
    dry_estimate_s: float
    dry_limit_s: float
    needs: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


SECTIONS = (
    SectionPlan("gemm_peak", 10, 60, 1, 30),
    SectionPlan("build", 60, 180, 5, 60),
    SectionPlan("encoders", 20, 60, 2, 30, ("build",)),
    SectionPlan("seg_decoder", 15, 60, 2, 30, ("build",)),
    SectionPlan("prefill", 15, 60, 1, 30, ("build",)),
    SectionPlan("decode", 30, 90, 2, 30, ("build",)),
    SectionPlan("predictor", 45, 120, 5, 60, ("build",), ("cv2", "PIL")),
    # decode first: its CUDA graph is the largest expected gain (eager decode is launch-bound).
    SectionPlan("decode_compiled", 120, 200, 15, 120, ("build",)),
    SectionPlan("seg_decoder_compiled", 90, 150, 15, 120, ("build",)),
    SectionPlan("tensorrt", 300, 400, 5, 60, ("build",), ("tensorrt", "onnx", "cv2", "PIL")),
)
SECTION_NAMES = tuple(plan.name for plan in SECTIONS)
COMPILE_SECTIONS = ("decode_compiled", "seg_decoder_compiled")
INSTALL_HINTS = {"cv2": "opencv-python-headless", "PIL": "pillow", "tensorrt": "tensorrt", "onnx": "onnx",
                 "matplotlib": "matplotlib"}


@dataclass(frozen=True)
class Profile:
    """What differs between the GPU run and the dry run: sizes, device, dtype, repeats, budget."""

    name: str  # "gpu" or "dry-run"
    device: str
    dtype: str
    repeats: int
    warmup: int
    prefill_tokens: int
    decode_tokens: int
    frame_size: tuple[int, int]  # (width, height) of the camera frames
    gemm_size: int
    copy_mb: int
    compile_backend: str
    budget_s: float
    reserve_s: float
    section_limits: dict[str, float] = field(default_factory=dict)
    sections: tuple[str, ...] = SECTION_NAMES

    @property
    def dry_run(self) -> bool:
        return self.name == "dry-run"

    def estimate(self, plan: SectionPlan) -> float:
        return plan.dry_estimate_s if self.dry_run else plan.gpu_estimate_s

    def limit(self, plan: SectionPlan) -> float:
        default = plan.dry_limit_s if self.dry_run else plan.gpu_limit_s
        return self.section_limits.get(plan.name, default)


def _section_limit(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    if name not in SECTION_NAMES or not seconds:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS with NAME one of {', '.join(SECTION_NAMES)}, got {text!r}")
    try:
        value = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"SECONDS must be a number, got {seconds!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"SECONDS must be > 0, got {value}")
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="run every section on XSamConfig.tiny() on the CPU (small sizes, few repeats)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 20; dry run 3)")
    parser.add_argument("--decode-tokens", type=int, default=None, help="tokens per decode measurement (default 32; dry run 4)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="wall time the whole run may take, model build included (default 540; dry run 300)")
    parser.add_argument("--sections", default=",".join(SECTION_NAMES),
                        help="comma-separated subset to run, in the fixed order (default: all)")
    parser.add_argument("--section-limit", type=_section_limit, action="append", default=[], metavar="NAME=SECONDS",
                        help="override one section's hard time limit (repeatable)")
    parser.add_argument("--compile-backend", choices=["inductor", "aot_eager", "eager"], default=None,
                        help="torch.compile backend (default inductor with mode reduce-overhead; dry run aot_eager)")
    parser.add_argument("--skip-tensorrt", action="store_true")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile / CUDA-graph sections")
    parser.add_argument("--output-dir", default=None,
                        help=f"where the JSON and PNG go (default {RESULTS}; dry run: a temporary directory)")
    parser.add_argument("--engine-cache-dir", default=None, help="TensorRT engines (default: a temporary directory)")
    parser.add_argument("--plot-only", metavar="JSON", default=None, help="only redraw the figure of a results file")
    args = parser.parse_args(argv)
    for name in ("repeats", "decode_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    unknown = [s for s in args.sections.split(",") if s and s not in SECTION_NAMES]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTION_NAMES)}")
    return args


def make_profile(args: argparse.Namespace) -> Profile:
    """The run's sizes and limits: the GPU defaults, or the dry run's (tiny config, CPU)."""
    chosen = [s for s in args.sections.split(",") if s]
    skipped = set(COMPILE_SECTIONS if args.skip_compile else ()) | ({"tensorrt"} if args.skip_tensorrt else set())
    sections = tuple(name for name in SECTION_NAMES if name in chosen and name not in skipped)
    dry = args.dry_run
    return Profile(
        name="dry-run" if dry else "gpu",
        device="cpu" if dry else "cuda",
        dtype=args.dtype,
        repeats=args.repeats or (3 if dry else 20),
        warmup=1 if dry else 2,
        prefill_tokens=48 if dry else PREFILL_TOKENS,
        decode_tokens=args.decode_tokens or (4 if dry else 32),
        frame_size=(320, 240) if dry else (1280, 720),
        gemm_size=256 if dry else 8192,
        copy_mb=16 if dry else 1024,
        compile_backend=args.compile_backend or ("aot_eager" if dry else "inductor"),
        budget_s=args.budget_s or (300.0 if dry else 540.0),
        reserve_s=5.0 if dry else 20.0,
        section_limits=dict(args.section_limit),
        sections=sections,
    )


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (file-name safe)."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split()) or "gpu"


def device_peaks(gpu_name: str) -> dict | None:
    """Published peaks for a known GPU name, else None (then the measured GEMM / copy figures are used)."""
    lowered = gpu_name.lower()
    if "h100" in lowered:
        return DEVICE_PEAKS["H100 SXM"]
    if "h200" in lowered:
        return DEVICE_PEAKS["H200 NVL" if "nvl" in lowered else "H200 SXM"]
    if "orin" in lowered:
        return DEVICE_PEAKS["AGX Orin 64GB MAXN"]
    return None


def roofline_for(metric: str, value: float | None, peak_tflops: float, bandwidth_gbs: float) -> dict:
    """Bound (ms) and the measured multiple of it; fps metrics are compared as ms per frame."""
    if value is None:
        return {"roofline_ms": None, "x_roofline": None}
    if metric == "decode_ms_per_token":
        bound = roofline_ms(0.0, 1.0, DECODE_BYTES_BF16, bandwidth_gbs * 1e9)
        return {"roofline_ms": round(bound, 3), "x_roofline": roofline_multiple(value, bound)}
    if metric == "tracking_fps":
        tflop = RELEASED_STAGE_TFLOP["mask_encoder"] + RELEASED_STAGE_TFLOP["pixel_decoder"] + RELEASED_STAGE_TFLOP["decoder"]
        bound = roofline_ms(tflop * 1e12, peak_tflops * 1e12)
        return {"roofline_ms": round(bound, 3), "x_roofline": roofline_multiple(1000.0 / value, bound) if value else None}
    if metric not in METRIC_TFLOP:
        return {"roofline_ms": None, "x_roofline": None}
    bound = roofline_ms(METRIC_TFLOP[metric] * 1e12, peak_tflops * 1e12)
    return {"roofline_ms": round(bound, 3), "x_roofline": roofline_multiple(value, bound)}


def evaluate_targets(metrics: dict[str, float | None], peak_tflops: float, bandwidth_gbs: float) -> list[dict]:
    """One row per H100 target: value, issue target, research goal, pass/fail, roofline multiple."""
    rows = []
    for metric, unit, target, goal, better in H100_TARGETS:
        value = metrics.get(metric)

        def meets(limit):
            if value is None or limit is None:
                return None
            return value <= limit if better == "lower" else value >= limit

        rows.append({"metric": metric, "unit": unit, "value": value, "issue_target": target, "meets_target": meets(target),
                     "research_goal": goal, "meets_goal": meets(goal), **roofline_for(metric, value, peak_tflops, bandwidth_gbs)})
    return rows


def format_rows(rows: list[dict]) -> str:
    """Plain-text table for the console (and the README)."""
    def show(value, digits=2):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    header = f"{'metric':24s} {'value':>10s} {'unit':8s} {'target':>8s} {'ok':>4s} {'goal':>8s} {'ok':>4s} {'x roof':>7s}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['metric']:24s} {show(row['value']):>10s} {row['unit']:8s} {show(row['issue_target'], 1):>8s} "
            f"{show(row['meets_target']):>4s} {show(row['research_goal'], 1):>8s} {show(row['meets_goal']):>4s} "
            f"{show(row['x_roofline']):>7s}"
        )
    return "\n".join(lines)


def missing_module(name: str) -> str | None:
    """None when `name` imports, else why not (with the package to install)."""
    try:
        importlib.import_module(name)
    except Exception as error:  # ImportError, or a broken install raising OSError / RuntimeError
        return f"needs the Python module {name} (pip install {INSTALL_HINTS.get(name, name)}): {error.__class__.__name__}: {error}"
    return None


def compile_prerequisite(profile: Profile) -> str | None:
    """Why torch.compile with `profile.compile_backend` cannot run here, else None.

    Inductor compiles generated code: Triton kernels on CUDA (with a launcher built by the host C
    compiler) and C++ on the CPU; a machine without them fails inside the first compiled call, so
    they are checked before a compile section starts.
    """
    if profile.compile_backend != "inductor":
        return None
    if profile.device == "cuda":
        return missing_module("triton") or triton_launcher_prerequisite()
    if not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "torch.compile (inductor on the CPU) needs a C++ compiler: none of $CXX, c++, g++, clang++ found"
    return None


def triton_launcher_prerequisite() -> str | None:
    """Why Triton cannot build its kernel launcher here, else None.

    Triton (3.x, torch >= 2.4) compiles a small CPython extension per kernel signature with $CC,
    else gcc, else clang, against the interpreter's Python.h (triton/runtime/build.py); without
    either, every compiled call fails.
    """
    import sysconfig

    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    if not compiler or not shutil.which(compiler):
        return "torch.compile (inductor, Triton) needs a C compiler for its launcher: set $CC or install gcc or clang"
    scheme = sysconfig.get_default_scheme()
    include = sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"torch.compile (inductor, Triton) needs the Python headers: {include}/Python.h is missing (install python3-dev)"
    return None


def environment_info(profile: Profile) -> dict:
    """Versions and optional packages of this machine (what the run could use)."""
    import importlib.metadata as metadata

    import torch

    def version(distribution: str) -> str | None:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return None

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": version("transformers"),
        "packages": {name: version(name) for name in (
            "numpy", "tokenizers", "safetensors", "pillow", "opencv-python-headless", "opencv-python", "triton",
            "matplotlib", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")},
        "cpu_count": os.cpu_count(),
        "compile_backend": profile.compile_backend,
        "compile_prerequisite": compile_prerequisite(profile) or "ok",
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
    }
    if profile.device == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), compute_capability=f"{properties.major}.{properties.minor}",
                    gpu_memory_gb=round(properties.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    return info


# -- timing --------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def measure(function: Callable[[], object], repeats: int, warmup: int, device: str, stop_at: float | None = None,
            setup: Callable[[], object] | None = None, gpu_clock: bool = True) -> list[float]:
    """Seconds per call of `function` over up to `repeats` timed calls after `warmup` calls.

    On CUDA with `gpu_clock`, CUDA events time the GPU work; otherwise wall time with a
    synchronisation after each call. `setup` runs untimed before every call. When `stop_at`
    (a perf_counter time) would be passed by one more call, measuring stops early: at least one
    timed call is always made (the caller records how many ran).
    """
    import torch

    for _ in range(warmup):
        if setup is not None:
            setup()
        function()
    synchronize(device)
    times: list[float] = []
    use_events = device == "cuda" and gpu_clock
    for _ in range(repeats):
        if setup is not None:
            setup()
            synchronize(device)
        if use_events:
            start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_event.record()
            function()
            end_event.record()
            end_event.synchronize()
            times.append(start_event.elapsed_time(end_event) / 1000.0)
        else:
            start = time.perf_counter()
            function()
            synchronize(device)
            times.append(time.perf_counter() - start)
        if stop_at is not None and time.perf_counter() + max(times[-1], 1e-3) > stop_at:
            break
    return times


# -- the run -------------------------------------------------------------------------------------


class SectionContext:
    """Handed to a running section: its deadline, and fair shares of it for several measurements.

    A section that makes n measurements sets `left = n` first; each `share()` then gives the next
    one 90 % of an equal part of the time still left.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.left = 1

    def share(self) -> float:
        """perf_counter time by which the next of the remaining measurements should stop."""
        now = time.perf_counter()
        stop_at = now + 0.9 * (self.deadline - now) / self.left
        self.left = max(1, self.left - 1)
        return stop_at


class BenchRun:
    """The state of one run: its report (written after every section), the model and shared inputs."""

    def __init__(self, args: argparse.Namespace, profile: Profile, output_dir: Path) -> None:
        self.args = args
        self.profile = profile
        self.budget = Budget(profile.budget_s, reserve_s=profile.reserve_s)
        self.output_dir = output_dir
        self.json_path: Path | None = None
        self.model = None
        self.torch_dtype = None
        self._inputs: dict | None = None
        self.report: dict = {
            "schema": SCHEMA, "status": "running", "profile": profile.name,
            "command": " ".join(["python", "bench/gpu_all.py", *getattr(args, "argv", [])]),
            "gpu": None, "device": profile.device, "dtype": profile.dtype, "repeats": profile.repeats,
            "budget_s": profile.budget_s, "elapsed_s": 0.0, "environment": {}, "sections": {}, "errors": {},
            "details": {}, "metrics": {}, "roofline_basis": None, "targets": [],
        }
        self.current_section: str | None = None
        self._write_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        self._finished = False
        self._plot_cost_s = 0.0
        self._drawn_metrics: dict | None = None

    # -- results ---------------------------------------------------------------------------------

    @property
    def metrics(self) -> dict:
        return self.report["metrics"]

    @property
    def details(self) -> dict:
        return self.report["details"]

    def roofline_basis(self) -> dict:
        gpu = self.report.get("gpu") or ""
        peaks = device_peaks(gpu) if gpu else None
        measured = self.details.get("gemm_peak", {})
        if peaks:
            return {"peak_tflops": peaks["fp16_tflops"], "bandwidth_gbs": peaks["bandwidth_gbs"],
                    "source": "published dense peak (common.DEVICE_PEAKS)"}
        return {"peak_tflops": measured.get("gemm_tflops") or 1.0, "bandwidth_gbs": measured.get("copy_gbs") or 1.0,
                "source": "measured GEMM and device copy (gemm_peak section)"}

    def snapshot(self) -> str:
        """The report as JSON text (targets recomputed); retried if another thread mutates it meanwhile."""
        for _ in range(5):
            try:
                self.report["elapsed_s"] = round(self.budget.elapsed(), 1)
                basis = self.roofline_basis()
                self.report["roofline_basis"] = basis
                self.report["targets"] = evaluate_targets(dict(self.metrics), basis["peak_tflops"], basis["bandwidth_gbs"])
                return json.dumps(self.report, indent=2, default=str) + "\n"
            except RuntimeError:  # "dictionary changed size during iteration"
                time.sleep(0.05)
        return json.dumps({k: str(v) for k, v in self.report.items()}, indent=2) + "\n"

    def write(self, draw: bool = True) -> None:
        """Rewrite the JSON (atomically), then the figure when `draw` and drawing it has been cheap (< 2 s)."""
        if self.json_path is None:
            return
        if not self._write_lock.acquire(timeout=10):
            return
        try:
            atomic_write_text(self.json_path, self.snapshot())
        finally:
            self._write_lock.release()
        if draw and self._plot_cost_s < 2.0 and self.metrics != self._drawn_metrics:
            self.draw()

    def draw(self) -> None:
        """Redraw the figure; a failure is recorded in the report, never raised (the numbers matter more)."""
        started = time.perf_counter()
        self._drawn_metrics = dict(self.metrics)
        try:
            reason = draw_figure(self.report, self.json_path.with_suffix(".png"))
        except Exception as error:
            reason = f"failed: {error.__class__.__name__}: {error}; redraw with --plot-only"
        self.report["plot"] = reason or str(self.json_path.with_suffix(".png").name)
        self._plot_cost_s = time.perf_counter() - started

    def finish(self, status: str) -> None:
        """Final write, figure and console table; runs once (main thread or watchdog, whichever first)."""
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            if self.current_section is not None and status != "complete":
                self.report["sections"].setdefault(self.current_section, {}).update(
                    status="interrupted", reason=status, seconds=round(time.perf_counter() - self._section_started, 1))
            for record in self.report["sections"].values():
                if record["status"] == "pending":
                    record.update(status="not reached", reason=status)
            self.report["status"] = status
            if self.json_path is None:
                self.json_path = self.output_dir / "gpu_unknown.json"
            self.write(draw=False)
            self.draw()
            self.write(draw=False)  # records the figure's outcome
            print()
            print(format_rows(self.report["targets"]))
            print(f"\nstatus: {status}; {self.budget.elapsed():.0f} s")
            for name, record in self.report["sections"].items():
                print(f"  {name:22s} {record['status']}" + (f": {record['reason']}" if record.get("reason") else ""))
            print(f"wrote {self.json_path} ({self.report.get('plot')})", flush=True)

    # -- sections --------------------------------------------------------------------------------

    def run_section(self, plan: SectionPlan, function: Callable[[SectionContext], dict | None]) -> None:
        """Run one section within its limit and record what happened; never raises except on a signal."""
        sections = self.report["sections"]
        estimate = self.profile.estimate(plan)
        limit = self.profile.limit(plan)
        record = {"status": "skipped", "reason": "", "estimate_s": estimate, "limit_s": limit, "seconds": 0.0}
        unmet = [need for need in plan.needs if sections.get(need, {}).get("status") != "ok"]
        missing = next((m for m in (missing_module(name) for name in plan.modules) if m), None)
        if unmet:
            record["reason"] = f"needs section(s) {', '.join(unmet)}, which did not end ok"
        elif missing:
            record["reason"] = missing
        elif plan.name in COMPILE_SECTIONS and compile_prerequisite(self.profile):
            record["reason"] = compile_prerequisite(self.profile)
        elif plan.name == "tensorrt" and self.profile.device != "cuda":
            record["reason"] = "TensorRT needs a CUDA device"
        elif not self.budget.allows(estimate):
            record["reason"] = f"time budget: needs ~{estimate:.0f} s, {max(0.0, self.budget.remaining()):.0f} s left"
        else:
            seconds = min(limit, self.budget.remaining())
            self.current_section, self._section_started = plan.name, time.perf_counter()
            print(f"[{self.budget.elapsed():6.1f} s] {plan.name} ... (estimate {estimate:.0f} s, limit {seconds:.0f} s)", flush=True)
            summary: dict | None = None
            try:
                with time_limit(seconds):
                    summary = function(SectionContext(time.perf_counter() + seconds))
                record.update(status="ok")
            except SectionTimeout as error:
                record.update(status="stopped", reason=f"{error}; numbers measured before the stop are kept")
            except Exception as error:  # record and go on: one failing section must not lose the others
                self.report["errors"][plan.name] = f"{error.__class__.__name__}: {error}\n{traceback.format_exc()[-3000:]}"
                record.update(status="failed", reason=f"{error.__class__.__name__}: {str(error)[:300]}")
            record["seconds"] = round(time.perf_counter() - self._section_started, 1)
            self.current_section = None
            try:
                self.cleanup(plan.name)
            except Exception as error:  # e.g. a CUDA error surfacing late: recorded, the run goes on
                self.report["errors"][f"{plan.name}.cleanup"] = f"{error.__class__.__name__}: {error}"
            if summary:
                record["summary"] = summary
        sections[plan.name] = record
        self.write()
        shown = ", ".join(f"{k}={v}" for k, v in (record.get("summary") or {}).items())
        print(f"[{self.budget.elapsed():6.1f} s] {plan.name}: {record['status']} in {record['seconds']:.1f} s"
              + (f" - {shown}" if shown else "") + (f" ({record['reason']})" if record["reason"] else ""), flush=True)

    def cleanup(self, name: str) -> None:
        """Free what a section left (compiled graphs and their CUDA-graph pools after a compile section)."""
        import torch

        if name in COMPILE_SECTIONS:
            torch._dynamo.reset()
        gc.collect()
        if self.profile.device == "cuda":
            torch.cuda.empty_cache()

    def execute(self) -> None:
        import torch

        self.report["environment"] = environment_info(self.profile)
        if self.profile.device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    "torch.cuda.is_available() is False: no usable NVIDIA GPU (check `nvidia-smi` and that the "
                    f"driver supports CUDA {torch.version.cuda}); nothing was measured.")
            self.report["gpu"] = torch.cuda.get_device_name(0)
        else:
            self.report["gpu"] = "cpu-dry-run"
        self.json_path = self.output_dir / f"gpu_{gpu_slug(self.report['gpu'])}.json"
        self.torch_dtype = getattr(torch, self.profile.dtype)
        torch.set_float32_matmul_precision("high")
        self.write()
        functions = {
            "gemm_peak": self.section_gemm_peak, "build": self.section_build, "encoders": self.section_encoders,
            "seg_decoder": self.section_seg_decoder, "prefill": self.section_prefill, "decode": self.section_decode,
            "predictor": self.section_predictor, "decode_compiled": self.section_decode_compiled,
            "seg_decoder_compiled": self.section_seg_decoder_compiled, "tensorrt": self.section_tensorrt,
        }
        for plan in SECTIONS:  # the whole plan is in the file from the start
            selected = plan.name in self.profile.sections
            self.report["sections"][plan.name] = {
                "status": "pending" if selected else "skipped", "reason": "" if selected else "not selected (--sections / --skip-*)",
                "estimate_s": self.profile.estimate(plan), "limit_s": None, "seconds": 0.0}
        for plan in SECTIONS:
            if plan.name in self.profile.sections:
                self.run_section(plan, functions[plan.name])

    def record(self, key: str, samples: list[float], requested: int) -> dict:
        stats = latency_stats(samples)
        if len(samples) < requested:
            stats["shortened"] = f"{len(samples)} of {requested} runs (section deadline)"
        self.details[key] = stats
        return stats

    def timed(self, key: str, function, context: SectionContext, **options) -> float:
        """Measure `function` with the profile's repeats, record its stats under `key`, return p50 ms."""
        samples = measure(function, self.profile.repeats, options.pop("warmup", self.profile.warmup), self.profile.device,
                          stop_at=context.share(), **options)
        return self.record(key, samples, self.profile.repeats)["p50_ms"]

    def inputs(self) -> dict:
        """Random inputs of the model's sizes, on the model's device (made once)."""
        import torch

        if self._inputs is None:
            config, device, dtype = self.model.config, self.profile.device, self.torch_dtype
            generator = torch.Generator().manual_seed(0)
            sam_side, siglip_side = config.mask_encoder.image_size, config.vision.image_size
            self._inputs = {
                "sam_pixels": torch.randn(1, 3, sam_side, sam_side, generator=generator).to(device),
                "siglip_pixels": torch.randn(1, 3, siglip_side, siglip_side, generator=generator).to(device),
                "conditions": torch.randn(1, 1, config.decoder.hidden_dim, generator=generator).to(device, dtype),
                "seg": torch.randn(1, config.decoder.hidden_dim, generator=generator).to(device, dtype),
                "embeds": torch.randn(self.profile.prefill_tokens, config.language.hidden_size, generator=generator).to(device, dtype),
            }
        return self._inputs

    def section_gemm_peak(self, context: SectionContext) -> dict:
        import torch

        size, device = self.profile.gemm_size, self.profile.device
        a = torch.randn(size, size, device=device, dtype=self.torch_dtype)
        b = torch.randn(size, size, device=device, dtype=self.torch_dtype)
        gemm = measure(lambda: a @ b, 10, 2, device, stop_at=context.share())
        elements = self.profile.copy_mb * 2**20 // 4
        source = torch.empty(elements, device=device, dtype=torch.float32)
        target = torch.empty_like(source)
        copy = measure(lambda: target.copy_(source), 10, 2, device, stop_at=context.share())
        result = {"gemm_size": size, "gemm_tflops": round(2 * size**3 / min(gemm) / 1e12, 4),
                  "copy_gbs": round(2 * source.numel() * 4 / min(copy) / 1e9, 1)}  # read + write
        self.details["gemm_peak"] = result
        return {"gemm_tflops": result["gemm_tflops"], "copy_gbs": result["copy_gbs"]}

    def section_build(self, context: SectionContext) -> dict:
        import torch

        self.model = build_model(self.profile, self.torch_dtype)
        parameters = sum(p.numel() for p in self.model.parameters())
        result = {"config": self.model.config.name, "parameters_m": round(parameters / 1e6, 1),
                  "weights_gb": round(sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**30, 2)}
        if self.profile.device == "cuda":
            torch.cuda.empty_cache()
            result["allocated_after_build_gb"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        self.details["build"] = result
        return result

    def section_encoders(self, context: SectionContext) -> dict:
        import torch

        model, inputs = self.model, self.inputs()
        context.left = 3
        with torch.no_grad():
            self.metrics["sam_encoder_ms"] = self.timed("sam_encoder", lambda: model.encode_mask_image(inputs["sam_pixels"]), context)
            self.metrics["siglip_ms"] = self.timed("siglip", lambda: model.encode_vision(inputs["siglip_pixels"]), context)
            mask_output = model.encode_mask_image(inputs["sam_pixels"])
            self.timed("seg_projector", lambda: model.sam_tokens(mask_output), context)
        return {"sam_encoder_ms": self.metrics["sam_encoder_ms"], "siglip_ms": self.metrics["siglip_ms"]}

    def decoder_inputs(self):
        import torch

        with torch.no_grad():
            mask_output = self.model.encode_mask_image(self.inputs()["sam_pixels"])
            return mask_output, self.model.encode_pixels(mask_output)

    def section_seg_decoder(self, context: SectionContext) -> dict:
        import torch

        model, inputs = self.model, self.inputs()
        mask_output, pixel_features = self.decoder_inputs()
        context.left = 2
        with torch.no_grad():
            pixel = self.timed("pixel_decoder", lambda: model.encode_pixels(mask_output), context)
            mask = self.timed("mask_decoder", lambda: model.decode(pixel_features, inputs["conditions"], inputs["seg"]), context)
        self.metrics["seg_decoder_ms"] = round(pixel + mask, 3)
        return {"seg_decoder_ms": self.metrics["seg_decoder_ms"]}

    def section_prefill(self, context: SectionContext) -> dict:
        import torch

        language_model, embeds = self.model.language_model, self.inputs()["embeds"]
        with torch.no_grad():
            self.metrics["prefill_ms"] = self.timed("prefill", lambda: language_model.hidden_states(embeds), context)
        self.details["prefill"]["tokens"] = self.profile.prefill_tokens
        return {"prefill_ms": self.metrics["prefill_ms"], "tokens": self.profile.prefill_tokens}

    def section_decode(self, context: SectionContext) -> dict:
        import torch
        from transformers.cache_utils import DynamicCache

        llm, embeds, tokens = self.model.language_model.llm, self.inputs()["embeds"][None], self.profile.decode_tokens
        step_embeds = llm.get_input_embeddings()(torch.tensor([[42]], device=self.profile.device))
        per_token: list[float] = []
        with torch.no_grad():
            for _ in range(3):
                cache = DynamicCache(config=llm.config)
                llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
                synchronize(self.profile.device)
                start = time.perf_counter()
                for _ in range(tokens):
                    hidden = llm.model(inputs_embeds=step_embeds, past_key_values=cache, use_cache=True).last_hidden_state
                    llm.lm_head(hidden[:, -1])
                synchronize(self.profile.device)
                per_token.append((time.perf_counter() - start) / tokens)
                if time.perf_counter() + 1.5 * (time.perf_counter() - start) > context.deadline:
                    break
        stats = self.record("decode_dynamic_cache", per_token, 3)
        stats.update(context_tokens=self.profile.prefill_tokens, tokens_per_round=tokens)
        self.metrics["decode_ms_per_token"] = stats["p50_ms"]
        return {"decode_ms_per_token": stats["p50_ms"]}

    def section_predictor(self, context: SectionContext) -> dict:
        """Command -> masks and tracking through the public predictor factory (PyTorch backend)."""
        import torch

        from xsam_engine.backends import create_predictor
        from xsam_engine.requests import SegmentationRequest, Task
        from xsam_engine.tabletop.tokenizer import build_tokenizer

        predictor, info = create_predictor(model=self.model, tokenizer=build_tokenizer(), backend="torch",
                                           device=self.profile.device, dtype=self.torch_dtype, log=False)
        frames = camera_frames(self.profile.frame_size)
        referring = SegmentationRequest(task=Task.REFERRING, text="the red cup")
        if self.profile.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        context.left = 2
        counter = iter(range(10**9))

        def next_frame():
            return frames[next(counter) % len(frames)]

        # Image already received: set_image (SAM + pixel decoder) is untimed; the command runs
        # SigLIP + seg projector lazily, then the LLM, the mask decoder and post-processing.
        self.metrics["command_to_masks_ms"] = self.timed(
            "command_to_masks", lambda: predictor.segment(referring), context, setup=lambda: predictor.set_image(next_frame()),
            gpu_clock=False)
        predictor.set_image(frames[0])
        condition = predictor.encode_request(referring)

        def track():
            predictor.set_image(next_frame())
            predictor.decode(condition)

        tracking = self.timed("tracking_frame", track, context, gpu_clock=False)
        self.metrics["tracking_fps"] = round(1000.0 / tracking, 1)
        self.details["predictor"] = {"backend": info.summary(), "frame_size": list(self.profile.frame_size),
                                     "frames": frames.source, "condition_labels": list(condition.labels)}
        self.metrics["peak_gpu_memory_gb"] = peak_memory_gb(self.profile.device)
        self.details["peak_memory"] = {
            "gb": self.metrics["peak_gpu_memory_gb"],
            "what": "torch.cuda.max_memory_allocated during command -> masks and tracking (weights included)"
            if self.profile.device == "cuda" else "process peak RSS (CPU dry run; not GPU memory)"}
        return {"command_to_masks_ms": self.metrics["command_to_masks_ms"], "tracking_fps": self.metrics["tracking_fps"],
                "peak_gpu_memory_gb": self.metrics["peak_gpu_memory_gb"]}

    def compile(self, function):
        """torch.compile as the GPU run uses it: inductor "reduce-overhead" (CUDA graphs), or the chosen backend."""
        import torch

        if self.profile.compile_backend == "inductor":
            return torch.compile(function, mode="reduce-overhead", fullgraph=False)
        return torch.compile(function, backend=self.profile.compile_backend, fullgraph=False)

    def compile_counters(self) -> dict:
        """torch._dynamo's counters (graph breaks, CUDA-graph skips and their reasons); {} if unavailable."""
        try:
            from torch._dynamo.utils import counters

            return {group: {str(k): v for k, v in values.items()} for group, values in counters.items()
                    if group in ("stats", "graph_break", "inductor", "frames") and values}
        except Exception as error:  # a private API: its absence must not fail the section
            return {"unavailable": f"{error.__class__.__name__}: {error}"}

    def compiled_run(self, key: str):
        """Details of a compile section: backend, and inductor's reasons for skipping CUDA graphs."""
        details = self.details.setdefault(key, {"backend": self.profile.compile_backend})
        return details, CudagraphSkips(details.setdefault("cudagraph_skip_reasons", []))

    def reset_compile_counters(self) -> None:
        try:
            from torch._dynamo.utils import counters

            counters.clear()
        except Exception:
            pass

    def section_seg_decoder_compiled(self, context: SectionContext) -> dict:
        import torch

        model, inputs = self.model, self.inputs()
        _, pixel_features = self.decoder_inputs()
        self.reset_compile_counters()
        compiled = self.compile(lambda: model.decode(pixel_features, inputs["conditions"], inputs["seg"]).mask_logits)
        details, skips = self.compiled_run("mask_decoder_compiled")
        with torch.no_grad(), skips:
            started = time.perf_counter()
            for _ in range(3):  # compile, then CUDA-graph warm-up and capture
                torch.compiler.cudagraph_mark_step_begin()
                compiled()
            synchronize(self.profile.device)
            details["compile_and_capture_s"] = round(time.perf_counter() - started, 1)
            details["counters"] = self.compile_counters()

            def replay():
                torch.compiler.cudagraph_mark_step_begin()
                compiled()

            p50 = self.timed("mask_decoder_compiled_timing", replay, context, warmup=1)
        details.update(self.details.pop("mask_decoder_compiled_timing"))
        eager = self.details.get("mask_decoder", {}).get("p50_ms")
        pixel = self.details.get("pixel_decoder", {}).get("p50_ms")
        if eager is not None and pixel is not None:
            self.metrics["seg_decoder_ms"] = round(pixel + min(eager, p50), 3)
        return {"mask_decoder_ms": p50, "eager_ms": eager, "compile_s": details["compile_and_capture_s"]}

    def section_decode_compiled(self, context: SectionContext) -> dict:
        """Static KV cache + a compiled one-token step; transformers >= 5 keeps the position in the cache."""
        import torch
        from transformers.cache_utils import StaticCache

        llm, embeds, tokens = self.model.language_model.llm, self.inputs()["embeds"][None], self.profile.decode_tokens
        capture_steps = 3
        max_cache_len = self.profile.prefill_tokens + capture_steps + tokens + 8
        cache = StaticCache(config=full_attention_cache_config(llm.config, max_cache_len), max_cache_len=max_cache_len)
        step_embeds = llm.get_input_embeddings()(torch.tensor([[42]], device=self.profile.device))
        self.reset_compile_counters()

        def step(inputs):
            hidden = llm.model(inputs_embeds=inputs, past_key_values=cache, use_cache=True).last_hidden_state
            return llm.lm_head(hidden[:, -1])

        compiled = self.compile(step)

        def prefill():  # the cache's buffers keep their addresses: the captured graph stays valid
            cache.reset()
            llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)

        def advance(steps: int):
            for _ in range(steps):
                torch.compiler.cudagraph_mark_step_begin()
                compiled(step_embeds)

        details, skips = self.compiled_run("decode_static_cache_compiled")
        per_token: list[float] = []
        with torch.no_grad(), skips:
            prefill()
            started = time.perf_counter()
            advance(capture_steps)  # compile, then CUDA-graph warm-up and capture
            synchronize(self.profile.device)
            details["compile_and_capture_s"] = round(time.perf_counter() - started, 1)
            details["counters"] = self.compile_counters()
            for _ in range(3):
                prefill()
                synchronize(self.profile.device)
                start = time.perf_counter()
                advance(tokens)
                synchronize(self.profile.device)
                per_token.append((time.perf_counter() - start) / tokens)
                if cache.get_seq_length() != self.profile.prefill_tokens + tokens:
                    raise RuntimeError(f"static cache holds {int(cache.get_seq_length())} tokens after "
                                       f"{self.profile.prefill_tokens} + {tokens}: the compiled step did not advance it")
                if time.perf_counter() + 1.5 * (time.perf_counter() - start) > context.deadline:
                    break
            details.update(self.record("decode_static_cache_compiled_timing", per_token, 3))
            self.details.pop("decode_static_cache_compiled_timing")
            eager = self.metrics.get("decode_ms_per_token")
            self.metrics["decode_ms_per_token"] = min(eager, details["p50_ms"]) if eager is not None else details["p50_ms"]
            details["logits_vs_dynamic_cache"] = compare_with_dynamic_cache(llm, embeds, step_embeds, prefill, compiled)
        return {"decode_ms_per_token": details["p50_ms"], "eager_ms": eager, "compile_s": details["compile_and_capture_s"]}

    def section_tensorrt(self, context: SectionContext) -> dict:
        """FP16 engines of the image graphs through `create_predictor(backend="tensorrt")`, timed per stage."""
        import torch

        from xsam_engine.backends import create_predictor
        from xsam_engine.tabletop.tokenizer import build_tokenizer

        # The engines are built from the float32 CPU model's ONNX export; the LLM is not exported (1 layer).
        config = model_config(self.profile)
        config.language = dataclasses.replace(config.language, num_hidden_layers=1)
        torch.manual_seed(0)
        from xsam_engine.modeling_xsam import XSamModel

        cpu_model = XSamModel(config).eval()
        cache_dir = Path(self.args.engine_cache_dir or tempfile.mkdtemp(prefix="xsam_trt_"))
        predictor, info = create_predictor(model=cpu_model, tokenizer=build_tokenizer(), backend="tensorrt", device="cuda",
                                           dtype=self.torch_dtype, engine_cache_dir=cache_dir, log=False)
        result = {"backend": info.summary(), "reason": info.reason, "engine_cache_dir": str(cache_dir)}
        self.details["tensorrt"] = result
        if info.backend != "tensorrt":
            raise RuntimeError(f"create_predictor fell back to {info.backend}: {info.reason}")
        stages, inputs = predictor.stages, self.inputs()
        context.left = 4
        mask_output = stages.encode_mask_image(inputs["sam_pixels"])
        pixel_features = stages.encode_pixels(mask_output)
        for key, function in (
            ("mask_encoder_ms", lambda: stages.encode_mask_image(inputs["sam_pixels"])),
            ("pixel_decoder_ms", lambda: stages.encode_pixels(mask_output)),
            ("vision_encoder_ms", lambda: stages.encode_vision(inputs["siglip_pixels"])),
            ("mask_decoder_ms", lambda: stages.decode(pixel_features, inputs["conditions"], inputs["seg"])),
        ):
            result[key] = self.timed(f"tensorrt_{key[:-3]}", function, context)
        return {k: v for k, v in result.items() if k.endswith("_ms")}


class CudagraphSkips(logging.Handler):
    """Collects inductor's "skipping cudagraphs due to ..." warnings while entered (why a
    "reduce-overhead" function runs without CUDA graphs; on the CPU inductor only counts them)."""

    LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"

    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 20:
            self.messages.append(record.getMessage()[:500])

    def __enter__(self) -> CudagraphSkips:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)


# -- model, frames, memory -----------------------------------------------------------------------


def model_config(profile: Profile):
    """`XSamConfig.released()` on the GPU; in the dry run `XSamConfig.tiny()` with the released
    vocabulary (32,014 rows) and sliding window, so the tokenizer check and the sliding-window
    attention mask take the same path as the full-size model."""
    from xsam_engine.configuration_xsam import XSamConfig

    released = XSamConfig.released()
    if not profile.dry_run:
        config = released
    else:
        config = XSamConfig.tiny(vocab_size=released.language.vocab_size)
        config.language = dataclasses.replace(config.language, sliding_window=released.language.sliding_window)
    config.mask_encoder = dataclasses.replace(config.mask_encoder, attn_implementation="sdpa")
    return config


def compare_with_dynamic_cache(llm, embeds, step_embeds, prefill, compiled) -> dict:
    """Logits of the first compiled step after a prefill vs the eager dynamic-cache step (same input).

    A static cache that did not advance, or a wrong position, shows as a large difference.
    """
    import torch
    from transformers.cache_utils import DynamicCache

    prefill()
    torch.compiler.cudagraph_mark_step_begin()
    static_logits = compiled(step_embeds).float().clone()
    cache = DynamicCache(config=llm.config)
    llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
    hidden = llm.model(inputs_embeds=step_embeds, past_key_values=cache, use_cache=True).last_hidden_state
    eager_logits = llm.lm_head(hidden[:, -1]).float()
    difference = float((static_logits - eager_logits).abs().max())
    scale = float(eager_logits.abs().max()) or 1.0
    return {"max_abs_difference": round(difference, 5), "relative": round(difference / scale, 5),
            "agrees": difference / scale < 0.05, "same_argmax": bool((static_logits.argmax(-1) == eager_logits.argmax(-1)).all())}


def full_attention_cache_config(llm_config, context_tokens: int):
    """The LLM's config for a `StaticCache` of full-attention layers.

    Phi-3's `sliding_window` (2,047) makes transformers (5.17 to 5.23 at least) build sliding-window
    static layers, which track their length in a Python int: torch.compile guards on it and
    recompiles at every step (then falls back to eager past its recompile limit), and CUDA graphs
    would re-record for every position. Below the window both layer kinds attend to exactly the
    same tokens, so the benchmark's context must stay below it (ValueError otherwise).
    """
    import copy

    window = getattr(llm_config, "sliding_window", None)
    if window is not None and context_tokens > window:
        raise ValueError(f"A {context_tokens}-token static cache exceeds the sliding window ({window}); "
                         "use fewer --decode-tokens.")
    config = copy.deepcopy(llm_config)
    config.sliding_window = None
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = ["full_attention"] * config.num_hidden_layers
    return config


def build_model(profile: Profile, dtype):
    """Random-weight model built directly on the profile's device (no download), cast to `dtype`, eval."""
    import torch

    from xsam_engine.modeling_xsam import XSamModel

    torch.manual_seed(0)
    with torch.device(profile.device):
        model = XSamModel(model_config(profile))
    return model.to(dtype).eval().requires_grad_(False)


class Frames(list):
    """Camera frames (H, W, 3) uint8, with where they came from."""

    source = ""


def camera_frames(size: tuple[int, int], count: int = 5) -> Frames:
    """Generated tabletop scenes (deterministic); uniform noise if the generator cannot run here."""
    import numpy as np

    width, height = size
    frames = Frames()
    try:
        from xsam_engine.tabletop.scenes import generate_scene

        frames.extend(generate_scene(seed, width=width, height=height).image for seed in range(count))
        frames.source = "tabletop scenes"
    except Exception as error:  # the scene generator needs cv2; random weights do not care what they see
        rng = np.random.default_rng(0)
        frames.extend(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count))
        frames.source = f"uniform noise (scene generator unavailable: {error.__class__.__name__}: {error})"
    return frames


def peak_memory_gb(device: str) -> float:
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return round(peak_rss_mb() / 1024.0, 2)


# -- figure, entry point -------------------------------------------------------------------------


def draw_figure(report: dict, path: Path) -> str | None:
    """Bar chart of the ms metrics against target, goal and roofline; returns why not drawn, or None."""
    if missing_module("matplotlib"):
        return f"skipped: {missing_module('matplotlib')}; redraw with --plot-only"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["targets"] if r["value"] is not None and r["unit"] == "ms"]
    figure, axis = plt.subplots(figsize=(8, 4))
    try:
        names = [r["metric"] for r in rows]
        axis.barh(names, [r["value"] for r in rows], label="measured p50")
        axis.scatter([r["issue_target"] or float("nan") for r in rows], names, marker="|", s=300, color="red", label="issue target")
        axis.scatter([r["research_goal"] or float("nan") for r in rows], names, marker="|", s=300, color="green", label="research goal")
        axis.scatter([r["roofline_ms"] or float("nan") for r in rows], names, marker="x", color="black", label="roofline")
        if rows:
            axis.set_xscale("log")
        axis.set_xlabel("ms (log)")
        axis.set_title(f"X-SAM on {report['gpu']} ({report['dtype']}, batch 1, random weights; {report['status']})", fontsize=9)
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run, write, print; 0 whenever the results file was written (its "status" says how far it got)."""
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.plot_only:
        path = Path(args.plot_only)
        report = json.loads(path.read_text())
        reason = draw_figure(report, path.with_suffix(".png"))
        print(reason or f"wrote {path.with_suffix('.png')}")
        return 1 if reason else 0
    # Nothing may be fetched: a lookup on the Hub would only hang on a machine without network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    profile = make_profile(args)
    default_dir = Path(tempfile.gettempdir()) / "xsam_gpu_all_dry_run" if profile.dry_run else RESULTS
    output_dir = Path(args.output_dir) if args.output_dir else default_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    run = BenchRun(args, profile, output_dir)
    guard = RunGuard(run.budget.start + profile.budget_s - 3.0, run.finish)
    guard.start()
    print(f"bench/gpu_all.py: profile {profile.name}, budget {profile.budget_s:.0f} s, sections {', '.join(profile.sections)}",
          flush=True)
    try:
        run.execute()
        run.finish("complete")
    except Exception as error:  # e.g. no GPU: still write what is known
        run.report["errors"]["run"] = traceback.format_exc()[-3000:]
        run.finish(f"failed: {error.__class__.__name__}: {error}")
    finally:
        guard.stop()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip atexit hooks: an interrupted torch.compile worker pool must not hang the exit
