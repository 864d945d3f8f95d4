"""Backend selection: run X-SAM's image stages on TensorRT, ONNX Runtime or PyTorch.

    from xsam_engine.backends import create_predictor
    created = create_predictor(backend="auto", device="auto")   # CreatedPredictor(predictor, info)
    print(created.info.summary())  # e.g. "tensorrt on cuda (fp16 engines), LLM torch bfloat16"
    predictor = created.predictor

`backend` is auto | tensorrt | onnxruntime | torch | triton and `device` auto | cuda | cpu.
auto resolves to TensorRT when `tensorrt` imports and CUDA is present, else ONNX Runtime with
its CUDA execution provider when available, else PyTorch. A backend that was asked for but
cannot run here falls back along tensorrt -> onnxruntime -> torch; exactly one summary line
(logger `xsam_engine.backends`) says what was asked, what is used and why. A backend that raises
while starting is also logged with its traceback on the same logger (WARNING; DEBUG when the
exception is an ImportError, i.e. a package is missing), so that a bug in an accelerated
backend is visible and not only its one-line reason. The language model
and the region sampler's point draw always run in PyTorch on the chosen device; only the image
stages (`ImageStages`: SAM + connector, pixel decoder, SigLIP, seg projector, mask decoder) move.

`backend="triton"` runs the image stages on a Triton Inference Server (`triton_url`, see
`triton_stages.py` and docs/fleet.md); `device` is then where the LLM runs. It never falls back
silently: a server that is not ready at start-up is an error, unless `triton_fallback=True`, in
which case the local backend `auto` would choose runs the graphs while the server is unreachable.

The accelerated backends export the model's image stages to ONNX once, into
`<engine_cache_dir>/onnx/<model fingerprint>/`, and TensorRT builds its engines from there into
`<engine_cache_dir>` (see `xsam_engine.tensorrt.cache` for when they are rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..export.graphs import GRAPH_NAMES
from .common import ExportedGraphStages, TorchGraphStages
from .onnxruntime_stages import CUDA_PROVIDER, OnnxRuntimeStages, available_providers

if TYPE_CHECKING:
    from ..predictor import XSamPredictor

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch", "triton")
DEVICES = ("auto", "cuda", "cpu")
# The defaults of `create_predictor` and `XSamPredictor.from_pretrained` (one set for both).
DEFAULT_DEVICE = "auto"
DEFAULT_SEED = 0
IMAGE_STAGE_MODULES = ("mask_encoder", "vision_encoder", "seg_decoder")


@dataclass(frozen=True)
class Environment:
    """What this machine offers (detected once; injectable for tests)."""

    cuda_available: bool
    tensorrt_available: bool
    onnxruntime_providers: tuple[str, ...]

    @classmethod
    def detect(cls) -> Environment:
        from ..tensorrt import tensorrt_available

        return cls(
            cuda_available=torch.cuda.is_available(),
            tensorrt_available=tensorrt_available(),
            onnxruntime_providers=tuple(available_providers()),
        )


@dataclass(frozen=True)
class Resolution:
    """A backend/device choice; `fallback` when it differs from an explicit request."""

    backend: str
    device: str
    fallback: bool
    reason: str


def _fallback_backend(device: str, env: Environment) -> tuple[str, str]:
    """Next best after TensorRT: ONNX Runtime where it can use `device`, else PyTorch."""
    if env.onnxruntime_providers and (device == "cpu" or CUDA_PROVIDER in env.onnxruntime_providers):
        return "onnxruntime", ""
    if not env.onnxruntime_providers:
        return "torch", "onnxruntime is not installed"
    return "torch", f"onnxruntime has no {CUDA_PROVIDER} (install onnxruntime-gpu)"


def resolve_backend(backend: str, device: str, env: Environment) -> Resolution:
    """Pure decision: which backend and device to use for a request, and why."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}.")
    reasons: list[str] = []
    if device == "auto":
        chosen_device = "cuda" if env.cuda_available else "cpu"
    elif device == "cuda" and not env.cuda_available:
        chosen_device = "cpu"
        reasons.append("no CUDA device is available (torch.cuda.is_available() is False)")
    else:
        chosen_device = device

    if backend == "auto":
        if chosen_device == "cuda" and env.tensorrt_available:
            return Resolution("tensorrt", chosen_device, bool(reasons), "; ".join(reasons) or "tensorrt imports and CUDA is present")
        if chosen_device == "cuda" and CUDA_PROVIDER in env.onnxruntime_providers:
            reasons.append("tensorrt is not installed; onnxruntime has the CUDA execution provider")
            return Resolution("onnxruntime", chosen_device, False, "; ".join(reasons))
        if chosen_device == "cuda":
            reasons.append("neither tensorrt nor onnxruntime-gpu is installed")
        else:
            reasons.append("no CUDA device, and PyTorch is the fastest CPU path for the whole model")
        return Resolution("torch", chosen_device, bool(device == "cuda" and chosen_device == "cpu"), "; ".join(reasons))

    if backend == "tensorrt":
        why = []
        if not env.tensorrt_available:
            why.append("the tensorrt Python package is not installed")
        if chosen_device != "cuda":
            why.append("TensorRT needs a CUDA device" + (" and none is available" if device != "cpu" else ", and device=cpu was asked"))
        if not why:
            return Resolution("tensorrt", chosen_device, bool(reasons), "; ".join(reasons))
        fallback, extra = _fallback_backend(chosen_device, env)
        return Resolution(fallback, chosen_device, True, "; ".join(reasons + why + ([extra] if extra else [])))

    if backend == "onnxruntime":
        if not env.onnxruntime_providers:
            return Resolution("torch", chosen_device, True, "; ".join(reasons + ["onnxruntime is not installed"]))
        if chosen_device == "cuda" and CUDA_PROVIDER not in env.onnxruntime_providers:
            return Resolution("torch", chosen_device, True, "; ".join(reasons + [f"onnxruntime has no {CUDA_PROVIDER} (install onnxruntime-gpu)"]))
        return Resolution("onnxruntime", chosen_device, bool(reasons), "; ".join(reasons))

    if backend == "triton":  # the image stages run on the server; `device` is the LLM's
        return Resolution("triton", chosen_device, bool(reasons), "; ".join(reasons))

    return Resolution("torch", chosen_device, bool(reasons), "; ".join(reasons))


