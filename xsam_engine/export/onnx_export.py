"""Export X-SAM's image stages to ONNX (opset 17, external data, TensorRT-compatible operators).

    from xsam_engine.export import export_onnx
    paths = export_onnx(model, "/tmp/xsam_onnx")          # {graph name: Path to .onnx}

Each graph is written as `<name>.onnx` + `<name>.onnx.data` (weights as external data: SAM ViT-L is
1.2 GB and SigLIP2-so400m 1.6 GB in float32, and protobuf caps a single file at 2 GB) plus
`manifest.json` (config, opset, input/output specs, SHA-256 of every file), in a directory that
is never committed. Exports are always float32: TensorRT builds FP16/INT8 engines from them with
per-layer precision constraints (see `xsam_engine.tensorrt`).

The TorchScript-based exporter (`dynamo=False`) is used: it needs no extra package (the dynamo
exporter needs `onnxscript`), handles the HF SAM / SigLIP / Mask2Former modules as they are, and
its tracing turns every Python-level shape computation of the static-shape stages into constants.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ..configuration_xsam import XSamConfig
from ..modeling_xsam import XSamModel
from .graphs import GRAPH_NAMES, GraphSpec, build_graph, example_inputs, graph_specs

logger = logging.getLogger(__name__)

OPSET = 17  # >= 16 for GridSample; 17 adds LayerNormalization, which TensorRT >= 8.6 imports natively
MANIFEST_NAME = "manifest.json"
EXTERNAL_DATA_SUFFIX = ".data"


def file_sha256(path: str | Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_files(onnx_path: str | Path) -> list[Path]:
    """The graph file and its external-data file (if present), in that order."""
    onnx_path = Path(onnx_path)
    data = onnx_path.with_name(onnx_path.name + EXTERNAL_DATA_SUFFIX)
    return [onnx_path] + ([data] if data.is_file() else [])


def onnx_sha256(onnx_path: str | Path) -> str:
    """One hash over the graph and its external data: any change to either changes it."""
    digest = hashlib.sha256()
    for path in onnx_files(onnx_path):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _to_external_data(exported: Path, path: Path) -> None:
    """Rewrite an exported graph as `path` with all weights in `<name>.onnx.data` next to it."""
    import onnx

    model = onnx.load(str(exported), load_external_data=True)
    for stale in onnx_files(path):
        stale.unlink(missing_ok=True)
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + EXTERNAL_DATA_SUFFIX, size_threshold=1024,
    )
    del model
    gc.collect()


def export_graph(
    model: XSamModel, name: str, directory: str | Path, opset: int = OPSET, spec: GraphSpec | None = None
) -> Path:
    """Export one graph to `directory/<name>.onnx` (+ external data) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = spec or graph_specs(model.config)[name]
    module = build_graph(name, model).float()
    inputs = example_inputs(spec)
    path = directory / f"{name}.onnx"
    start = time.perf_counter()
    # The exporter writes one file per tensor next to the graph when it exceeds 2 GB; a private
    # scratch directory keeps those away from other graphs and is removed afterwards.
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory))
    try:
        _trace_to_onnx(module, spec, inputs, scratch / path.name, opset)
        _to_external_data(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("Exported %s to %s in %.1f s.", name, path, time.perf_counter() - start)
    return path


def _reference_points_float32(spatial_shapes_list, valid_ratios, device):
    """HF `Mask2FormerPixelDecoderEncoderOnly.get_reference_points` without `torch.linspace`.

    Forced by export: the TorchScript exporter lowers `linspace` to a float64 Range, which makes
    the deformable-attention sampling grid float64; ONNX Runtime has no float64 GridSample and
    TensorRT no float64 at all. `arange + 0.5` gives the same pixel centres in float32.
    """
    reference_points_list = []
    for level, (height, width) in enumerate(spatial_shapes_list):
        ref_y, ref_x = torch.meshgrid(
            torch.arange(height, dtype=torch.float32, device=device) + 0.5,
            torch.arange(width, dtype=torch.float32, device=device) + 0.5,
            indexing="ij",
        )
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
        reference_points_list.append(torch.stack((ref_x, ref_y), -1))
    reference_points = torch.cat(reference_points_list, 1)
    return reference_points[:, :, None] * valid_ratios[:, None]


@contextlib.contextmanager
def _export_patches():
    """Temporarily swap the export-hostile HF helpers (see `_reference_points_float32`)."""
    from transformers.models.mask2former import modeling_mask2former as m2f

    original = m2f.Mask2FormerPixelDecoderEncoderOnly.__dict__["get_reference_points"]
    m2f.Mask2FormerPixelDecoderEncoderOnly.get_reference_points = staticmethod(_reference_points_float32)
    try:
        yield
    finally:
        m2f.Mask2FormerPixelDecoderEncoderOnly.get_reference_points = original


def _trace_to_onnx(
    module: torch.nn.Module, spec: GraphSpec, inputs: dict[str, torch.Tensor], path: Path, opset: int
) -> None:
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), _export_patches():
        # Tracer warnings ("Converting a tensor to a Python integer/boolean") flag exactly the
        # static-shape constants we want baked in; they are expected for these graphs.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*dynamo=False.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            tuple(inputs[n] for n in spec.input_names),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes or None,
            do_constant_folding=True,
        )


