"""`ImageStages` on TensorRT engines (built from the ONNX graphs on first use, then cached)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..configuration_xsam import XSamConfig
from ..export.graphs import GRAPH_NAMES, graph_specs
from ..export.onnx_export import read_manifest
from ..modeling_outputs import MaskEncoderOutput, PixelDecoderOutput, SegDecoderOutput
from ..tensorrt.builder import EngineOptions, GpuInfo, detect_gpu, get_engine
from ..tensorrt.runner import EngineLoadError, TensorRTRunner
from .common import AcceleratedMaskEncoderOutput, sample_region_points, token_map_from_sam_tokens

logger = logging.getLogger(__name__)


class TensorRTStages:
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

    def _run(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.runners[name](**inputs)
        return [outputs[n].to(self.dtype) for n in self.specs[name].output_names]

    def encode_mask_image(self, pixel_values: torch.Tensor) -> MaskEncoderOutput:
        sam_tokens, *pyramid = self._run("mask_encoder", pixel_values=pixel_values)
        return AcceleratedMaskEncoderOutput(projector_input=None, multi_scale_features=tuple(pyramid), sam_tokens=sam_tokens)

    def encode_pixels(self, mask_output: MaskEncoderOutput) -> PixelDecoderOutput:
        names = self.specs["pixel_decoder"].input_names
        mask_features, *levels = self._run("pixel_decoder", **dict(zip(names, mask_output.multi_scale_features)))
        return PixelDecoderOutput(mask_features=mask_features, multi_scale_features=tuple(levels))

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._run("vision_encoder", pixel_values=pixel_values)[0]

    def sam_tokens(self, mask_output: MaskEncoderOutput) -> torch.Tensor:
        tokens = getattr(mask_output, "sam_tokens", None)
        if tokens is None:
            raise ValueError("This mask-encoder output has no SAM tokens; it was not produced by an exported encoder.")
        return tokens

    def decode(
        self, pixel_features: PixelDecoderOutput, condition_embeds: torch.Tensor, seg_embeds: torch.Tensor
    ) -> SegDecoderOutput:
        levels = pixel_features.multi_scale_features
        class_logits, mask_logits = self._run(
            "mask_decoder",
            mask_features=pixel_features.mask_features,
            level_0=levels[0], level_1=levels[1], level_2=levels[2],
            condition_embeds=condition_embeds, seg_embeds=seg_embeds,
        )
        return SegDecoderOutput(class_logits=class_logits, mask_logits=mask_logits)

    def encode_regions(
        self, sam_tokens: torch.Tensor, prompt_masks: list[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        token_map = token_map_from_sam_tokens(sam_tokens)
        tokens = []
        for mask in prompt_masks:
            points = sample_region_points(mask, self.config.sampler_num_points, generator)
            tokens.append(self._run("region_encoder", token_map=token_map, points=points[None])[0][0])
        return torch.stack(tokens).to(sam_tokens.dtype)
