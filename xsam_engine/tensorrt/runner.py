"""Execute a serialized TensorRT engine on torch CUDA tensors.

Bindings are by name. On TensorRT >= 8.5 (`num_io_tensors` API) every tensor's address is set
with `set_tensor_address` and the engine runs with `execute_async_v3` on torch's *current* CUDA
stream, so it orders correctly with the PyTorch work around it (no extra synchronisation).
Older engines/APIs fall back to binding indices and `execute_async_v2`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .profiles import ProfileShapes, check_shape_in_profile

logger = logging.getLogger(__name__)


def _torch_dtype(trt_dtype) -> torch.dtype:
    import tensorrt as trt

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[trt_dtype]


class EngineLoadError(RuntimeError):
    """The engine file exists but TensorRT cannot deserialise it (corrupt, other version or GPU)."""


class TensorRTRunner:
    """One engine + execution context; `runner(**inputs)` returns a dict of output tensors."""

    def __init__(self, engine_path: str | Path, profile_shapes: ProfileShapes | None = None, device: int | None = None) -> None:
        import tensorrt as trt

        from .builder import trt_logger

        self.path = Path(engine_path)
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        self.profile_shapes = profile_shapes or {}
        self._runtime = trt.Runtime(trt_logger())
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineLoadError(f"TensorRT could not deserialise {self.path}.")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(f"TensorRT could not create an execution context for {self.path} (out of memory?).")
        self._v3 = hasattr(self.engine, "num_io_tensors") and hasattr(self.context, "execute_async_v3")
        if self._v3:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            self._dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        else:  # TensorRT < 8.5 binding API
            names = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
            self.input_names = [n for i, n in enumerate(names) if self.engine.binding_is_input(i)]
            self.output_names = [n for i, n in enumerate(names) if not self.engine.binding_is_input(i)]
            self._dtypes = {n: _torch_dtype(self.engine.get_binding_dtype(i)) for i, n in enumerate(names)}

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"Missing engine inputs {sorted(missing)}; the engine takes {self.input_names}.")
        feeds = {}
        for name in self.input_names:
            tensor = inputs[name]
            check_shape_in_profile(name, tuple(tensor.shape), self.profile_shapes)
            feeds[name] = tensor.to(device=self.device, dtype=self._dtypes[name]).contiguous()
        stream = torch.cuda.current_stream(self.device)
        if self._v3:
            for name, tensor in feeds.items():
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution of {self.path.name} failed.")
            return outputs
        bindings = [0] * self.engine.num_bindings
        for name, tensor in feeds.items():
            index = self.engine.get_binding_index(name)
            self.context.set_binding_shape(index, tuple(tensor.shape))
            bindings[index] = tensor.data_ptr()
        outputs = {}
        for name in self.output_names:
            index = self.engine.get_binding_index(name)
            shape = tuple(self.context.get_binding_shape(index))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            bindings[index] = outputs[name].data_ptr()
        if not self.context.execute_async_v2(bindings, stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.path.name} failed.")
        return outputs