@dataclass
class BackendInfo:
    """What `create_predictor` set up.

    Attributes:
        requested_backend / requested_device: as asked.
        backend / device: what runs the image stages ("torch", "onnxruntime", "tensorrt", "triton"; "cpu"/"cuda").
        dtype: the PyTorch parts' dtype (LLM, region sampler; accelerated stages hand tensors back in it).
        fallback: True when an explicit request could not be honoured.
        reason: why this backend/device (the text of the one log line).
        onnx_dir: exported graphs (accelerated backends only).
        engine_paths: TensorRT engine per graph (tensorrt only).
        precision: "fp32" / "fp16" / "int8" for TensorRT engines, else the stages' dtype name.
        server: the Triton server ("grpc://host:port"; triton only).
        local_backend: triton with `triton_fallback`: the local backend used while the server is down.
    """

    requested_backend: str
    requested_device: str
    backend: str
    device: str
    dtype: str
    fallback: bool
    reason: str
    onnx_dir: str | None = None
    engine_paths: dict[str, str] = field(default_factory=dict)
    precision: str = ""
    server: str = ""
    local_backend: str = ""

    def summary(self) -> str:
        if self.backend == "triton":
            stages = f"triton at {self.server}" + (f" (fallback: {self.local_backend})" if self.local_backend else "")
            return f"image stages: {stages}; LLM: torch {self.dtype} on {self.device}"
        stages = f"{self.backend} on {self.device}" + (f" ({self.precision})" if self.precision else "")
        return f"image stages: {stages}; LLM: torch {self.dtype} on {self.device}"


