"""Build TensorRT engines from the exported ONNX graphs (TensorRT 8.6 - 10.x Python API).

    from xsam_engine.tensorrt import EngineOptions, get_engine
    path = get_engine(onnx_path, spec, EngineOptions(enable_fp16=True), gpu=detect_gpu())

`get_engine` looks the engine up in the cache (`cache.py`) and builds it only when it is
missing, stale or corrupt. Builds:

* FP16 with `OBEY_PRECISION_CONSTRAINTS`: normalisation layers (LayerNorm, GroupNorm ->
  InstanceNorm, the hand-written SAM/RMS norms' Reduce/Pow/Sqrt), softmax and the class head's
  cosine/exp/clamp stay FP32 (FP16 overflows there; EfficientViT-SAM and the SigLIP2 FP16 engine
  of NVIDIA/TensorRT#4373 both hit this).
* INT8 (implicit quantisation with an `IInt8EntropyCalibrator2` fed with generated tabletop
  scenes, `calibration.py`); FP16 stays enabled as the fallback per layer. TensorRT 10 deprecates
  implicit INT8 in favour of explicit Q/DQ graphs: `calibration.quantize_with_modelopt` makes
  those (INT8 or FP8) with NVIDIA ModelOpt, after which a plain FP16 build honours the Q/DQ nodes.
* One optimisation profile covering the dynamic axes (`profiles.py`).
* A persisted timing cache (`<cache dir>/timing.cache`), loaded before and saved after each build.
* Progress: an `IProgressMonitor` on TensorRT >= 10 logs each build phase; on 8.6 a heartbeat
  logs the elapsed time every 30 s (SAM ViT-L takes minutes on an Orin).

Nothing here imports `tensorrt` at module import: the module loads (and its pure helpers are
tested) on machines without TensorRT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..export.graphs import GraphSpec
from ..export.onnx_export import onnx_sha256
from .cache import EngineCache, EngineCacheKey, precision_name
from .profiles import DEFAULT_MAX_CONDITIONS, DEFAULT_OPT_CONDITIONS, ProfileShapes, default_ranges, profile_shapes

logger = logging.getLogger(__name__)

DEFAULT_WORKSPACE = 4 << 30  # 4 GiB; the Orin NX 16 GB shares it with the CPU: lower it there
HEARTBEAT_SECONDS = 30.0
# Layer-name fragments of norms that the ONNX parser imports as Reduce/Pow/Sqrt sequences.
FP32_NAME_HINTS = ("norm", "layer_norm", "layernorm", "softmax", "class_head", "logit_scale")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    index: int = 0


def detect_gpu(index: int | None = None) -> GpuInfo:
    """The current CUDA device's name and compute capability (via torch)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU, and torch.cuda.is_available() is False.")
    index = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(index)
    return GpuInfo(name=torch.cuda.get_device_name(index), compute_capability=f"{major}.{minor}", index=index)


@dataclass(frozen=True)
class EngineOptions:
    """Build and cache parameters (names as in Isaac ROS' TensorRT node where they exist).

    Attributes:
        engine_cache_dir: directory of cached engines (default: `cache.default_cache_dir()`).
        engine_file_path: one explicit engine file (single-graph use); overrides the directory.
        force_engine_update: rebuild even when a valid cached engine exists.
        enable_fp16: allow FP16 kernels (norms/softmax pinned to FP32).
        enable_int8: allow INT8 kernels (needs a calibrator or a Q/DQ graph).
        enable_fp8: allow FP8 kernels (Hopper/Ada; needs a ModelOpt Q/DQ graph).
        max_workspace_size: builder scratch memory limit in bytes.
        max_conditions / opt_conditions: profile of the mask decoder's condition count.
        calibration_id: names the INT8 calibration set (part of the cache key).
    """

    engine_cache_dir: str | Path | None = None
    engine_file_path: str | Path | None = None
    force_engine_update: bool = False
    enable_fp16: bool = True
    enable_int8: bool = False
    enable_fp8: bool = False
    max_workspace_size: int = DEFAULT_WORKSPACE
    max_conditions: int = DEFAULT_MAX_CONDITIONS
    opt_conditions: int = DEFAULT_OPT_CONDITIONS
    calibration_id: str = ""

    @property
    def precision(self) -> str:
        return precision_name(self.enable_fp16, self.enable_int8, self.enable_fp8)


