"""Mask2Former pixel decoder + masked-attention decoder conditioned on <SEG>, with an open-set class head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderOutput,
    Mask2FormerPixelDecoder,
    Mask2FormerTransformerModule,
)

from .configuration_xsam import XSamDecoderConfig
from .modeling_outputs import PixelDecoderOutput, SegDecoderOutput


class XSamTransformerModule(Mask2FormerTransformerModule):
    """HF's module with X-SAM's conditioning: the <SEG> embedding is added to every query's content.

    X-SAM adds `seg_embed` to `queries_features` (content), not to `queries_embedder` (position);
    HF's forward has no hook for it (spec pitfall 6), so the query set-up is repeated here.
    """

    def forward(  # type: ignore[override]
        self,
        multi_scale_features: tuple[torch.Tensor, ...],
        mask_features: torch.Tensor,
        seg_embeds: torch.Tensor,
    ) -> Mask2FormerMaskedAttentionDecoderOutput:
        """seg_embeds (B, D) -> HF decoder output with all intermediate stages."""
        features, positions, sizes = [], [], []
        for level in range(self.num_feature_levels):
            level_features = multi_scale_features[level]
            sizes.append(level_features.shape[-2:])
            position = self.position_embedder(level_features.shape, level_features.device, level_features.dtype, None)
            # (B, C, H, W) -> (HW, B, C)
            positions.append(position.flatten(2).permute(2, 0, 1))
            projected = self.input_projections[level](level_features).flatten(2)
            features.append((projected + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
        batch_size = features[0].shape[1]
        # [num_queries, batch_size, hidden]
        query_position = self.queries_embedder.weight.unsqueeze(1).repeat(1, batch_size, 1)
        query_content = self.queries_features.weight.unsqueeze(1) + seg_embeds.unsqueeze(0)
        return self.decoder(
            inputs_embeds=query_content,
            multi_stage_positional_embeddings=positions,
            pixel_embeddings=mask_features,
            encoder_hidden_states=features,
            query_position_embeddings=query_position,
            feature_size_list=sizes,
            return_dict=True,
        )


class XSamSegDecoder(nn.Module):
    """Pixel decoder (text-independent, run once per image) and the conditioned mask decoder."""

    def __init__(self, config: XSamDecoderConfig, feature_channels: list[int]) -> None:
        super().__init__()
        self.config = config
        m2f_config = config.mask2former_config()
        self.pixel_decoder = Mask2FormerPixelDecoder(m2f_config, feature_channels=feature_channels)
        self.transformer = XSamTransformerModule(in_features=config.hidden_dim, config=m2f_config)
        self.logit_scale = nn.Parameter(torch.tensor([config.logit_scale_init]))
        self.background_embedding = nn.Embedding(1, config.hidden_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # HF's pixel decoder leaves these uninitialised (torch.Tensor(...)); give them sane values.
        nn.init.normal_(self.pixel_decoder.level_embed, std=0.02)

    def encode_pixels(self, multi_scale_features: tuple[torch.Tensor, ...]) -> PixelDecoderOutput:
        """Pyramid (highest resolution first) -> mask features and the decoder's three levels."""
        output = self.pixel_decoder(list(multi_scale_features), return_dict=True)
        return PixelDecoderOutput(
            mask_features=output.mask_features, multi_scale_features=tuple(output.multi_scale_features)
        )

    def forward(
        self,
        pixel_features: PixelDecoderOutput,
        condition_embeds: torch.Tensor,
        seg_embeds: torch.Tensor,
        condition_mask: torch.Tensor | None = None,
        return_auxiliary: bool = False,
    ) -> SegDecoderOutput:
        """Decode masks and open-set class logits.

        Args:
            pixel_features: output of `encode_pixels` (batch B).
            condition_embeds: (B, C, D) condition vectors; the background class is appended here.
            seg_embeds: (B, D) projected <SEG> states.
            condition_mask: (B, C) bool, False for padded conditions (their logits become -1e9).
            return_auxiliary: also return every earlier stage's predictions (training).
        """
        decoder_output = self.transformer(
            pixel_features.multi_scale_features, pixel_features.mask_features, seg_embeds
        )
        batch_size = condition_embeds.shape[0]
        background = self.background_embedding.weight.unsqueeze(0).expand(batch_size, -1, -1)
        conditions = torch.cat([condition_embeds, background.to(condition_embeds.dtype)], dim=1)
        if condition_mask is not None:
            ones = torch.ones(batch_size, 1, dtype=torch.bool, device=condition_mask.device)
            condition_mask = torch.cat([condition_mask, ones], dim=1)

        def classify(queries: torch.Tensor) -> torch.Tensor:
            # queries: (Q, B, D) layer-normed intermediate state
            logits = torch.einsum(
                "bqd,bcd->bqc", F.normalize(queries.transpose(0, 1), dim=-1), F.normalize(conditions, dim=-1)
            )
            logits = (self.logit_scale.exp() * logits).clamp(-self.config.logit_clamp, self.config.logit_clamp)
            if condition_mask is not None:
                logits = logits.masked_fill(~condition_mask[:, None, :], -1e9)
            return logits

        stages = decoder_output.intermediate_hidden_states
        masks = decoder_output.masks_queries_logits
        auxiliary = ()
        if return_auxiliary:
            auxiliary = tuple((classify(stages[i]), masks[i]) for i in range(len(stages) - 1))
        return SegDecoderOutput(class_logits=classify(stages[-1]), mask_logits=masks[-1], auxiliary=auxiliary)