class CreatedPredictor(NamedTuple):
    """What `create_predictor` returns: the predictor and how its stages run (unpacks as a pair)."""

    predictor: XSamPredictor
    info: BackendInfo


def default_dtype(device: str) -> torch.dtype:
    """bf16 on GPUs that support it (Ampere+, incl. Orin), fp16 on older ones, fp32 on the CPU."""
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def model_fingerprint(model) -> str:
    """SHA-256 over the configuration and the image-stage weights (what the ONNX graphs contain)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for module_name in IMAGE_STAGE_MODULES:
        for name, tensor in getattr(model, module_name).state_dict().items():
            digest.update(f"{module_name}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def ensure_onnx(model, directory: str | Path) -> Path:
    """Export the model's graphs into `directory` unless a complete export is already there."""
    from ..export.onnx_export import MANIFEST_NAME, export_onnx

    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if manifest.is_file():
        stored = json.loads(manifest.read_text()).get("graphs", {})
        if all(name in stored and (directory / stored[name]["file"]).is_file() for name in GRAPH_NAMES):
            return directory
    logging.getLogger("xsam_engine.export").info("Exporting the image stages to ONNX in %s (once per model).", directory)
    cpu_model = model
    if next(model.parameters()).device.type != "cpu" or model.dtype != torch.float32:
        raise ValueError("ensure_onnx needs the float32 CPU model; export before moving it to the GPU.")
    export_onnx(cpu_model, directory)
    return directory


def _release_image_stage_weights(model) -> None:
    """Accelerated stages own the encoders: move the PyTorch copies to the meta device (frees ~1.4-2.8 GB).

    The seg decoder stays (it is small, and `model.device`/`model.dtype` read its logit scale).
    """
    model.mask_encoder.to("meta")
    model.vision_encoder.to("meta")


