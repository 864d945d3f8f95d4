"""ONNX export of X-SAM's image stages and its verification against PyTorch.

`export_onnx(model, directory)` writes the five graphs described in `graphs.py` (SAM mask
encoder with seg-projector tokens and connector pyramid, SigLIP2 vision encoder with projector,
pixel decoder, conditioned mask decoder with a dynamic condition count, region sampler);
`verify.py` checks them with `onnx.checker` and ONNX Runtime against PyTorch.
"""

from .graphs import GRAPH_NAMES, GraphSpec, TensorSpec, graph_specs
from .onnx_export import OPSET, check_graph, export_onnx, onnx_sha256, read_manifest

__all__ = [
    "GRAPH_NAMES",
    "OPSET",
    "GraphSpec",
    "TensorSpec",
    "check_graph",
    "export_onnx",
    "graph_specs",
    "onnx_sha256",
    "read_manifest",
]
