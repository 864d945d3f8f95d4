"""The X-SAM model: four components composed, each stage callable alone, and X-SAM's multimodal forward.

Data flow of one forward pass (spec section 0; official `XSamModel.forward` in
`xsam/xsam/model/xsam.py`, branch AAAI26_Archive):

1. `get_image_embeddings(pixel_values, siglip_pixel_values)`: SAM blocks + connector (pyramid),
   pixel decoder (text-independent), and the LLM's image tokens: SigLIP tokens then SAM tokens
   (`join_image_tokens`, X-SAM's `[siglip, sam]` order).
2. `encode_regions`: each visual prompt -> one region token sampled from the SAM tokens.
3. `get_conditions`: each prompt's single `<image>` placeholder is spliced with the image tokens
   and each `<region>` with a region token; one LLM pass (teacher-forced, no logits); every
   `<p> ... </p>` span is projected then mean-pooled into a condition, the first `<SEG>` state
   is projected into the decoder's query offset. `generate_conditions` is the same with greedy
   generation (the conditions then come from the answer's spans when it has any: GCG).
4. `decode`: the masked-attention decoder conditioned on `<SEG>`, classified against the conditions.

`forward` runs 1-4 on pixels or on cached `XSamImageEmbeddings` (like transformers' `SamModel`
takes `pixel_values` or `image_embeddings`); the predictor runs the stages one by one so that it
can cache the image part and use accelerated image stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .configuration_xsam import XSamConfig
from .modeling_llm import SplicedSequence, XSamLanguageModel, phrase_spans
from .modeling_mask_encoder import XSamMaskEncoder
from .modeling_outputs import MaskEncoderOutput, PixelDecoderOutput, SegDecoderOutput
from .modeling_region_encoder import XSamRegionEncoder
from .modeling_seg_decoder import XSamSegDecoder
from .modeling_vision import XSamVisionEncoder
from .tokenization import SpecialTokenIds


def join_image_tokens(siglip_tokens: torch.Tensor, sam_tokens: torch.Tensor) -> torch.Tensor:
    """(B, N_siglip, H) + (B, N_sam, H) -> (B, N_siglip + N_sam, H): the one `<image>` placeholder
    expands to the SigLIP tokens followed by the SAM tokens (X-SAM's `cat([siglip, sam], dim=1)`)."""
    return torch.cat([siglip_tokens, sam_tokens.to(siglip_tokens.dtype)], dim=-2)


@dataclass(eq=False)
class XSamImageEmbeddings:
    """Everything a frame contributes, computed once per image (the predictor's cache).

    Attributes:
        mask_output: SAM branch output (pyramid and the block feeding the seg projector).
        pixel_features: the pixel decoder's output for the mask decoder.
        llm_image_tokens: (B, N_siglip + N_sam, H_llm) image tokens for the LLM, None until the
            SigLIP branch has run (tracking never needs it).
    """

    mask_output: MaskEncoderOutput
    pixel_features: PixelDecoderOutput
    llm_image_tokens: torch.Tensor | None = None


@dataclass(eq=False)
class XSamConditionOutput:
    """The language model's part of a forward pass, for a batch of B prompts.

    Attributes:
        condition_embeds: (B, C_max, D) pooled conditions, zero-padded.
        condition_mask: (B, C_max) bool, False at padding.
        seg_embeds: (B, D) projected `<SEG>` states (zeros where `seg_found` is False).
        seg_found: (B,) bool, whether the sequence has the `<SEG>` the decoder needs.
        hidden_states: (B, L, H) final-layer states after the final norm, zero-padded.
        token_ids: (B, L) spliced ids (placeholders at spliced positions, -1 at padding).
        lengths: valid length of each sequence.
        spans: per sequence, the inclusive (start, end) positions of each pooled condition.
        output_ids: per sequence, the generated ids ([] when teacher-forced).
        prompt_lengths: per sequence, the spliced prompt's length (generated states follow it).
    """

    condition_embeds: torch.Tensor
    condition_mask: torch.Tensor
    seg_embeds: torch.Tensor
    seg_found: torch.Tensor
    hidden_states: torch.Tensor
    token_ids: torch.Tensor
    lengths: list[int]
    spans: list[list[tuple[int, int]]]
    output_ids: list[list[int]] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)


@dataclass(eq=False)
class XSamModelOutput:
    """`XSamModel.forward`: the conditions and the mask decoder's predictions.

    Attributes:
        conditions: the language part (`XSamConditionOutput`).
        class_logits: (B, Q, C_max + 1) open-set logits, background last, padded conditions -1e9.
        mask_logits: (B, Q, H_m, W_m) mask logits at mask-feature resolution.
        auxiliary: earlier decoder stages' (class_logits, mask_logits), with `return_auxiliary`.
    """

    conditions: XSamConditionOutput
    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    auxiliary: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


