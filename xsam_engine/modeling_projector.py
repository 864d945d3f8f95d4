"""X-SAM's MLP projectors (visual_projector, seg_projector, llm_projector)."""

from __future__ import annotations

import torch
from torch import nn


class XSamProjector(nn.Module):
    """Linear -> GELU (exact erf) -> Linear, with biases; keys `model.0` and `model.2` as released."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int | None = None) -> None:
        super().__init__()
        hidden_features = hidden_features or out_features
        self.model = nn.Sequential(
            nn.Linear(in_features, hidden_features), nn.GELU(), nn.Linear(hidden_features, out_features)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # Projectors run in their own dtype (the released model casts inputs to the module dtype).
        return self.model(hidden_states.to(self.model[0].weight.dtype))
