"""`ImageStages` on TensorRT engines (built from the ONNX graphs on first use, then cached)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..configuration_xsam import XSamConfig
from ..export.graphs import GRAPH_NAMES, graph_specs
from ..export.onnx_export import read_manifest
from ..tensorrt.builder import EngineOptions, GpuInfo, detect_gpu, get_engine
from ..tensorrt.runner import EngineLoadError, TensorRTRunner
from .common import ExportedGraphStages

logger = logging.getLogger(__name__)


class TensorRTStages(ExportedGraphStages):
    """One engine per graph; engines are built or loaded at construction (the node's start-up).

    Args:
        onnx_dir: directory written by `export_onnx` (its manifest holds the graphs' hashes).
        config: the model configuration the graphs were exported from.
        options: precision, cache and workspace parameters.
        dtype: dtype of the tensors handed back to the PyTorch parts (the LLM's dtype).
        calibrator_factories: per graph, a zero-argument callable returning an INT8 calibrator.
        graphs: which graphs to build (default: all five).
    """

    def __init__(
        self,
        onnx_dir: str | Path,
        config: XSamConfig,
        options: EngineOptions | None = None,
        dtype: torch.dtype = torch.float16,
        calibrator_factories: dict | None = None,
        graphs: tuple[str, ...] = GRAPH_NAMES,
        gpu: GpuInfo | None = None,
    ) -> None:
        self.onnx_dir = Path(onnx_dir)
        self.config = config
        self.options = options or EngineOptions()
        self.dtype = dtype
        self.gpu = gpu or detect_gpu()
        self.device = torch.device("cuda", self.gpu.index)
        self.specs = graph_specs(config)
        manifest = read_manifest(self.onnx_dir)["graphs"]
        self.runners: dict[str, TensorRTRunner] = {}
        self.engine_paths: dict[str, Path] = {}
        for name in graphs:
            onnx_path = self.onnx_dir / f"{name}.onnx"
            factory = (calibrator_factories or {}).get(name)
            self.runners[name] = self._load(name, onnx_path, manifest[name]["sha256"], factory)

    def _load(self, name: str, onnx_path: Path, onnx_hash: str, calibrator_factory) -> TensorRTRunner:
        # A single `engine_file_path` can only hold one graph; per-graph files derive from it.
        options = self.options
        if options.enable_int8 and calibrator_factory is None:
            # No calibration data for this graph (the tiny region sampler): keep it FP16 rather
            # than let TensorRT guess INT8 ranges.
            options = replace(options, enable_int8=False, calibration_id="")
        if options.engine_file_path and len(self.specs) > 1:
            base = Path(options.engine_file_path)
            options = replace(options, engine_file_path=base.with_name(f"{base.stem}.{name}{base.suffix or '.engine'}"))
        for attempt in (1, 2):
            path, key, cache = get_engine(
                onnx_path, self.specs[name], options, self.config.sampler_num_points, self.gpu, calibrator_factory,
                onnx_hash=onnx_hash,
            )
            shapes = {n: triple for n, triple in key.profile}
            try:
                runner = TensorRTRunner(path, shapes, self.gpu.index)
            except EngineLoadError as error:
                if attempt == 2:
                    raise
                cache.invalidate(key, str(error))  # corrupt or incompatible: rebuild once
                continue
            self.engine_paths[name] = path
            return runner
        raise AssertionError("unreachable")

    def run_graph(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.runners[name](**inputs)
        return [outputs[n].to(self.dtype) for n in self.specs[name].output_names]
