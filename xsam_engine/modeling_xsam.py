"""The X-SAM model: four components composed, each stage callable alone."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_xsam import XSamConfig
from .modeling_llm import XSamLanguageModel
from .modeling_mask_encoder import XSamMaskEncoder
from .modeling_outputs import MaskEncoderOutput, PixelDecoderOutput, SegDecoderOutput
from .modeling_region_encoder import XSamRegionEncoder
from .modeling_seg_decoder import XSamSegDecoder
from .modeling_vision import XSamVisionEncoder


class XSamModel(nn.Module):
    """SigLIP2 vision encoder, SAM mask encoder, Phi-3 language model and Mask2Former-style decoder.

    Stages (the predictor caches the image stages per frame):
      - `encode_mask_image(pixels)`  SAM blocks + connector            (per frame)
      - `encode_pixels(pyramid)`     pixel decoder, text-independent   (per frame)
      - `encode_vision(pixels)`      SigLIP + projector                 (only when the LLM runs)
      - `sam_tokens(mask_output)`    seg projector -> LLM tokens        (only when the LLM runs)
      - `encode_regions(...)`        visual prompts -> one token each
      - `decode(...)`                conditioned mask decoder           (per frame and request)
    """

    def __init__(self, config: XSamConfig) -> None:
        super().__init__()
        self.config = config
        llm_width = config.language.hidden_size
        self.vision_encoder = XSamVisionEncoder(config.vision, llm_width)
        self.mask_encoder = XSamMaskEncoder(config.mask_encoder, llm_width)
        self.language_model = XSamLanguageModel(config.language)
        self.seg_decoder = XSamSegDecoder(config.decoder, config.mask_encoder.feature_channels)
        self.region_encoder = XSamRegionEncoder(config.sampler_num_points)

    @property
    def device(self) -> torch.device:
        return self.seg_decoder.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.seg_decoder.logit_scale.dtype

    def encode_mask_image(self, pixel_values: torch.Tensor) -> MaskEncoderOutput:
        return self.mask_encoder(pixel_values.to(self.dtype))

    def encode_pixels(self, mask_output: MaskEncoderOutput) -> PixelDecoderOutput:
        return self.seg_decoder.encode_pixels(mask_output.multi_scale_features)

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixel_values.to(self.dtype))

    def sam_tokens(self, mask_output: MaskEncoderOutput) -> torch.Tensor:
        return self.mask_encoder.project_tokens(mask_output.projector_input)

    def encode_regions(
        self, sam_tokens: torch.Tensor, prompt_masks: list[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """sam_tokens (N, H) of one image; prompt masks (S, S) bool on the padded input -> (R, H)."""
        grid = int(round(sam_tokens.shape[0] ** 0.5))
        token_map = sam_tokens.transpose(0, 1).reshape(-1, grid, grid)
        return torch.stack([self.region_encoder(token_map, mask, generator) for mask in prompt_masks])

    def decode(
        self,
        pixel_features: PixelDecoderOutput,
        condition_embeds: torch.Tensor,
        seg_embeds: torch.Tensor,
        condition_mask: torch.Tensor | None = None,
        return_auxiliary: bool = False,
    ) -> SegDecoderOutput:
        return self.seg_decoder(pixel_features, condition_embeds, seg_embeds, condition_mask, return_auxiliary)