def export_onnx(
    model: XSamModel,
    directory: str | Path,
    graphs: tuple[str, ...] | list[str] = GRAPH_NAMES,
    opset: int = OPSET,
    check: bool = True,
    batch_axis: bool = False,
) -> dict[str, Path]:
    """Export the chosen graphs, run `onnx.checker` on each and write `manifest.json`.

    The model is exported in float32 on the CPU whatever its current dtype/device (weights are
    copied per graph, so peak memory is about twice the largest graph plus the model).
    `batch_axis=True` exports a dynamic leading batch axis (`graph_specs(..., batch_axis=True)`),
    for servers that batch requests (Triton); the local backends use the batch-1 graphs.
    """
    directory = Path(directory)
    model = model.eval()
    if next(model.parameters()).device.type != "cpu" or model.dtype != torch.float32:
        raise ValueError(
            f"Export a float32 CPU model (got {model.dtype} on {model.device}); "
            "TensorRT derives FP16/INT8 engines from the float32 graphs."
        )
    specs = graph_specs(model.config, batch_axis)
    paths: dict[str, Path] = {}
    for name in graphs:
        paths[name] = export_graph(model, name, directory, opset, specs[name])
        if check:
            check_graph(paths[name])
        gc.collect()
    write_manifest(directory, model.config, paths, opset, batch_axis)
    return paths


def check_graph(path: str | Path) -> None:
    """`onnx.checker` with full shape inference, by path (works for > 2 GB graphs)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def write_manifest(
    directory: Path, config: XSamConfig, paths: dict[str, Path], opset: int, batch_axis: bool = False
) -> Path:
    manifest_path = directory / MANIFEST_NAME
    existing = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    config_json = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as stored
    same_export = existing.get("config") == config_json and existing.get("batch_axis", False) == batch_axis
    graphs = existing.get("graphs", {}) if same_export else {}
    specs = graph_specs(config, batch_axis)
    for name, path in paths.items():
        spec = specs[name]
        graphs[name] = {
            "file": path.name,
            "sha256": onnx_sha256(path),
            "bytes": sum(p.stat().st_size for p in onnx_files(path)),
            "inputs": {t.name: list(t.shape) for t in spec.inputs},
            "outputs": {t.name: list(t.shape) for t in spec.outputs},
        }
    manifest = {"config": config_json, "opset": opset, "torch": torch.__version__, "batch_axis": batch_axis, "graphs": graphs}
    tmp = manifest_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    return manifest_path


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {MANIFEST_NAME}; export the model with export_onnx first.")
    return json.loads(path.read_text())


def onnx_operators(path: str | Path) -> set[str]:
    """Operator types used by a graph (for the TensorRT-support check)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {node.op_type for node in model.graph.node}


def float64_tensors(path: str | Path) -> list[str]:
    """Names of float64 values in a graph (TensorRT has no float64; must be empty)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    values = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    found = [v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE]
    found += [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.DOUBLE]
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == onnx.TensorProto.DOUBLE:
                found.append(node.output[0])
    return found
