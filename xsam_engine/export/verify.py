"""Verify exported graphs: `onnx.checker`, operator/dtype checks for TensorRT, and ONNX Runtime vs PyTorch.

Two levels:

* `compare_graphs`: every graph alone on the same realistic inputs (a generated tabletop scene
  pushed through the PyTorch stages upstream of it) -> max abs error per output (and the error
  relative to the output's largest magnitude).
* `compare_predictors`: the whole `XSamPredictor` with PyTorch stages vs ONNX Runtime stages on
  the same image and requests -> IoU of every final mask (per instance, matched by rank) and of
  all decoder queries' binarised masks; the LLM and post-processing are shared PyTorch code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..masks import mask_iou
from ..modeling_xsam import XSamModel
from ..processing import XSamImageProcessor
from .graphs import GRAPH_NAMES, build_graph, graph_specs
from .onnx_export import check_graph, float64_tensors, onnx_operators

logger = logging.getLogger(__name__)

# Operators of the exported graphs that TensorRT's ONNX parser (8.6 - 10.x) imports natively
# (onnx-tensorrt docs/operators.md). `check_tensorrt_operators` fails on anything else.
TENSORRT_OPERATORS = frozenset({
    "Add", "And", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "Cos", "Div", "Einsum", "Equal",
    "Erf", "Exp", "Expand", "Flatten", "Gather", "Gemm", "GridSample", "Identity", "InstanceNormalization",
    "LayerNormalization", "Less", "MatMul", "Max", "Mod", "Mul", "Not", "Pad", "Pow", "Range", "ReduceL2", "ReduceMax",
    "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Split",
    "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
})


def check_tensorrt_compatibility(path: str | Path) -> list[str]:
    """Problems that would stop TensorRT: unsupported operators or float64 values (empty = fine)."""
    problems = [f"operator {op} is not imported by TensorRT" for op in sorted(onnx_operators(path) - TENSORRT_OPERATORS)]
    doubles = float64_tensors(path)
    if doubles:
        problems.append(f"{len(doubles)} float64 values (TensorRT has no float64), e.g. {doubles[:3]}")
    return problems


@torch.no_grad()
def reference_inputs(model: XSamModel, image: np.ndarray, num_conditions: int = 3, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Realistic float32 inputs of every graph for one image (upstream stages run in PyTorch)."""
    from ..backends.common import sample_region_points, token_map_from_sam_tokens

    config = model.config
    processor = XSamImageProcessor(config.vision, config.mask_encoder)
    specs = graph_specs(config)
    sam = processor.sam_inputs(image)
    mask_output = model.encode_mask_image(sam.pixel_values)
    pixel_features = model.encode_pixels(mask_output)
    sam_tokens = model.sam_tokens(mask_output)
    generator = torch.Generator().manual_seed(seed)
    hidden = config.decoder.hidden_dim
    height, width = sam.scaled_size
    prompt = torch.zeros(config.mask_encoder.image_size, config.mask_encoder.image_size, dtype=torch.bool)
    prompt[height // 4 : height // 2, width // 4 : width // 2] = True
    return {
        "mask_encoder": {"pixel_values": sam.pixel_values},
        "vision_encoder": {"pixel_values": processor.siglip_inputs(image)},
        "pixel_decoder": dict(zip(specs["pixel_decoder"].input_names, mask_output.multi_scale_features)),
        "mask_decoder": {
            "mask_features": pixel_features.mask_features,
            **{f"level_{i}": t for i, t in enumerate(pixel_features.multi_scale_features)},
            "condition_embeds": torch.randn(1, num_conditions, hidden, generator=generator),
            "seg_embeds": torch.randn(1, hidden, generator=generator),
        },
        "region_encoder": {
            "token_map": token_map_from_sam_tokens(sam_tokens[0]),
            "points": sample_region_points(prompt, config.sampler_num_points, generator)[None],
        },
    }


@dataclass
class GraphParity:
    graph: str
    checker: bool
    tensorrt_problems: list[str]
    max_abs_error: dict[str, float]
    max_rel_error: dict[str, float]
    onnx_mb: float
    torch_seconds: float
    onnxruntime_seconds: float


@torch.no_grad()
def compare_graphs(
    model: XSamModel, onnx_dir: str | Path, image: np.ndarray, graphs: tuple[str, ...] = GRAPH_NAMES
) -> list[GraphParity]:
    """Run each graph in PyTorch and ONNX Runtime (CPU) on the same inputs; report the errors."""
    import onnxruntime

    onnx_dir = Path(onnx_dir)
    specs = graph_specs(model.config)
    inputs = reference_inputs(model, image)
    results = []
    for name in graphs:
        path = onnx_dir / f"{name}.onnx"
        check_graph(path)
        spec = specs[name]
        module = build_graph(name, model)
        feeds = inputs[name]
        start = time.perf_counter()
        expected = module(*(feeds[n] for n in spec.input_names))
        torch_seconds = time.perf_counter() - start
        expected = expected if isinstance(expected, tuple) else (expected,)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False  # one graph at a time next to the PyTorch model: keep RAM low
        options.add_session_config_entry("session.disable_prepacking", "1")
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        start = time.perf_counter()
        actual = session.run(spec.output_names, {n: t.float().numpy() for n, t in feeds.items() if n in wanted})
        ort_seconds = time.perf_counter() - start
        abs_errors, rel_errors = {}, {}
        for output_name, reference, result in zip(spec.output_names, expected, actual):
            reference = reference.float().numpy()
            if reference.shape != result.shape:
                raise AssertionError(f"{name}.{output_name}: shape {result.shape} from ONNX Runtime, {reference.shape} from PyTorch.")
            error = float(np.abs(reference - result).max())
            abs_errors[output_name] = error
            rel_errors[output_name] = error / max(float(np.abs(reference).max()), 1e-12)
        del session
        size = sum(p.stat().st_size for p in onnx_dir.glob(f"{name}.onnx*")) / 2**20
        results.append(GraphParity(
            graph=name, checker=True, tensorrt_problems=check_tensorrt_compatibility(path), max_abs_error=abs_errors,
            max_rel_error=rel_errors, onnx_mb=round(size, 2), torch_seconds=torch_seconds, onnxruntime_seconds=ort_seconds,
        ))
    return results


@dataclass
class RequestParity:
    request: str
    instances_torch: int
    instances_onnxruntime: int
    final_mask_iou: list[float]
    min_final_mask_iou: float
    all_query_mask_iou: float
    max_abs_mask_logit_error: float
    max_abs_class_logit_error: float
    nonempty_masks: int = 0
    notes: list[str] = field(default_factory=list)


def _decodable(condition) -> bool:
    return condition.seg_embeds.shape[0] > 0 and condition.condition_embeds.shape[0] > 0


def _decoder_outputs(predictor, condition):
    return predictor.stages.decode(
        predictor._pixel_features, condition.condition_embeds[None].to(predictor.model.dtype), condition.seg_embeds[:1]
    )


@torch.no_grad()
def compare_predictors(torch_predictor, onnx_predictor, images: list[np.ndarray], requests: list) -> list[RequestParity]:
    """Segment every request on images[0] with both predictors, then track each condition on images[1:].

    Each image is encoded once per predictor (the expensive part for the full-size model).
    """
    torch_predictor.set_image(images[0])
    onnx_predictor.set_image(images[0])
    segmented = []
    results = []
    for request in requests:
        reference = torch_predictor.segment(request)
        candidate = onnx_predictor.segment(request)
        segmented.append((request, reference, candidate))
        results.append(_parity_row(torch_predictor, onnx_predictor, reference, candidate, request.task.value))
    for index, image in enumerate(images[1:], start=1):
        torch_predictor.set_image(image)
        onnx_predictor.set_image(image)
        for request, reference, candidate in segmented:
            results.append(_parity_row(
                torch_predictor, onnx_predictor, torch_predictor.decode(reference.condition),
                onnx_predictor.decode(candidate.condition), f"{request.task.value} tracked frame {index}"))
    return results


def _parity_row(torch_predictor, onnx_predictor, reference, candidate, label: str) -> RequestParity:
    ious = [mask_iou(a.mask, b.mask) for a, b in zip(reference.instances, candidate.instances)]
    notes = []
    if len(reference.instances) != len(candidate.instances):
        notes.append(f"instance count differs: {len(reference.instances)} vs {len(candidate.instances)}")
        ious.append(0.0)
    if reference.text != candidate.text:
        notes.append(f"answer text differs: {reference.text!r} vs {candidate.text!r}")
    decodable = [_decodable(r.condition) for r in (reference, candidate)]
    if not all(decodable):  # an answer without <SEG> or phrases: nothing to decode (result.message says so)
        if any(decodable) or reference.message != candidate.message:
            notes.append(f"decodable differs: {reference.message!r} vs {candidate.message!r}")
            ious.append(0.0)
        return RequestParity(
            request=label, instances_torch=len(reference.instances), instances_onnxruntime=len(candidate.instances),
            final_mask_iou=[round(v, 6) for v in ious], min_final_mask_iou=min(ious) if ious else 1.0,
            all_query_mask_iou=1.0 if not any(decodable) else 0.0, max_abs_mask_logit_error=0.0,
            max_abs_class_logit_error=0.0, notes=notes,
        )
    # Every query's binarised mask at mask-feature resolution: a much denser check than the few
    # selected instances.
    ref_out = _decoder_outputs(torch_predictor, reference.condition)
    cand_out = _decoder_outputs(onnx_predictor, candidate.condition)
    return RequestParity(
        request=label,
        instances_torch=len(reference.instances),
        instances_onnxruntime=len(candidate.instances),
        final_mask_iou=[round(v, 6) for v in ious],
        min_final_mask_iou=min(ious) if ious else 1.0,
        all_query_mask_iou=mask_iou((ref_out.mask_logits > 0).numpy(), (cand_out.mask_logits > 0).numpy()),
        max_abs_mask_logit_error=float((ref_out.mask_logits.float() - cand_out.mask_logits.float()).abs().max()),
        max_abs_class_logit_error=float((ref_out.class_logits.float() - cand_out.class_logits.float()).abs().max()),
        nonempty_masks=sum(int(i.mask.any()) for i in reference.instances),
        notes=notes,
    )
