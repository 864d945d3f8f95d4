"""Typed outputs of each model stage (shapes in the docstrings, no `return_dict`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class MaskEncoderOutput:
    """SAM branch output.

    Attributes:
        projector_input: (B, g, g, C_sam) channels-last output of the block feeding the seg projector.
        multi_scale_features: pyramid (B, C_l, H_l, W_l), highest resolution first
            (released: 512x128², 1024x64², 2048x32²).
    """

    projector_input: torch.Tensor
    multi_scale_features: tuple[torch.Tensor, ...]


@dataclass(eq=False)
class PixelDecoderOutput:
    """Text-independent decoder features, computed once per image.

    Attributes:
        mask_features: (B, D, H_m, W_m) per-pixel embeddings (released: 256x128²).
        multi_scale_features: three (B, D, H_l, W_l) maps, lowest resolution first.
    """

    mask_features: torch.Tensor
    multi_scale_features: tuple[torch.Tensor, ...]


@dataclass(eq=False)
class SegDecoderOutput:
    """Predictions of the masked-attention decoder.

    Attributes:
        class_logits: (B, Q, C + 1) open-set class logits, last column = background.
        mask_logits: (B, Q, H_m, W_m) mask logits at mask-feature resolution.
        auxiliary: per earlier stage (class_logits, mask_logits), only when requested (training).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    auxiliary: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
