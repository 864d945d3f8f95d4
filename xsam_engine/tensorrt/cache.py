"""Engine cache: one serialized TensorRT engine per (ONNX graph, TensorRT version, GPU, precision, shapes).

A TensorRT engine is only valid for the exact TensorRT version and GPU (model and compute
capability) it was built on, and it bakes in its precision and optimisation-profile shapes.
`EngineCacheKey` holds all of these; its digest names the engine file, and a JSON sidecar next
to the engine stores the full key plus the engine's size and SHA-256. `EngineCache.lookup`
returns an engine only when the sidecar matches the wanted key *and* the file's size and hash
match, so a changed ONNX file, a TensorRT upgrade, another GPU, another precision or profile,
and a truncated or corrupt file all lead to a rebuild. A file that passes these checks but fails
to deserialise is reported back with `EngineCache.invalidate` (the runner does this), which
deletes it so the next call rebuilds.

Parameters follow Isaac ROS' TensorRT node: `engine_cache_dir` (where engines live),
`engine_file_path` (one explicit engine file instead of the cache directory),
`force_engine_update` (always rebuild), `enable_fp16`, `enable_int8`, `max_workspace_size`.
No TensorRT import here: everything is testable without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..export.onnx_export import file_sha256

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
SIDECAR_SUFFIX = ".json"
PRECISIONS = ("fp32", "fp16", "int8", "fp8")


def default_cache_dir() -> Path:
    """$XSAM_ENGINE_CACHE, else $XDG_CACHE_HOME/xsam_ros/engines, else ~/.cache/xsam_ros/engines."""
    if os.environ.get("XSAM_ENGINE_CACHE"):
        return Path(os.environ["XSAM_ENGINE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xsam_ros" / "engines"


def precision_name(enable_fp16: bool, enable_int8: bool = False, enable_fp8: bool = False) -> str:
    """The cache's precision label: the lowest precision TensorRT may choose for a layer."""
    if enable_fp8:
        return "fp8"
    if enable_int8:
        return "int8"
    return "fp16" if enable_fp16 else "fp32"


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialized engine depends on.

    Attributes:
        graph: graph name ("mask_encoder", ...), for readable file names.
        onnx_sha256: hash of the ONNX graph and its external data (`onnx_sha256`).
        tensorrt_version: `tensorrt.__version__` of the builder (engines are not portable across versions).
        gpu_name: e.g. "NVIDIA H100 80GB HBM3", "Orin (nvgpu)".
        compute_capability: e.g. "9.0", "8.7".
        precision: one of PRECISIONS.
        profile: per dynamic input, its (min, opt, max) shapes, as sorted tuples.
        extra: anything else baked into the engine (e.g. the INT8 calibration set), sorted pairs.
    """

    graph: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: tuple[tuple[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]], ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")

    @staticmethod
    def profile_from_shapes(shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]):
        return tuple(sorted((name, tuple(tuple(int(v) for v in s) for s in triple)) for name, triple in shapes.items()))

    def to_json(self) -> dict:
        data = asdict(self)
        data["profile"] = [[name, [list(s) for s in triple]] for name, triple in self.profile]
        data["extra"] = [list(pair) for pair in self.extra]
        return data

    @classmethod
    def from_json(cls, data: dict) -> EngineCacheKey:
        profile = tuple((name, tuple(tuple(s) for s in triple)) for name, triple in data.get("profile", ()))
        extra = tuple(tuple(pair) for pair in data.get("extra", ()))
        fields = {k: data[k] for k in ("graph", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision")}
        return cls(**fields, profile=profile, extra=extra)

    def digest(self) -> str:
        payload = json.dumps({"format": CACHE_FORMAT, **self.to_json()}, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()

    def file_name(self) -> str:
        gpu = "-".join("".join(c if c.isalnum() else " " for c in self.gpu_name.lower()).split()) or "gpu"
        return f"{self.graph}.{self.precision}.sm{self.compute_capability.replace('.', '')}.{gpu}.{self.digest()[:16]}.engine"

    def differences(self, other: EngineCacheKey) -> list[str]:
        """Names of the fields that differ (for the rebuild log line)."""
        mine, theirs = self.to_json(), other.to_json()
        return [name for name in mine if mine[name] != theirs.get(name)]


@dataclass
class CacheLookup:
    """Result of a cache lookup: `path` is usable when `hit`; `reason` says why not otherwise."""

    path: Path
    hit: bool
    reason: str


class EngineCache:
    """Engines in `engine_cache_dir`, or one fixed `engine_file_path` (Isaac ROS style)."""

    def __init__(self, engine_cache_dir: str | Path | None = None, engine_file_path: str | Path | None = None) -> None:
        self.directory = Path(engine_cache_dir) if engine_cache_dir else default_cache_dir()
        self.engine_file_path = Path(engine_file_path) if engine_file_path else None

    def path_for(self, key: EngineCacheKey) -> Path:
        return self.engine_file_path if self.engine_file_path else self.directory / key.file_name()

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + SIDECAR_SUFFIX)

    @property
    def timing_cache_path(self) -> Path:
        """Shared across graphs and builds (TensorRT keys its entries per layer and GPU itself)."""
        base = self.engine_file_path.parent if self.engine_file_path else self.directory
        return base / "timing.cache"

    def lookup(self, key: EngineCacheKey, force_update: bool = False) -> CacheLookup:
        """Is there a valid engine for `key`? Never raises for a bad file: it reports why."""
        path = self.path_for(key)
        if force_update:
            return CacheLookup(path, False, "force_engine_update is set")
        if not path.is_file():
            return CacheLookup(path, False, "no engine file yet")
        sidecar = self.sidecar(path)
        try:
            meta = json.loads(sidecar.read_text())
            stored = EngineCacheKey.from_json(meta["key"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            return CacheLookup(path, False, f"unreadable metadata {sidecar.name} ({error.__class__.__name__})")
        if stored != key:
            return CacheLookup(path, False, "built for a different " + ", ".join(key.differences(stored)))
        size = path.stat().st_size
        if size != meta.get("engine_bytes"):
            return CacheLookup(path, False, f"engine file is {size} bytes, expected {meta.get('engine_bytes')} (truncated?)")
        if file_sha256(path) != meta.get("engine_sha256"):
            return CacheLookup(path, False, "engine file hash does not match (corrupt)")
        return CacheLookup(path, True, "cached")

    def store(self, key: EngineCacheKey, engine: bytes | memoryview, build_seconds: float | None = None) -> Path:
        """Write the engine and its sidecar atomically (a crash leaves no half-written engine)."""
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = bytes(engine)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        meta = {
            "format": CACHE_FORMAT,
            "key": key.to_json(),
            "engine_bytes": len(data),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "build_seconds": build_seconds,
        }
        sidecar = self.sidecar(path)
        tmp_meta = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
        tmp_meta.replace(sidecar)
        return path

    def invalidate(self, key: EngineCacheKey, reason: str) -> None:
        """Delete an engine that passed the checks but could not be used (e.g. deserialisation failed)."""
        path = self.path_for(key)
        logger.warning("Discarding TensorRT engine %s: %s; it will be rebuilt.", path, reason)
        for stale in (path, self.sidecar(path)):
            stale.unlink(missing_ok=True)
