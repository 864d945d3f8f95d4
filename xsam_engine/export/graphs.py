"""Export wrappers: each X-SAM part as an `nn.Module` with flat, named tensor inputs and outputs.

ONNX (and TensorRT) graphs take and return plain tensors, so each wrapper unpacks the engine's
typed outputs into a fixed order. The order is the `GraphSpec.outputs` order below; the names
are the ONNX input/output names, also used by the ONNX Runtime and TensorRT runners.

Graphs (batch 1 everywhere; `C` and `P` are the only dynamic axes; `graph_specs(config, batch_axis=True)`
makes the leading axis a dynamic `batch` axis, used for the Triton model repository, where the
server's dynamic batcher stacks requests of several cameras or robots):

| graph | inputs | outputs | per |
|---|---|---|---|
| `mask_encoder` | `pixel_values` (1, 3, S, S) | `sam_tokens` (1, N_sam, H_llm), `pyramid_0..L-1` (1, C_l, H_l, W_l), highest resolution first | frame |
| `vision_encoder` | `pixel_values` (1, 3, s, s) | `image_tokens` (1, N_siglip, H_llm) | command |
| `pixel_decoder` | `pyramid_0..L-1` | `mask_features` (1, D, H_m, W_m), `level_0..2` (1, D, H_k, W_k), lowest resolution first | frame |
| `mask_decoder` | `mask_features`, `level_0..2`, `condition_embeds` (1, C, D), `seg_embeds` (1, D) | `class_logits` (1, Q, C + 1), `mask_logits` (1, Q, H_m, W_m) | frame x request |
| `region_encoder` | `token_map` (1, H_llm, g, g), `points` (1, P, 2) (x, y) in [0, 1] of the padded input | `region_token` (1, H_llm) | visual prompt |

Constructs forced by export are commented where they occur.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..configuration_xsam import XSamConfig
from ..modeling_outputs import PixelDecoderOutput
from ..modeling_xsam import XSamModel

GRAPH_NAMES = ("mask_encoder", "vision_encoder", "pixel_decoder", "mask_decoder", "region_encoder")
BATCH_AXIS = "batch"
NUM_DECODER_LEVELS = 3  # Mask2Former's masked-attention decoder always cycles over three levels


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input or output.

    Attributes:
        name: ONNX input/output name.
        shape: static sizes; a string names a dynamic axis (e.g. "num_conditions").
        dtype: "float32" (every X-SAM graph tensor is float32 at the ONNX boundary).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {axis: size for axis, size in enumerate(self.shape) if isinstance(size, str)}

    def concrete_shape(self, dynamic_sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with every dynamic axis replaced by `dynamic_sizes[name]`."""
        return tuple(dynamic_sizes[size] if isinstance(size, str) else size for size in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one exported graph, in order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {spec.name: spec.dynamic_axes for spec in (*self.inputs, *self.outputs) if spec.dynamic_axes}


def pixel_decoder_level_sizes(config: XSamConfig) -> list[int]:
    """Side of the three decoder levels, lowest resolution first (the pixel decoder's order)."""
    sizes = sorted(config.mask_encoder.feature_sizes)
    return sizes[:NUM_DECODER_LEVELS]


def mask_feature_size(config: XSamConfig) -> int:
    """Side of the mask features: the highest-resolution pyramid level (released: 128)."""
    return max(config.mask_encoder.feature_sizes)


def with_batch_axis(spec: GraphSpec) -> GraphSpec:
    """The same graph with its leading (batch 1) axis made the dynamic axis `BATCH_AXIS`."""

    def batched(tensor: TensorSpec) -> TensorSpec:
        return TensorSpec(tensor.name, (BATCH_AXIS, *tensor.shape[1:]), tensor.dtype)

    return GraphSpec(spec.name, tuple(map(batched, spec.inputs)), tuple(map(batched, spec.outputs)))


def graph_specs(config: XSamConfig, batch_axis: bool = False) -> dict[str, GraphSpec]:
    """Every graph's named inputs and outputs for a configuration.

    `batch_axis=True`: the leading axis of every input and output is dynamic (`BATCH_AXIS`); each
    image/request stays independent along it (checked in tests/test_triton_repository.py).
    """
    specs = _batch_one_specs(config)
    return {name: with_batch_axis(spec) for name, spec in specs.items()} if batch_axis else specs


def _batch_one_specs(config: XSamConfig) -> dict[str, GraphSpec]:
    encoder, vision = config.mask_encoder, config.vision
    llm, hidden = config.language.hidden_size, config.decoder.hidden_dim
    queries = config.decoder.num_queries
    pyramid = tuple(
        TensorSpec(f"pyramid_{i}", (1, channels, size, size))
        for i, (channels, size) in enumerate(zip(encoder.feature_channels, encoder.feature_sizes))
    )
    mask_side = mask_feature_size(config)
    levels = tuple(
        TensorSpec(f"level_{i}", (1, hidden, size, size)) for i, size in enumerate(pixel_decoder_level_sizes(config))
    )
    mask_features = TensorSpec("mask_features", (1, hidden, mask_side, mask_side))
    grid = int(round(encoder.num_tokens**0.5))
    return {
        "mask_encoder": GraphSpec(
            "mask_encoder",
            inputs=(TensorSpec("pixel_values", (1, 3, encoder.image_size, encoder.image_size)),),
            outputs=(TensorSpec("sam_tokens", (1, encoder.num_tokens, llm)), *pyramid),
        ),
        "vision_encoder": GraphSpec(
            "vision_encoder",
            inputs=(TensorSpec("pixel_values", (1, 3, vision.image_size, vision.image_size)),),
            outputs=(TensorSpec("image_tokens", (1, vision.num_tokens, llm)),),
        ),
        "pixel_decoder": GraphSpec("pixel_decoder", inputs=pyramid, outputs=(mask_features, *levels)),
        "mask_decoder": GraphSpec(
            "mask_decoder",
            inputs=(
                mask_features,
                *levels,
                TensorSpec("condition_embeds", (1, "num_conditions", hidden)),
                TensorSpec("seg_embeds", (1, hidden)),
            ),
            outputs=(
                TensorSpec("class_logits", (1, queries, "num_classes")),
                TensorSpec("mask_logits", (1, queries, mask_side, mask_side)),
            ),
        ),
        "region_encoder": GraphSpec(
            "region_encoder",
            inputs=(TensorSpec("token_map", (1, llm, grid, grid)), TensorSpec("points", (1, "num_points", 2))),
            outputs=(TensorSpec("region_token", (1, llm)),),
        ),
    }


class MaskEncoderGraph(nn.Module):
    """SAM blocks + connector pyramid + seg projector tokens.

    The seg projector (1.5 % of the SAM encoder's FLOPs) runs inside the per-frame graph so one
    engine serves both the LLM path and tracking; `sam_tokens` is simply unused on tracking frames.
    """

    def __init__(self, model: XSamModel) -> None:
        super().__init__()
        self.mask_encoder = model.mask_encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.mask_encoder(pixel_values)
        sam_tokens = self.mask_encoder.project_tokens(output.projector_input)
        return (sam_tokens, *output.multi_scale_features)


class VisionEncoderGraph(nn.Module):
    """SigLIP2 up to the selected layer + visual projector."""

    def __init__(self, model: XSamModel) -> None:
        super().__init__()
        self.vision_encoder = model.vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixel_values)