def engine_key(
    onnx_path: str | Path,
    spec: GraphSpec,
    options: EngineOptions,
    gpu: GpuInfo,
    tensorrt_version: str,
    num_points: int,
    onnx_hash: str | None = None,
) -> tuple[EngineCacheKey, ProfileShapes]:
    """The cache key and profile for one graph (pure: no TensorRT needed)."""
    ranges = default_ranges(num_points, options.max_conditions, options.opt_conditions)
    shapes = profile_shapes(spec, ranges)
    extra = (("calibration", options.calibration_id),) if options.enable_int8 and options.calibration_id else ()
    key = EngineCacheKey(
        graph=spec.name,
        onnx_sha256=onnx_hash or onnx_sha256(onnx_path),
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=options.precision,
        profile=EngineCacheKey.profile_from_shapes(shapes),
        extra=extra,
    )
    return key, shapes


def get_engine(
    onnx_path: str | Path,
    spec: GraphSpec,
    options: EngineOptions,
    num_points: int,
    gpu: GpuInfo | None = None,
    calibrator_factory: Callable[[], Any] | None = None,
    onnx_hash: str | None = None,
) -> tuple[Path, EngineCacheKey, EngineCache]:
    """Path of a valid engine for `onnx_path`, building (and caching) it when needed."""
    import tensorrt as trt

    gpu = gpu or detect_gpu()
    key, shapes = engine_key(onnx_path, spec, options, gpu, trt.__version__, num_points, onnx_hash)
    cache = EngineCache(options.engine_cache_dir, options.engine_file_path)
    found = cache.lookup(key, options.force_engine_update)
    if found.hit:
        logger.info("Using cached TensorRT engine %s.", found.path)
        return found.path, key, cache
    logger.warning(
        "Building TensorRT %s engine for %s (%s); this takes minutes for the large encoders.",
        key.precision, spec.name, found.reason,
    )
    start = time.perf_counter()
    calibrator = calibrator_factory() if (options.enable_int8 and calibrator_factory) else None
    engine = build_serialized_engine(onnx_path, shapes, options, cache.timing_cache_path, calibrator, spec.name)
    seconds = time.perf_counter() - start
    path = cache.store(key, engine, build_seconds=seconds)
    logger.warning("Built %s in %.0f s -> %s", spec.name, seconds, path)
    return path, key, cache


class _PythonLogger:
    """Forwards TensorRT's log to Python logging (created lazily: subclasses `trt.ILogger`)."""

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            import tensorrt as trt

            class Logger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, severity, msg) -> None:  # noqa: D401 - TensorRT callback
                    level = {
                        trt.ILogger.INTERNAL_ERROR: logging.CRITICAL,
                        trt.ILogger.ERROR: logging.ERROR,
                        trt.ILogger.WARNING: logging.WARNING,
                        trt.ILogger.INFO: logging.DEBUG,  # very chatty during builds
                        trt.ILogger.VERBOSE: logging.DEBUG - 1,
                    }.get(severity, logging.INFO)
                    logging.getLogger("tensorrt").log(level, "%s", msg)

            cls._instance = Logger()
        return cls._instance


def trt_logger():
    return _PythonLogger.get()


