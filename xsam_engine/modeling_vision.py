"""SigLIP2 vision tower + visual projector: image -> LLM image tokens."""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionModel

from .configuration_xsam import XSamVisionConfig
from .modeling_projector import XSamProjector


class XSamVisionEncoder(nn.Module):
    """Runs SigLIP up to `select_layer` (no post-LayerNorm, no head) and projects to the LLM width."""

    def __init__(self, config: XSamVisionConfig, llm_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.siglip = SiglipVisionModel(config.siglip_config())
        self.projector = XSamProjector(config.hidden_size, llm_hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, S, S) normalised -> image tokens (B, (S/patch)², D_llm)."""
        hidden_states = self.siglip.embeddings(pixel_values)
        for layer in self.siglip.encoder.layers:  # built with exactly `used_layers` layers
            hidden_states = layer(hidden_states, None)
        return self.projector(hidden_states)