def create_predictor(
    model_path: str | Path | None = None,
    backend: str = "auto",
    device: str = DEFAULT_DEVICE,
    dtype: torch.dtype | None = None,
    engine_cache_dir: str | Path | None = None,
    force_engine_update: bool = False,
    enable_fp16: bool = True,
    enable_int8: bool = False,
    max_workspace_size: int | None = None,
    engine_file_path: str | Path | None = None,
    model=None,
    tokenizer=None,
    seed: int = DEFAULT_SEED,
    environment: Environment | None = None,
    log: bool = True,
    triton_url: str = "127.0.0.1:8001",
    triton_protocol: str = "grpc",
    triton_timeout_s: float = 5.0,
    triton_fallback: bool = False,
    triton_options=None,
) -> CreatedPredictor:
    """Build an `XSamPredictor` whose image stages run on the chosen backend.

    Args:
        model_path: directory written by `save_pretrained`; None = the shipped tabletop model.
        backend / device: see the module docstring.
        dtype: dtype of the PyTorch parts (default: bf16/fp16 on CUDA, fp32 on CPU).
        engine_cache_dir: ONNX exports and TensorRT engines (default `~/.cache/xsam_ros/engines`).
        force_engine_update / enable_fp16 / enable_int8 / max_workspace_size / engine_file_path:
            TensorRT build parameters (Isaac ROS names); ignored by the other backends.
        model, tokenizer: an already built model (float32, CPU) instead of `model_path`; it is not
            modified except for being moved to `device`/`dtype`.
        seed: the predictor's region-sampler seed.
        environment: override detection (tests).
        log: emit the one backend summary line (a caller with its own logger, e.g. the ROS node,
            passes False and logs `info.reason` itself, so the fallback is still reported exactly
            once). Tracebacks of backends that raised while starting are logged in either case.
        triton_url / triton_protocol / triton_timeout_s: backend="triton": the server ("host:port"),
            "grpc" or "http", and the limit of every request in seconds.
        triton_fallback: backend="triton": run the graphs locally (the backend `auto` picks) while
            the server is unreachable, at start-up or later; False = raise (RuntimeError naming the
            server) instead. A server that answers but lacks a model or serves other weights is
            always an error.
        triton_options: a full `TritonOptions` (TLS, retry interval); overrides the three above.

    Returns:
        CreatedPredictor(predictor, info): `info` says which backend, device and precision run.
    """
    from ..predictor import XSamPredictor
    from ..tensorrt.cache import default_cache_dir

    env = environment or Environment.detect()
    resolution = resolve_backend(backend, device, env)
    reasons = [resolution.reason] if resolution.reason else []
    fallback = resolution.fallback
    owns_model = model is None
    if owns_model:
        from ..checkpoint import load_pretrained

        model, tokenizer = load_pretrained(model_path, device="cpu", dtype=torch.float32)
    elif tokenizer is None:
        raise ValueError("Pass the tokenizer together with the model.")
    run_device = resolution.device
    run_dtype = dtype or default_dtype(run_device)
    cache_dir = Path(engine_cache_dir) if engine_cache_dir else default_cache_dir()
    info = BackendInfo(
        requested_backend=backend, requested_device=device, backend=resolution.backend, device=run_device,
        dtype=str(run_dtype).replace("torch.", ""), fallback=fallback, reason="",
    )

    build = _LocalBuild(cache_dir, run_device, run_dtype, env, force_engine_update, enable_fp16, enable_int8,
                        max_workspace_size, engine_file_path)
    keep_encoders = False
    if resolution.backend == "triton":
        from .triton_stages import TritonOptions, TritonStages

        options = triton_options or TritonOptions(url=triton_url, protocol=triton_protocol, timeout_s=triton_timeout_s)
        local = None
        if triton_fallback:
            local = build.stages(model, resolve_backend("auto", device, env).backend, reasons)
            info.local_backend = build.backend
            keep_encoders = isinstance(local, TorchGraphStages)
        stages = TritonStages(model.config, options, device=run_device, dtype=run_dtype,
                              fingerprint=model_fingerprint(model), fallback=local)
        info.server = options.display
        if stages.using_fallback:
            reasons.append(f"{stages.last_error} (triton_fallback: {build.backend} until it is back)")
            fallback = True
    else:
        stages = build.stages(model, resolution.backend, reasons)
        fallback = fallback or build.failed
        info.backend, info.onnx_dir = build.backend, build.onnx_dir
        info.engine_paths, info.precision = build.engine_paths, build.precision
        if isinstance(stages, TorchGraphStages):  # the PyTorch model itself is the torch backend
            stages = None
    info.fallback, info.reason = fallback, "; ".join(reasons)
    if stages is not None and owns_model and not keep_encoders:
        _release_image_stage_weights(model)
        for name, child in model.named_children():
            if name not in ("mask_encoder", "vision_encoder"):
                child.to(device=run_device, dtype=run_dtype)
    else:
        model = model.to(device=run_device, dtype=run_dtype)
    predictor = XSamPredictor(model, tokenizer, seed=seed, stages=stages)
    message = (
        f"Backend: asked for backend={backend} device={device}; using {info.backend} on {info.device}"
        + (f" because {info.reason}" if info.reason else "") + "."
    )
    if log:
        logger.log(logging.WARNING if info.fallback else logging.INFO, message)
    return CreatedPredictor(predictor, info)