class PixelDecoderGraph(nn.Module):
    """Mask2Former pixel decoder (deformable encoder + FPN), text-independent, once per frame."""

    def __init__(self, model: XSamModel) -> None:
        super().__init__()
        self.seg_decoder = model.seg_decoder

    def forward(self, *pyramid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # HF's multi_scale_deformable_attention splits the flattened value tensor with
        # `[h * w for h, w in spatial_shapes]`; under tracing these are Python ints of the
        # static export shapes, so the split sizes become constants (no data-dependent shapes).
        output = self.seg_decoder.encode_pixels(tuple(pyramid))
        return (output.mask_features, *output.multi_scale_features)


class MaskDecoderGraph(nn.Module):
    """Conditioned masked-attention decoder + open-set class head, dynamic number of conditions.

    The queries (content + position) are weights, fixed at export. `condition_mask` is not an
    input: the predictor never pads conditions (one request per call), so every condition is real.
    """

    def __init__(self, model: XSamModel) -> None:
        super().__init__()
        self.seg_decoder = model.seg_decoder

    def forward(
        self,
        mask_features: torch.Tensor,
        level_0: torch.Tensor,
        level_1: torch.Tensor,
        level_2: torch.Tensor,
        condition_embeds: torch.Tensor,
        seg_embeds: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_features = PixelDecoderOutput(mask_features=mask_features, multi_scale_features=(level_0, level_1, level_2))
        output = self.seg_decoder(pixel_features, condition_embeds, seg_embeds)
        return output.class_logits, output.mask_logits


class RegionEncoderGraph(nn.Module):
    """The region sampler's feature part: bilinear point sampling + max-pool -> one LLM token.

    Drawing the points (mask.nonzero + random subset) is data-dependent and stays outside;
    the graph receives the chosen points as (x, y) in [0, 1] of the padded model input, the
    same `index / S` convention as `XSamRegionEncoder` (align_corners=True, spec pitfall 12).
    GridSample needs opset >= 16 and is supported by TensorRT >= 8.5.
    """

    def forward(self, token_map: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        grid = (points * 2 - 1).unsqueeze(1)  # (1, 1, P, 2)
        sampled = F.grid_sample(token_map, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        # ReduceMax over the point axis; (1, D, 1, P) -> (1, D)
        return sampled.flatten(2).max(dim=-1).values


def build_graph(name: str, model: XSamModel) -> nn.Module:
    """The export wrapper for `name` (one of GRAPH_NAMES), in eval mode."""
    builders = {
        "mask_encoder": MaskEncoderGraph,
        "vision_encoder": VisionEncoderGraph,
        "pixel_decoder": PixelDecoderGraph,
        "mask_decoder": MaskDecoderGraph,
        "region_encoder": lambda _model: RegionEncoderGraph(),
    }
    if name not in builders:
        raise ValueError(f"Unknown graph {name!r}; choose from {GRAPH_NAMES}.")
    return builders[name](model).eval()


def example_inputs(spec: GraphSpec, dynamic_sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 inputs for a graph (points uniform in [0, 1], everything else normal)."""
    sizes = {"num_conditions": 2, "num_points": 16, BATCH_AXIS: 1, **(dynamic_sizes or {})}
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for tensor in spec.inputs:
        shape = tensor.concrete_shape(sizes)
        if tensor.name == "points":
            inputs[tensor.name] = torch.rand(shape, generator=generator)
        else:
            inputs[tensor.name] = torch.randn(shape, generator=generator)
    return inputs
