"""Triton Python-backend model: one exported X-SAM graph run by ONNX Runtime (CPU).

Copied as `<graph>/1/model.py` by `write_triton_repository(..., platform="python")`. It imports
only what Triton's Python backend provides plus numpy and onnxruntime (nothing from xsam_engine:
the server's Python need not have this repository). Parameters from config.pbtxt:
`onnx_file` (the graph next to this file) and `intra_op_threads` (0 = ONNX Runtime's default).

Tensors cross the backend boundary through DLPack (`np.from_dlpack`, `Tensor.from_dlpack`), not
`as_numpy()` / `Tensor(name, array)`: the stubs of some Triton builds (the nvidia-pytriton 0.7
bundle) use a pybind11 that reads NumPy 1's array-descriptor layout and hand back zero-byte
outputs under NumPy 2; DLPack does not depend on that layout.

Batching: Triton's dynamic batcher hands `execute` several requests at once (the Python backend
does not concatenate them); requests whose non-batch dims agree are stacked along the batch axis
and run as one ONNX Runtime call, then the outputs are split back per request.
"""

import json
import os

import numpy as np
import onnxruntime

try:
    import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
except ImportError:  # imported as part of xsam_engine (not inside Triton): only the file is used, by copying
    pb_utils = None


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        threads = int(parameters.get("intra_op_threads", "0") or 0)
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            os.path.join(folder, parameters["onnx_file"]), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds = [{n: np.from_dlpack(pb_utils.get_input_tensor_by_name(r, n)) for n in self.input_names} for r in requests]
        responses = [None] * len(requests)
        groups = {}
        for index, feed in enumerate(feeds):
            key = tuple((n, feed[n].shape[1:]) for n in self.input_names)
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            try:
                stacked = {n: np.concatenate([feeds[i][n] for i in indices]) for n in self.input_names}
                outputs = self.session.run(self.output_names, stacked)
                start = 0
                for i in indices:
                    size = feeds[i][self.input_names[0]].shape[0]
                    tensors = [pb_utils.Tensor.from_dlpack(n, np.ascontiguousarray(o[start : start + size]))
                               for n, o in zip(self.output_names, outputs)]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start += size
            except Exception as error:  # one bad group must not fail the others
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(error).__name__}: {error}"))
        return responses

    def finalize(self):
        self.session = None
