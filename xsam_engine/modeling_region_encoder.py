"""Visual-prompt (region) encoder: X-SAM's parameter-free naive sampler ([A] `NaiveSamplerModel`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def sample_region_points(
    prompt_mask: torch.Tensor, num_points: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The sampler's data-dependent half: prompt mask (S, S) bool -> points (P, 2) as (x, y) in [0, 1].

    Exported region graphs take these points as an input (their draw is data-dependent), so the
    accelerated backends call this same function and reproduce the PyTorch sampler exactly.
    """
    size = prompt_mask.shape[-1]
    coords = prompt_mask.nonzero().to(torch.float32)  # (N, 2) as (row, col)
    if coords.shape[0] == 0:
        raise ValueError("The visual prompt covers no pixel of the image; give a point, box, scribble or mask inside it.")
    count = coords.shape[0]
    device = coords.device
    if count >= num_points:
        chosen = torch.randperm(count, generator=generator, device="cpu")[:num_points].to(device)
    else:
        extra = torch.randint(count, (num_points - count,), generator=generator, device="cpu").to(device)
        chosen = torch.cat([torch.arange(count, device=device), extra])
    return (coords[chosen] / size).flip(-1)


class XSamRegionEncoder(nn.Module):
    """Turns a prompt mask into one LLM token by max-pooling sampled SAM-token features.

    Points are the prompt mask's pixels on the padded model input grid (row/S, col/S); `num_points`
    of them are drawn uniformly without replacement (all of them plus random repeats when fewer),
    bilinearly sampled from the seg-projector token map (`align_corners=True`, as released) and
    max-pooled into a single token (spec section 6).
    """

    def __init__(self, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points

    def forward(
        self, token_map: torch.Tensor, prompt_mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """token_map (D, g, g) channels-first; prompt_mask (S, S) bool on the padded input -> (D,)."""
        points = sample_region_points(prompt_mask, self.num_points, generator)
        grid = (points * 2 - 1).view(1, 1, -1, 2)  # (x, y) in [-1, 1]
        sampled = F.grid_sample(token_map[None].float(), grid, mode="bilinear", align_corners=True)
        return sampled.view(token_map.shape[0], -1).max(dim=-1).values.to(token_map.dtype)
