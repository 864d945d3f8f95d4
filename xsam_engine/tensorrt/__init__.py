"""TensorRT engines for X-SAM's image stages: builder, engine cache, runner, INT8 calibration.

Importing this package never imports `tensorrt`; functions that need it import it when called,
so the cache keys, invalidation rules, optimisation profiles and calibration data are usable
(and tested) on machines without TensorRT or a GPU.
"""

from .builder import EngineOptions, GpuInfo, detect_gpu, engine_key, get_engine
from .cache import EngineCache, EngineCacheKey, default_cache_dir, precision_name
from .profiles import DynamicRange, default_ranges, profile_shapes


def tensorrt_available() -> bool:
    """True when the `tensorrt` Python package imports (it may still lack a GPU to run on)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken install raising OSError / RuntimeError
        return False
    return True


__all__ = [
    "DynamicRange",
    "EngineCache",
    "EngineCacheKey",
    "EngineOptions",
    "GpuInfo",
    "default_cache_dir",
    "default_ranges",
    "detect_gpu",
    "engine_key",
    "get_engine",
    "precision_name",
    "profile_shapes",
    "tensorrt_available",
]
