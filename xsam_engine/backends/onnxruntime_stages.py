"""`ImageStages` on ONNX Runtime (CPU, or CUDA execution provider with zero-copy I/O binding)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..configuration_xsam import XSamConfig
from ..export.graphs import GraphSpec, graph_specs
from .common import ExportedGraphStages

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def available_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


class OnnxRuntimeStages(ExportedGraphStages):
    """The five exported graphs run by ONNX Runtime sessions, created on first use.

    Inputs arrive as torch tensors (any dtype/device) and outputs leave as torch tensors in
    `dtype` on `device`, so the predictor and the PyTorch LLM around it do not notice the backend.
    On CUDA the tensors are bound by pointer (I/O binding): no host round trip.
    """

    def __init__(
        self,
        onnx_dir: str | Path,
        config: XSamConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        num_threads: int | None = None,
        low_memory: bool = False,
    ) -> None:
        """`low_memory`: no CPU memory arena and no weight pre-packing (ONNX Runtime otherwise keeps a
        second, re-laid-out copy of every MatMul weight: ~2x the graph size for SAM ViT-L / SigLIP2)."""
        self.low_memory = low_memory
        self.onnx_dir = Path(onnx_dir)
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_threads = num_threads
        self.specs: dict[str, GraphSpec] = graph_specs(config)
        if self.device.type == "cuda":
            if CUDA_PROVIDER not in available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu).")
            self.providers: list = [(CUDA_PROVIDER, {"device_id": self.device.index or 0}), CPU_PROVIDER]
        else:
            self.providers = [CPU_PROVIDER]
        self._sessions: dict = {}
        for name in self.specs:
            if not (self.onnx_dir / f"{name}.onnx").is_file():
                raise FileNotFoundError(f"{self.onnx_dir / f'{name}.onnx'} is missing; run export_onnx first.")

    def session(self, name: str):
        if name not in self._sessions:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = self.num_threads or torch.get_num_threads()
            options.log_severity_level = 3
            if self.low_memory:
                options.enable_cpu_mem_arena = False
                options.add_session_config_entry("session.disable_prepacking", "1")
            self._sessions[name] = onnxruntime.InferenceSession(
                str(self.onnx_dir / f"{name}.onnx"), sess_options=options, providers=self.providers
            )
        return self._sessions[name]

    def warm_up(self, names: tuple[str, ...] | None = None) -> None:
        """Create the sessions now (graph optimisation takes seconds for the big encoders)."""
        for name in names or tuple(self.specs):
            self.session(name)

    def run_graph(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run one graph on named torch inputs; outputs in the spec's order, as `dtype` on `device`."""
        spec = self.specs[name]
        session = self.session(name)
        # The exporter drops inputs a graph does not read (e.g. level_2 of a 2-layer test decoder).
        input_names = [i.name for i in session.get_inputs()]
        if self.device.type != "cuda":
            feeds = {n: inputs[n].detach().to("cpu", torch.float32).contiguous().numpy() for n in input_names}
            results = session.run(spec.output_names, feeds)
            return [torch.from_numpy(r).to(self.dtype) for r in results]
        binding = session.io_binding()
        kept = []
        for input_name in input_names:
            tensor = inputs[input_name].detach().to(self.device, torch.float32).contiguous()
            kept.append(tensor)
            binding.bind_input(input_name, "cuda", self.device.index or 0, np.float32, tuple(tensor.shape), tensor.data_ptr())
        for output_name in spec.output_names:
            binding.bind_output(output_name, "cuda", self.device.index or 0)
        torch.cuda.current_stream(self.device).synchronize()  # ORT uses its own stream
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return [torch.from_dlpack(o.to_dlpack()).to(self.dtype) if hasattr(o, "to_dlpack")
                else torch.from_numpy(o.numpy()).to(self.device, self.dtype) for o in outputs]
