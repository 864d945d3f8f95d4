"""SAM ViT image encoder + seg projector + seg connector: image -> SAM tokens and a feature pyramid."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamLayerNorm, SamVisionEncoder

from .configuration_xsam import XSamMaskEncoderConfig
from .modeling_outputs import MaskEncoderOutput
from .modeling_projector import XSamProjector


def pixel_shuffle(hidden_states: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """X-SAM's pixel shuffle on a channels-last map (B, H, W, C) -> (B, H*s, W*s, C/s²).

    This is X-SAM's reshape/permute sequence, not `nn.PixelShuffle`: for s = 0.5,
    out[i, j] = concat(x[2i, 2j], x[2i, 2j+1], x[2i+1, 2j], x[2i+1, 2j+1]); for s = 2,
    out[2h+m, 2w+k] = x[h, w][(2k+m)·C/4 : (2k+m+1)·C/4] (spec pitfall 4). Only reshapes and
    permutes, so it exports to ONNX / TensorRT without a custom op.
    """
    if scale_factor == 1:
        return hidden_states
    batch, height, width, channels = hidden_states.shape
    hidden_states = hidden_states.reshape(batch, height, int(width * scale_factor), int(channels / scale_factor))
    hidden_states = hidden_states.permute(0, 2, 1, 3)
    hidden_states = hidden_states.reshape(
        batch, int(width * scale_factor), int(height * scale_factor), int(channels / (scale_factor * scale_factor))
    )
    return hidden_states.permute(0, 2, 1, 3).contiguous()


class XSamConnectorLevel(nn.Module):
    """One pyramid level: 1x1 conv -> LN -> 3x3 conv -> LN -> 1x1 conv -> LN -> pixel shuffle (bias-free convs)."""

    def __init__(self, in_channels: int, hidden_channels: int, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        out_channels = int(in_channels * scale_factor)
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1, bias=False),
            SamLayerNorm(hidden_channels, eps=1e-6, data_format="channels_first"),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, padding=1, bias=False),
            SamLayerNorm(hidden_channels, eps=1e-6, data_format="channels_first"),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1, bias=False),
            SamLayerNorm(out_channels, eps=1e-6, data_format="channels_first"),
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) channels-last -> (B, C/s, H*s, W*s) channels-first."""
        hidden_states = self.model(hidden_states.permute(0, 3, 1, 2))
        hidden_states = pixel_shuffle(hidden_states.permute(0, 2, 3, 1), self.scale_factor)
        return hidden_states.permute(0, 3, 1, 2)


class XSamConnector(nn.Module):
    def __init__(self, config: XSamMaskEncoderConfig) -> None:
        super().__init__()
        self.model = nn.ModuleList(
            XSamConnectorLevel(config.hidden_size, config.connector_hidden_dim, scale)
            for scale in config.connector_scale_factors
        )

    def forward(self, block_outputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(level(features) for level, features in zip(self.model, block_outputs))


class XSamMaskEncoder(nn.Module):
    """SAM ViT blocks with taps; the SAM neck is not built (X-SAM discards its output)."""

    def __init__(self, config: XSamMaskEncoderConfig, llm_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.sam = SamVisionEncoder(config.sam_config())
        del self.sam.neck
        self.projector = XSamProjector(config.projector_input_dim, llm_hidden_size)
        self.connector = XSamConnector(config)

    def forward(self, pixel_values: torch.Tensor) -> MaskEncoderOutput:
        """pixel_values (B, 3, S, S) normalised and padded -> projector input and feature pyramid."""
        # Run the blocks ourselves: recent transformers replace the last hidden state by the neck
        # output (spec pitfall 2), and X-SAM needs the pre-neck block outputs.
        hidden_states = self.sam.patch_embed(pixel_values)
        if self.sam.pos_embed is not None:
            hidden_states = hidden_states + self.sam.pos_embed
        taps: dict[int, torch.Tensor] = {}
        wanted = set(self.config.connector_select_layers) | {self.config.projector_block}
        for block_number, layer in enumerate(self.sam.layers, start=1):
            hidden_states = layer(hidden_states)
            if block_number in wanted:
                taps[block_number] = hidden_states
        pyramid = self.connector([taps[block] for block in self.config.connector_select_layers])
        return MaskEncoderOutput(projector_input=taps[self.config.projector_block], multi_scale_features=pyramid)

    def project_tokens(self, projector_input: torch.Tensor) -> torch.Tensor:
        """(B, g, g, C) block output -> SAM tokens (B, (g·r)², D_llm), row-major over the shuffled grid."""
        shuffled = pixel_shuffle(projector_input, self.config.projector_downsample_ratio)
        return self.projector(shuffled.flatten(1, 2))
