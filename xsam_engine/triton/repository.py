"""A Triton Inference Server model repository from X-SAM's exported image-stage graphs.

    python -m xsam_engine.export --triton-repository /models [--triton-platform onnxruntime_onnx]

writes one Triton model per graph (`GRAPH_NAMES`):

    /models/<graph>/config.pbtxt      names, dims, dtypes, batching, instances, platform
    /models/<graph>/1/<graph>.onnx    (+ .onnx.data: the weights as external data)
    /models/<graph>/1/model.py        platform "python" only (ONNX Runtime inside Triton's Python backend)
    /models/xsam_frame/config.pbtxt   ensemble: mask encoder -> pixel decoder -> mask decoder
    /models/build_plans.sh            platform "tensorrt_plan" only (trtexec on the server's GPU)

`xsam_frame` is a Triton ensemble (scheduled by the server core, no backend of its own) that
runs a whole frame: pixels and the cached condition in, class and mask logits out. The SAM
pyramid and the pixel-decoder features (released model: 71 + 39 MB in float32) then never leave
the server; a tracked frame costs 12.6 MB up and 13.1 MB down instead of 233 MB for the five
stage calls (docs/fleet.md, "Network per camera").

Batching: the graphs are exported with a dynamic leading `batch` axis (`graph_specs(config,
batch_axis=True)`); each image / request is independent along it, so `max_batch_size` > 0 and
Triton's dynamic batcher stacks the requests of several cameras or robots into one execution.
The client sends batch 1 (`[1, ...]`). Triton batches only requests whose other dims agree: the
mask decoder's `num_conditions` (vocabulary size) and the region encoder's `num_points` are
dynamic, so two robots asking with different vocabularies are executed separately - correct,
just not batched.

Every config carries the model's fingerprint (`parameters { key: "xsam_fingerprint" }`,
`backends.model_fingerprint`): the client refuses a server whose graphs come from other weights.
Config format: Triton's `model_config.proto` (text protobuf).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..export.graphs import BATCH_AXIS, GRAPH_NAMES, GraphSpec, TensorSpec, graph_specs
from ..export.onnx_export import OPSET, export_graph, onnx_files, onnx_sha256
from ..tensorrt.profiles import DEFAULT_MAX_CONDITIONS, DEFAULT_OPT_CONDITIONS, default_ranges

logger = logging.getLogger(__name__)

PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan", "python")
FRAME_MODEL = "xsam_frame"
INSTANCE_KINDS = ("gpu", "cpu")
FINGERPRINT_PARAMETER = "xsam_fingerprint"
VERSION = "1"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("python_model.py")
# ONNX element types (onnx.TensorProto) -> Triton data types; our graphs use float32 only.
TRITON_DTYPES = {"float32": "TYPE_FP32"}


@dataclass(frozen=True)
class RepositoryOptions:
    """How the server runs the graphs.

    Attributes:
        platform: "onnxruntime_onnx" (Triton's ONNX Runtime backend), "tensorrt_plan" (engines
            built on the server's GPU with `build_plans.sh`), or "python" (ONNX Runtime inside
            Triton's Python backend: servers without the ONNX Runtime backend, and the tests).
        max_batch_size: largest batch the dynamic batcher forms (>= 1); about the number of
            cameras that share a model, capped by GPU memory (see docs/fleet.md, Sizing).
        max_queue_delay_us: how long the batcher may hold a request to fill a batch (0 = only
            batch what is already queued while the model is busy: no added latency).
        instance_count: model instances (parallel executions) per GPU or on the CPU.
        instance_kind: "gpu" or "cpu" (the "python" platform always runs on the CPU here).
        python_threads: "python" only: ONNX Runtime intra-op threads per instance (0 = its default).
    """

    platform: str = "onnxruntime_onnx"
    max_batch_size: int = 8
    max_queue_delay_us: int = 500
    instance_count: int = 1
    instance_kind: str = "gpu"
    python_threads: int = 0

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {PLATFORMS}, got {self.platform!r}.")
        if self.instance_kind not in INSTANCE_KINDS:
            raise ValueError(f"instance_kind must be one of {INSTANCE_KINDS}, got {self.instance_kind!r}.")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (the graphs have a batch axis), got {self.max_batch_size}.")
        if self.instance_count < 1 or self.max_queue_delay_us < 0 or self.python_threads < 0:
            raise ValueError("instance_count must be >= 1, max_queue_delay_us and python_threads >= 0.")


def _dims(tensor: TensorSpec) -> str:
    """Triton dims without the batch axis; dynamic axes are -1."""
    return ", ".join(str(-1 if isinstance(size, str) else size) for size in tensor.shape[1:])


def _tensor_block(tensors: list[TensorSpec]) -> str:
    entries = [
        f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_DTYPES[t.dtype]}\n    dims: [ {_dims(t)} ]\n  }}'
        for t in tensors
    ]
    return "[\n" + ",\n".join(entries) + "\n]"


def _parameters(values: dict[str, str]) -> str:
    entries = [f'  {{\n    key: "{k}"\n    value: {{ string_value: "{v}" }}\n  }}' for k, v in values.items()]
    return "[\n" + ",\n".join(entries) + "\n]"


def render_config(
    spec: GraphSpec, inputs: list[TensorSpec], options: RepositoryOptions, parameters: dict[str, str]
) -> str:
    """config.pbtxt text for one graph; `inputs` = the inputs the exported file really has."""
    for tensor in (*spec.inputs, *spec.outputs):
        if tensor.shape[0] != BATCH_AXIS:
            raise ValueError(f"{spec.name}.{tensor.name} has no leading batch axis; use graph_specs(config, batch_axis=True).")
    if options.platform == "python":
        runtime = 'backend: "python"'
        kind = "KIND_CPU"
    else:
        filename = f"{spec.name}.onnx" if options.platform == "onnxruntime_onnx" else "model.plan"
        runtime = f'platform: "{options.platform}"\ndefault_model_filename: "{filename}"'
        kind = "KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"
    return (
        f"# X-SAM {spec.name} graph, written by `python -m xsam_engine.export --triton-repository`.\n"
        f'name: "{spec.name}"\n{runtime}\n'
        f"max_batch_size: {options.max_batch_size}\n"
        f"input {_tensor_block(inputs)}\n"
        f"output {_tensor_block(list(spec.outputs))}\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {options.instance_count}\n    kind: {kind}\n  }}\n]\n"
        f"parameters {_parameters(parameters)}\n"
    )


def render_frame_ensemble(
    specs: dict[str, GraphSpec], inputs_by_graph: dict[str, list[TensorSpec]], options: RepositoryOptions, fingerprint: str
) -> str:
    """config.pbtxt of the `xsam_frame` ensemble: mask_encoder -> pixel_decoder -> mask_decoder.

    Intermediate tensors are named `_<tensor>`; the mask decoder's condition inputs and its two
    outputs are the ensemble's own. Only inputs the exported graphs declare are mapped.
    """
    decoder = {t.name: t for t in inputs_by_graph["mask_decoder"]}
    inputs = [inputs_by_graph["mask_encoder"][0], decoder["condition_embeds"], decoder["seg_embeds"]]

    def step(model: str, input_map: dict[str, str], output_map: dict[str, str]) -> str:
        pairs = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in input_map.items()]
        pairs += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in output_map.items()]
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(pairs) + "\n    }"

    pyramid = [t.name for t in inputs_by_graph["pixel_decoder"]]
    features = [t.name for t in inputs_by_graph["mask_decoder"] if t.name not in ("condition_embeds", "seg_embeds")]
    steps = [
        step("mask_encoder", {"pixel_values": "pixel_values"}, {n: f"_{n}" for n in pyramid}),
        step("pixel_decoder", {n: f"_{n}" for n in pyramid}, {n: f"_{n}" for n in features}),
        step("mask_decoder", {**{n: f"_{n}" for n in features}, "condition_embeds": "condition_embeds", "seg_embeds": "seg_embeds"},
             {n: n for n in specs["mask_decoder"].output_names}),
    ]
    return (
        f"# X-SAM tracked frame: mask_encoder -> pixel_decoder -> mask_decoder on the server (features stay here).\n"
        f'name: "{FRAME_MODEL}"\nplatform: "ensemble"\nmax_batch_size: {options.max_batch_size}\n'
        f"input {_tensor_block(inputs)}\n"
        f"output {_tensor_block(list(specs['mask_decoder'].outputs))}\n"
        "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
        f"parameters {_parameters({FINGERPRINT_PARAMETER: fingerprint})}\n"
    )


def onnx_input_names(path: str | Path) -> list[str]:
    """Input names of an exported graph (the exporter drops inputs a graph never reads)."""
    import onnx

    return [value.name for value in onnx.load(str(path), load_external_data=False).graph.input]


def write_triton_repository(model, directory: str | Path, options: RepositoryOptions | None = None) -> dict[str, Path]:
    """Export every graph of `model` (float32, CPU) into a Triton model repository at `directory`.

    Existing model folders of the five graphs are replaced; anything else in `directory` is kept
    (a repository may hold other models). Returns {graph: model folder}.
    """
    from ..backends import model_fingerprint

    options = options or RepositoryOptions()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    specs = graph_specs(model.config, batch_axis=True)
    fingerprint = model_fingerprint(model)
    folders: dict[str, Path] = {}
    inputs_by_graph: dict[str, list[TensorSpec]] = {}
    for name in GRAPH_NAMES:
        folder = directory / name
        if folder.exists():
            shutil.rmtree(folder)
        version = folder / VERSION
        path = export_graph(model, name, version, OPSET, specs[name])
        present = onnx_input_names(path)
        inputs = inputs_by_graph[name] = [t for t in specs[name].inputs if t.name in present]
        parameters = {FINGERPRINT_PARAMETER: fingerprint, "onnx_sha256": onnx_sha256(path)}
        if options.platform == "python":
            shutil.copyfile(PYTHON_MODEL_SOURCE, version / "model.py")
            parameters.update(onnx_file=path.name, intra_op_threads=str(options.python_threads))
        (folder / "config.pbtxt").write_text(render_config(specs[name], inputs, options, parameters))
        folders[name] = folder
    frame = directory / FRAME_MODEL
    if frame.exists():
        shutil.rmtree(frame)
    (frame / VERSION).mkdir(parents=True)  # an ensemble has an empty version folder
    (frame / "config.pbtxt").write_text(render_frame_ensemble(specs, inputs_by_graph, options, fingerprint))
    folders[FRAME_MODEL] = frame
    if options.platform == "tensorrt_plan":
        script = directory / "build_plans.sh"
        script.write_text(build_plans_script(inputs_by_graph, options, model.config.sampler_num_points))
        script.chmod(0o755)
    summary = {
        "fingerprint": fingerprint, "platform": options.platform, "opset": OPSET,
        "graphs": {name: {"bytes": sum(p.stat().st_size for p in onnx_files(folders[name] / VERSION / f"{name}.onnx"))}
                   for name in GRAPH_NAMES},
        "ensembles": [FRAME_MODEL],
    }
    logger.info("Wrote the Triton model repository %s: %s", directory, json.dumps(summary))
    return folders


def build_plans_script(inputs_by_graph: dict[str, list[TensorSpec]], options: RepositoryOptions, num_points: int) -> str:
    """A shell script that builds `<graph>/1/model.plan` from the ONNX next to it with trtexec.

    Run it on the server's GPU inside NVIDIA's Triton container (TensorRT engines are specific to
    the GPU model and TensorRT version). Profiles: batch 1..max_batch_size (opt = max), conditions
    1..256 (opt 8), points 1..sampler points, as the local TensorRT backend uses.
    """
    ranges = default_ranges(num_points, DEFAULT_MAX_CONDITIONS, DEFAULT_OPT_CONDITIONS)
    bounds = {"min": {BATCH_AXIS: 1}, "opt": {BATCH_AXIS: options.max_batch_size}, "max": {BATCH_AXIS: options.max_batch_size}}
    for axis, r in ranges.items():
        bounds["min"][axis], bounds["opt"][axis], bounds["max"][axis] = r.minimum, r.optimum, r.maximum
    lines = [
        "#!/usr/bin/env bash",
        "# Build TensorRT plans for this repository on the server's GPU (inside nvcr.io/nvidia/tritonserver:<yy.mm>-py3).",
        "# FP16 by default; set PRECISION= (empty) for FP32. Compare against the onnxruntime_onnx repository",
        "# before serving (docs/fleet.md); FP16 LayerNorm overflow is the known risk in ViTs.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'PRECISION="${PRECISION---fp16}"',
    ]
    for name, inputs in inputs_by_graph.items():
        shapes = {
            key: ",".join(f"{t.name}:{'x'.join(str(s) for s in t.concrete_shape(sizes))}" for t in inputs)
            for key, sizes in bounds.items()
        }
        lines.append(
            f"trtexec --onnx={name}/{VERSION}/{name}.onnx --saveEngine={name}/{VERSION}/model.plan $PRECISION "
            f"--minShapes={shapes['min']} --optShapes={shapes['opt']} --maxShapes={shapes['max']}"
        )
    return "\n".join(lines) + "\n"
