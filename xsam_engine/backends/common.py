"""Pieces shared by the accelerated `ImageStages` implementations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..export.graphs import GraphSpec, build_graph, graph_specs
from ..modeling_outputs import MaskEncoderOutput, PixelDecoderOutput, SegDecoderOutput
from ..modeling_region_encoder import sample_region_points
from ..modeling_xsam import join_image_tokens

if TYPE_CHECKING:
    from ..configuration_xsam import XSamConfig


@dataclass(eq=False)
class AcceleratedMaskEncoderOutput(MaskEncoderOutput):
    """`MaskEncoderOutput` of an exported mask encoder, which also returns the seg-projector tokens.

    `projector_input` is None: the block-23 map never leaves the engine; `sam_tokens` (1, N, H_llm)
    is what `ImageStages.sam_tokens` returns.
    """

    sam_tokens: torch.Tensor | None = field(default=None)


def token_map_from_sam_tokens(sam_tokens: torch.Tensor) -> torch.Tensor:
    """(N, H) SAM tokens of one image -> (1, H, g, g) channels-first map (row-major token order)."""
    grid = int(round(sam_tokens.shape[0] ** 0.5))
    return sam_tokens.transpose(0, 1).reshape(1, -1, grid, grid)


class ExportedGraphStages:
    """`ImageStages` over the five exported graphs; subclasses say how one graph runs.

    Subclasses set `config` and `specs` (`graph_specs(config)`) and implement `run_graph`, which
    takes named torch inputs and returns the graph's outputs in the spec's order as torch tensors.
    """

    config: "XSamConfig"
    specs: dict[str, GraphSpec]

    def run_graph(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def encode_mask_image(self, pixel_values: torch.Tensor) -> MaskEncoderOutput:
        sam_tokens, *pyramid = self.run_graph("mask_encoder", pixel_values=pixel_values)
        return AcceleratedMaskEncoderOutput(projector_input=None, multi_scale_features=tuple(pyramid), sam_tokens=sam_tokens)

    def encode_pixels(self, mask_output: MaskEncoderOutput) -> PixelDecoderOutput:
        names = self.specs["pixel_decoder"].input_names
        mask_features, *levels = self.run_graph("pixel_decoder", **dict(zip(names, mask_output.multi_scale_features)))
        return PixelDecoderOutput(mask_features=mask_features, multi_scale_features=tuple(levels))

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.run_graph("vision_encoder", pixel_values=pixel_values)[0]

    def sam_tokens(self, mask_output: MaskEncoderOutput) -> torch.Tensor:
        tokens = getattr(mask_output, "sam_tokens", None)
        if tokens is None:
            raise ValueError("This mask-encoder output has no SAM tokens; it was not produced by an exported encoder.")
        return tokens

    def llm_image_tokens(self, siglip_pixel_values: torch.Tensor, mask_output: MaskEncoderOutput) -> torch.Tensor:
        """(1, N_siglip + N_sam, H_llm): the SigLIP graph's tokens, then the mask encoder's SAM tokens."""
        return join_image_tokens(self.encode_vision(siglip_pixel_values), self.sam_tokens(mask_output))

    def decode(
        self, pixel_features: PixelDecoderOutput, condition_embeds: torch.Tensor, seg_embeds: torch.Tensor
    ) -> SegDecoderOutput:
        levels = pixel_features.multi_scale_features
        class_logits, mask_logits = self.run_graph(
            "mask_decoder",
            mask_features=pixel_features.mask_features,
            level_0=levels[0], level_1=levels[1], level_2=levels[2],
            condition_embeds=condition_embeds, seg_embeds=seg_embeds,
        )
        return SegDecoderOutput(class_logits=class_logits, mask_logits=mask_logits)

    def encode_regions(
        self, sam_tokens: torch.Tensor, prompt_masks: list[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Same contract as `XSamModel.encode_regions`: (N, H) tokens + (S, S) masks -> (R, H)."""
        token_map = token_map_from_sam_tokens(sam_tokens)
        tokens = []
        for mask in prompt_masks:
            points = sample_region_points(mask, self.config.sampler_num_points, generator)
            tokens.append(self.run_graph("region_encoder", token_map=token_map, points=points[None])[0][0])
        return torch.stack(tokens).to(sam_tokens.dtype)


class TorchGraphStages(ExportedGraphStages):
    """The graphs' PyTorch modules (`export.graphs.build_graph`) run in-process on the model's device and dtype.

    The local fallback of remote stages when neither TensorRT nor ONNX Runtime can run here: same
    named inputs and output order as the exported graphs, so it plugs in at `run_graph`.
    Keeps references to the model's encoders (their weights must stay loaded).
    """

    def __init__(self, model) -> None:
        self.model = model
        self.config = model.config
        self.specs = graph_specs(model.config)
        self.modules = {name: build_graph(name, model) for name in self.specs}

    def run_graph(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        device, dtype = self.model.device, self.model.dtype
        with torch.no_grad():
            outputs = self.modules[name](*(inputs[n].to(device, dtype) for n in self.specs[name].input_names))
        return list(outputs) if isinstance(outputs, tuple) else [outputs]
