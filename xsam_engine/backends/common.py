"""Pieces shared by the accelerated `ImageStages` implementations."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..modeling_outputs import MaskEncoderOutput


@dataclass
class AcceleratedMaskEncoderOutput(MaskEncoderOutput):
    """`MaskEncoderOutput` of an exported mask encoder, which also returns the seg-projector tokens.

    `projector_input` is None: the block-23 map never leaves the engine; `sam_tokens` (1, N, H_llm)
    is what `ImageStages.sam_tokens` returns.
    """

    sam_tokens: torch.Tensor | None = field(default=None)


def sample_region_points(
    prompt_mask: torch.Tensor, num_points: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The region sampler's data-dependent half: prompt mask (S, S) bool -> points (P, 2) as (x, y) in [0, 1].

    Same draw as `XSamRegionEncoder` (same generator calls in the same order), so an exported
    region graph fed with these points reproduces the PyTorch sampler exactly.
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


def token_map_from_sam_tokens(sam_tokens: torch.Tensor) -> torch.Tensor:
    """(N, H) SAM tokens of one image -> (1, H, g, g) channels-first map (row-major token order)."""
    grid = int(round(sam_tokens.shape[0] ** 0.5))
    return sam_tokens.transpose(0, 1).reshape(1, -1, grid, grid)