class XSamModel(nn.Module):
    """SigLIP2 vision encoder, SAM mask encoder, Phi-3 language model and Mask2Former-style decoder.

    Stages (the predictor caches the image stages per frame):
      - `encode_mask_image(pixels)`  SAM blocks + connector            (per frame)
      - `encode_pixels(pyramid)`     pixel decoder, text-independent   (per frame)
      - `encode_vision(pixels)`      SigLIP + projector                 (only when the LLM runs)
      - `sam_tokens(mask_output)`    seg projector -> LLM tokens        (only when the LLM runs)
      - `llm_image_tokens(...)`      both, in X-SAM's order             (only when the LLM runs)
      - `encode_regions(...)`        visual prompts -> one token each
      - `get_conditions(...)` / `generate_conditions(...)`  splice, LLM, pooling
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

    # -- image stages ---------------------------------------------------------------------------

    def encode_mask_image(self, pixel_values: torch.Tensor) -> MaskEncoderOutput:
        return self.mask_encoder(pixel_values.to(self.dtype))

    def encode_pixels(self, mask_output: MaskEncoderOutput) -> PixelDecoderOutput:
        return self.seg_decoder.encode_pixels(mask_output.multi_scale_features)

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixel_values.to(self.dtype))

    def sam_tokens(self, mask_output: MaskEncoderOutput) -> torch.Tensor:
        return self.mask_encoder.project_tokens(mask_output.projector_input)

    def llm_image_tokens(self, siglip_pixel_values: torch.Tensor, mask_output: MaskEncoderOutput) -> torch.Tensor:
        """(B, N_siglip + N_sam, H_llm): what the `<image>` placeholder expands to."""
        return join_image_tokens(self.encode_vision(siglip_pixel_values), self.sam_tokens(mask_output))

    def get_image_embeddings(
        self, pixel_values: torch.Tensor, siglip_pixel_values: torch.Tensor | None = None
    ) -> XSamImageEmbeddings:
        """SAM input (B, 3, S, S) [+ SigLIP input (B, 3, s, s)] -> the per-image features."""
        mask_output = self.encode_mask_image(pixel_values)
        tokens = None if siglip_pixel_values is None else self.llm_image_tokens(siglip_pixel_values, mask_output)
        return XSamImageEmbeddings(mask_output, self.encode_pixels(mask_output), tokens)

    def encode_regions(
        self, sam_tokens: torch.Tensor, prompt_masks: Sequence[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """sam_tokens (N, H) of one image; prompt masks (S, S) bool on the padded input -> (R, H)."""
        grid = int(round(sam_tokens.shape[0] ** 0.5))
        token_map = sam_tokens.transpose(0, 1).reshape(-1, grid, grid)
        return torch.stack([self.region_encoder(token_map, mask, generator) for mask in prompt_masks])

    def sam_part(self, llm_image_tokens: torch.Tensor) -> torch.Tensor:
        """The SAM tokens inside (..., N_siglip + N_sam, H) image tokens (the region sampler's input)."""
        return llm_image_tokens[..., self.config.vision.num_tokens :, :]

    # -- language -------------------------------------------------------------------------------

    def pool_conditions(
        self, hidden_states: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project every state of each span, then average (project before pooling: spec pitfall 7).

        hidden_states (B, L, H); spans per sequence, inclusive -> padded (B, C_max, D) and a
        (B, C_max) bool mask. Positions are gathered once from the flattened batch: slicing a
        tensor that needs gradients per sequence makes autograd allocate a full-size gradient
        per slice.
        """
        batch, length = hidden_states.shape[:2]
        dimension = self.config.language.condition_dim
        max_conditions = max((len(example) for example in spans), default=0)
        device = hidden_states.device
        padded = hidden_states.new_zeros(batch, max_conditions, dimension)
        mask = torch.zeros(batch, max_conditions, dtype=torch.bool, device=device)
        positions, owners, rows, cols = [], [], [], []
        for example, example_spans in enumerate(spans):
            for slot, (start, end) in enumerate(example_spans):
                positions.extend(range(example * length + start, example * length + end + 1))
                owners.extend([len(rows)] * (end - start + 1))
                rows.append(example)
                cols.append(slot)
        if not rows:
            return padded, mask
        flat = hidden_states.reshape(batch * length, -1)
        projected = self.language_model.condition_projector(flat[torch.tensor(positions, device=device)])
        owner_index = torch.tensor(owners, device=device)
        sums = projected.new_zeros(len(rows), dimension).index_add(0, owner_index, projected)
        counts = torch.bincount(owner_index, minlength=len(rows)).to(projected.dtype)
        row_index, col_index = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        padded = padded.to(projected.dtype).index_put((row_index, col_index), sums / counts[:, None])
        mask[row_index, col_index] = True
        return padded, mask

    def pool_seg(self, hidden_states: torch.Tensor, positions: Sequence[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected state at each sequence's `<SEG>` position -> (B, D) and a (B,) found mask."""
        found = torch.tensor([p is not None for p in positions], device=hidden_states.device)
        length = hidden_states.shape[1]
        flat_positions = torch.tensor(
            [index * length + (p or 0) for index, p in enumerate(positions)], device=hidden_states.device)
        states = hidden_states.reshape(-1, hidden_states.shape[-1])[flat_positions]
        seg = self.language_model.condition_projector(states)
        return seg * found[:, None].to(seg.dtype), found

    def _splice_batch(
        self, input_ids: Sequence[Sequence[int]], image_tokens: Sequence[torch.Tensor],
        region_tokens: Sequence[torch.Tensor | None] | None,
    ) -> list[SplicedSequence]:
        region_tokens = region_tokens or [None] * len(input_ids)
        if not len(input_ids) == len(image_tokens) == len(region_tokens):
            raise ValueError(f"{len(input_ids)} prompts need as many image token sets ({len(image_tokens)}) and "
                             f"region token sets ({len(region_tokens)}).")
        return [self.language_model.splice(list(ids), tokens, regions)
                for ids, tokens, regions in zip(input_ids, image_tokens, region_tokens)]

    def get_conditions(
        self,
        input_ids: Sequence[Sequence[int]],
        image_tokens: Sequence[torch.Tensor],
        special: SpecialTokenIds,
        region_tokens: Sequence[torch.Tensor | None] | None = None,
    ) -> XSamConditionOutput:
        """Teacher-forced: one LLM pass over B prompts (answers included) -> pooled conditions.

        Args:
            input_ids: per prompt, ids with one IMAGE_TOKEN_INDEX and one REGION_TOKEN_INDEX per
                region (`tokenization.encode_with_placeholders`), the answer template included.
            image_tokens: per prompt, its image's (N, H) tokens (`llm_image_tokens` of one image).
            special: ids of `<SEG>`, `<p>`, `</p>`.
            region_tokens: per prompt, (R, H) region tokens or None.
        """
        sequences = self._splice_batch(input_ids, image_tokens, region_tokens)
        lengths = [sequence.embeds.shape[0] for sequence in sequences]
        embeds = nn.utils.rnn.pad_sequence([s.embeds for s in sequences], batch_first=True)
        token_ids = nn.utils.rnn.pad_sequence([s.token_ids for s in sequences], batch_first=True, padding_value=-1)
        device = embeds.device
        attention_mask = (torch.arange(embeds.shape[1], device=device)[None]
                          < torch.tensor(lengths, device=device)[:, None]).long()
        hidden_states = self.language_model.llm.model(
            inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        spans = [phrase_spans(ids, special) for ids in token_ids]
        seg_positions = [_first(ids, special.seg) for ids in token_ids]
        return self._pooled(hidden_states, token_ids, lengths, spans, seg_positions, [], [])

    def generate_conditions(
        self,
        input_ids: Sequence[int],
        image_tokens: torch.Tensor,
        special: SpecialTokenIds,
        region_tokens: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        single_seg: bool = True,
    ) -> XSamConditionOutput:
        """Greedy generation for one prompt (official `predict`) -> the conditions of its answer.

        States: row L + j is the state computed when generated token j was the input (spec
        pitfall 8). Conditions come from the answer's `<p>...</p>` spans when it has any (GCG),
        else from the prompt's; the `<SEG>` is the answer's first. With `single_seg` (every task
        but referring / reasoning) an answer with no or several `<SEG>` yields no `<SEG>` (X-SAM:
        no masks).
        """
        (sequence,) = self._splice_batch([input_ids], [image_tokens], [region_tokens])
        states, output_ids = self.language_model.generate(sequence, special, max_new_tokens)
        prompt_length = sequence.token_ids.shape[0]
        generated = torch.tensor(output_ids, dtype=torch.long, device=sequence.token_ids.device)
        available = states.shape[0]
        if special.phrase_start in output_ids:
            spans = [(prompt_length + s, prompt_length + e) for s, e in phrase_spans(generated, special)]
            spans = [(s, e) for s, e in spans if e < available]
        else:
            spans = phrase_spans(sequence.token_ids, special)
        seg_indices = [prompt_length + i for i, token in enumerate(output_ids) if token == special.seg]
        seg_indices = [p for p in seg_indices if p < available]
        if single_seg and len(seg_indices) != 1:
            seg_indices = []
        token_ids = torch.cat([sequence.token_ids, generated[: available - prompt_length]])
        return self._pooled(
            states[None], token_ids[None], [available], [spans], [seg_indices[0] if seg_indices else None],
            [output_ids], [prompt_length])

    def _pooled(self, hidden_states, token_ids, lengths, spans, seg_positions, output_ids, prompt_lengths):
        condition_embeds, condition_mask = self.pool_conditions(hidden_states, spans)
        seg_embeds, seg_found = self.pool_seg(hidden_states, seg_positions)
        return XSamConditionOutput(
            condition_embeds=condition_embeds, condition_mask=condition_mask, seg_embeds=seg_embeds,
            seg_found=seg_found, hidden_states=hidden_states, token_ids=token_ids, lengths=list(lengths),
            spans=[list(s) for s in spans], output_ids=output_ids, prompt_lengths=prompt_lengths)

    # -- decoder --------------------------------------------------------------------------------

    def decode(
        self,
        pixel_features: PixelDecoderOutput,
        condition_embeds: torch.Tensor,
        seg_embeds: torch.Tensor,
        condition_mask: torch.Tensor | None = None,
        return_auxiliary: bool = False,
    ) -> SegDecoderOutput:
        return self.seg_decoder(pixel_features, condition_embeds, seg_embeds, condition_mask, return_auxiliary)

    # -- the whole pass -------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Sequence[Sequence[int]],
        special: SpecialTokenIds,
        pixel_values: torch.Tensor | None = None,
        siglip_pixel_values: torch.Tensor | None = None,
        image_embeddings: XSamImageEmbeddings | None = None,
        image_index: Sequence[int] | None = None,
        prompt_masks: Sequence[Sequence[torch.Tensor]] | None = None,
        generator: torch.Generator | None = None,
        return_auxiliary: bool = False,
    ) -> XSamModelOutput:
        """X-SAM's teacher-forced multimodal forward (training, evaluation with forced answers).

        Args:
            input_ids: B prompts with placeholders and their answers (see `get_conditions`).
            special: ids of `<SEG>`, `<p>`, `</p>`.
            pixel_values / siglip_pixel_values: (B_img, 3, S, S) / (B_img, 3, s, s) images; or
            image_embeddings: cached `get_image_embeddings(...)` output (with LLM image tokens).
            image_index: the image of each prompt (default: prompt i uses image i); several
                prompts may share one image's features.
            prompt_masks: per prompt, its visual prompts as (S, S) bool masks on the padded input.
            generator: the region sampler's point draw.
            return_auxiliary: also return every earlier decoder stage (training losses).

        Raises ValueError when neither pixels nor embeddings are given, or the embeddings have no
        LLM image tokens.
        """
        if image_embeddings is None:
            if pixel_values is None or siglip_pixel_values is None:
                raise ValueError("Either pixel_values and siglip_pixel_values, or image_embeddings, must be provided.")
            image_embeddings = self.get_image_embeddings(pixel_values, siglip_pixel_values)
        tokens = image_embeddings.llm_image_tokens
        if tokens is None:
            raise ValueError("image_embeddings has no llm_image_tokens; compute them with siglip_pixel_values.")
        image_index = list(range(len(input_ids))) if image_index is None else list(image_index)
        region_tokens = None
        if prompt_masks is not None:
            sam_tokens = self.sam_part(tokens)
            region_tokens = [self.encode_regions(sam_tokens[image], masks, generator) if masks else None
                             for image, masks in zip(image_index, prompt_masks)]
        conditions = self.get_conditions(input_ids, [tokens[i] for i in image_index], special, region_tokens)
        pixel_features = image_embeddings.pixel_features
        if image_index != list(range(pixel_features.mask_features.shape[0])):
            index = torch.tensor(image_index, device=pixel_features.mask_features.device)
            pixel_features = PixelDecoderOutput(
                mask_features=pixel_features.mask_features[index],
                multi_scale_features=tuple(features[index] for features in pixel_features.multi_scale_features),
            )
        decoded = self.decode(pixel_features, conditions.condition_embeds, conditions.seg_embeds,
                              conditions.condition_mask, return_auxiliary)
        return XSamModelOutput(conditions=conditions, class_logits=decoded.class_logits,
                               mask_logits=decoded.mask_logits, auxiliary=decoded.auxiliary)


def _first(token_ids: torch.Tensor, token: int) -> int | None:
    positions = (token_ids == token).nonzero().flatten()
    return int(positions[0]) if positions.numel() else None