def _progress_monitor(graph: str):
    """An `IProgressMonitor` that logs build phases (TensorRT >= 10), else None."""
    import tensorrt as trt

    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._start = time.perf_counter()

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            self._steps[phase_name] = num_steps
            indent = "  " if parent_phase else ""
            logger.info("[%s %5.0f s] %s%s (%d steps)", graph, time.perf_counter() - self._start, indent, phase_name, num_steps)

        def step_complete(self, phase_name, step) -> bool:
            total = self._steps.get(phase_name, 0)
            if total >= 10 and (step + 1) % max(1, total // 10) == 0:
                logger.info("[%s %5.0f s]   %s %d/%d", graph, time.perf_counter() - self._start, phase_name, step + 1, total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            self._steps.pop(phase_name, None)

    return Progress()


class _Heartbeat:
    """Logs 'still building' every HEARTBEAT_SECONDS where no progress monitor exists (TRT 8.6)."""

    def __init__(self, graph: str) -> None:
        self.graph = graph
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(HEARTBEAT_SECONDS):
            logger.info("Still building the %s engine (%.0f s)...", self.graph, time.perf_counter() - start)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def keep_precision_sensitive_layers_fp32(network) -> int:
    """Pin normalisation, softmax, reductions and the norms' Pow/Sqrt to FP32; returns the count."""
    import tensorrt as trt

    sensitive_types = {trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    if hasattr(trt.LayerType, "NORMALIZATION"):  # TensorRT >= 8.6
        sensitive_types.add(trt.LayerType.NORMALIZATION)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        name = (layer.name or "").lower()
        sensitive = layer.type in sensitive_types or any(hint in name for hint in FP32_NAME_HINTS)
        if layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer
            sensitive = sensitive or layer.op == trt.ElementWiseOperation.POW
        elif layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer
            sensitive = sensitive or layer.op in (trt.UnaryOperation.SQRT, trt.UnaryOperation.EXP)
        if not sensitive:
            continue
        # Only float tensors can be pinned; shape/index tensors (INT32/INT64/BOOL) keep their type.
        if all(layer.get_output(i).dtype in (trt.float32, trt.float16) for i in range(layer.num_outputs)):
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                layer.set_output_type(i, trt.float32)
            pinned += 1
    return pinned


def build_serialized_engine(
    onnx_path: str | Path,
    shapes: ProfileShapes,
    options: EngineOptions,
    timing_cache_path: Path | None,
    calibrator: Any | None = None,
    graph: str = "graph",
) -> bytes:
    """Parse the ONNX file (external data next to it) and build a serialized engine."""
    import tensorrt as trt

    log = trt_logger()
    builder = trt.Builder(log)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated and ignored);
    # 8.x still needs it for ONNX models.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.max_workspace_size))
    if options.enable_fp16 or options.enable_int8 or options.enable_fp8:
        if not builder.platform_has_fast_fp16:
            logger.warning("This GPU has no fast FP16; the FP16 engine may be slower than FP32.")
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = keep_precision_sensitive_layers_fp32(network)
        logger.info("%s: %d precision-sensitive layers pinned to FP32.", graph, pinned)
    if options.enable_int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if options.enable_fp8:
        if not hasattr(trt.BuilderFlag, "FP8"):
            raise RuntimeError(f"TensorRT {trt.__version__} has no FP8 support; use TensorRT >= 10 on Ada/Hopper.")
        config.set_flag(trt.BuilderFlag.FP8)

    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if shapes:
            config.set_calibration_profile(profile)

    timing_cache = None
    if timing_cache_path is not None:
        blob = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
        timing_cache = config.create_timing_cache(blob)
        config.set_timing_cache(timing_cache, ignore_mismatch=True)  # stale entries are dropped, not fatal

    monitor = _progress_monitor(graph)
    if monitor is not None:
        config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, config)
    else:
        with _Heartbeat(graph):
            serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}; see the 'tensorrt' log above.")

    if timing_cache_path is not None:
        timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        updated = config.get_timing_cache()
        tmp = timing_cache_path.with_name(timing_cache_path.name + ".tmp")
        tmp.write_bytes(bytes(memoryview(updated.serialize())))
        tmp.replace(timing_cache_path)
    return bytes(memoryview(serialized))