@dataclass
class _LocalBuild:
    """Builds local image stages along tensorrt -> onnxruntime -> torch; records what it used."""

    cache_dir: Path
    device: str
    dtype: torch.dtype
    env: Environment
    force_engine_update: bool
    enable_fp16: bool
    enable_int8: bool
    max_workspace_size: int | None
    engine_file_path: str | Path | None
    backend: str = "torch"
    failed: bool = False
    onnx_dir: str | None = None
    engine_paths: dict[str, str] = field(default_factory=dict)
    precision: str = ""

    def stages(self, model, backend: str, reasons: list[str]) -> ExportedGraphStages:
        """Stages for `backend` or the next one that starts (TorchGraphStages for torch); failures go to `reasons`."""
        candidates = [backend]
        if backend == "tensorrt":
            candidates += [_fallback_backend(self.device, self.env)[0], "torch"]
        elif backend == "onnxruntime":
            candidates += ["torch"]
        for candidate in dict.fromkeys(candidates):
            if candidate == "torch":
                break
            try:
                onnx_dir = ensure_onnx(model, self.cache_dir / "onnx" / model_fingerprint(model)[:16])
                stages = self._accelerated(model, candidate, onnx_dir)
                self.backend, self.onnx_dir = candidate, str(onnx_dir)
                return stages
            except Exception as error:  # a broken install or a failed build must not stop the robot
                reasons.append(f"{candidate} failed to start ({error.__class__.__name__}: {error})")
                self.failed = True
                # The summary line has only the exception's text; the traceback shows where it
                # came from (a bug in an accelerated backend must not hide behind the fallback). A
                # missing package is an expected reason to fall back: its traceback only at DEBUG.
                expected = isinstance(error, ImportError)
                logger.log(logging.DEBUG if expected else logging.WARNING,
                           "The %s backend raised while starting; falling back.", candidate, exc_info=True)
        self.backend = "torch"
        return TorchGraphStages(model)

    def _accelerated(self, model, candidate: str, onnx_dir: Path) -> ExportedGraphStages:
        if candidate == "onnxruntime":
            self.precision = "fp32"
            return OnnxRuntimeStages(onnx_dir, model.config, device=self.device, dtype=self.dtype)
        from ..tensorrt.builder import DEFAULT_WORKSPACE, EngineOptions
        from .tensorrt_stages import TensorRTStages

        options = EngineOptions(
            engine_cache_dir=self.cache_dir, engine_file_path=self.engine_file_path,
            force_engine_update=self.force_engine_update, enable_fp16=self.enable_fp16, enable_int8=self.enable_int8,
            max_workspace_size=self.max_workspace_size or DEFAULT_WORKSPACE,
            calibration_id=_calibration_id() if self.enable_int8 else "",
        )
        calibrators = _int8_calibrators(model, self.cache_dir / "calibration" / onnx_dir.name) if self.enable_int8 else None
        stages = TensorRTStages(onnx_dir, model.config, options, dtype=self.dtype, calibrator_factories=calibrators)
        self.engine_paths = {k: str(v) for k, v in stages.engine_paths.items()}
        self.precision = options.precision + " engines"
        return stages


def _calibration_id() -> str:
    from ..tensorrt.calibration import DEFAULT_NUM_SCENES, calibration_id

    return calibration_id(DEFAULT_NUM_SCENES, 0, 640, 480)


def _int8_calibrators(model, table_dir: Path) -> dict:
    """Per graph, a factory for the tabletop-scene entropy calibrator (used only if a build is needed).

    Tables live under the model's fingerprint: a new model never reuses another model's ranges.
    """
    from ..tensorrt.calibration import CALIBRATED_GRAPHS, calibration_batches, make_entropy_calibrator

    def factory(graph: str):
        return lambda: make_entropy_calibrator(
            calibration_batches(model, graph), table_dir / f"{graph}.{_calibration_id()}.table", device=0
        )

    return {graph: factory(graph) for graph in CALIBRATED_GRAPHS}


__all__ = [
    "BACKENDS",
    "DEVICES",
    "BackendInfo",
    "Environment",
    "OnnxRuntimeStages",
    "Resolution",
    "create_predictor",
    "default_dtype",
    "ensure_onnx",
    "model_fingerprint",
    "resolve_backend",
]
