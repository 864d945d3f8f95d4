"""Phi-3 with X-SAM's multimodal splicing, condition pooling and <SEG> extraction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Phi3ForCausalLM
from transformers.cache_utils import DynamicCache

from .configuration_xsam import XSamLanguageConfig
from .modeling_projector import XSamProjector
from .tokenization import IMAGE_TOKEN_INDEX, REGION_TOKEN_INDEX, SpecialTokenIds


@dataclass(eq=False)
class SplicedSequence:
    """A prompt with placeholders replaced by embeddings.

    Attributes:
        embeds: (L, H) input embeddings.
        token_ids: (L,) the text ids, IMAGE_TOKEN_INDEX / REGION_TOKEN_INDEX at spliced positions.
    """

    embeds: torch.Tensor
    token_ids: torch.Tensor


def phrase_spans(token_ids: torch.Tensor, special: SpecialTokenIds) -> list[tuple[int, int]]:
    """Inclusive (start, end) positions of the i-th `<p>` ... i-th `</p>` pair."""
    starts = (token_ids == special.phrase_start).nonzero().flatten().tolist()
    ends = (token_ids == special.phrase_end).nonzero().flatten().tolist()
    return list(zip(starts, ends))


class XSamLanguageModel(nn.Module):
    """Phi-3 causal LM plus the `llm_projector` into the decoder's condition space."""

    def __init__(self, config: XSamLanguageConfig) -> None:
        super().__init__()
        self.config = config
        self.llm = Phi3ForCausalLM(config.phi3_config())
        self.condition_projector = XSamProjector(config.hidden_size, config.condition_dim)

    def splice(
        self, prompt_ids: list[int], image_tokens: torch.Tensor, region_tokens: torch.Tensor | None = None
    ) -> SplicedSequence:
        """Replace the single IMAGE_TOKEN_INDEX by `image_tokens` (N, H) and each REGION_TOKEN_INDEX
        by one row of `region_tokens` (R, H), in order."""
        embedding = self.llm.get_input_embeddings()
        ids = torch.tensor(prompt_ids, dtype=torch.long, device=embedding.weight.device)
        if int((ids == IMAGE_TOKEN_INDEX).sum()) != 1:
            raise ValueError("The prompt must contain exactly one <image> placeholder.")
        num_regions = int((ids == REGION_TOKEN_INDEX).sum())
        available = 0 if region_tokens is None else region_tokens.shape[0]
        if num_regions != available:
            raise ValueError(f"The prompt has {num_regions} <region> placeholders but {available} region tokens were given.")
        text_embeds = embedding(ids.clamp(min=0))
        pieces, piece_ids = [], []
        region_index = 0
        start = 0
        for position in (ids < 0).nonzero().flatten().tolist():
            pieces.append(text_embeds[start:position])
            piece_ids.append(ids[start:position])
            if ids[position] == IMAGE_TOKEN_INDEX:
                spliced = image_tokens.to(text_embeds.dtype)
            else:
                spliced = region_tokens[region_index : region_index + 1].to(text_embeds.dtype)
                region_index += 1
            pieces.append(spliced)
            piece_ids.append(ids[position].repeat(spliced.shape[0]))
            start = position + 1
        pieces.append(text_embeds[start:])
        piece_ids.append(ids[start:])
        return SplicedSequence(embeds=torch.cat(pieces), token_ids=torch.cat(piece_ids))

    def hidden_states(self, embeds: torch.Tensor) -> torch.Tensor:
        """(L, H) input embeddings -> (L, H) final-layer states after the final RMSNorm (no logits)."""
        return self.llm.model(inputs_embeds=embeds[None], use_cache=False).last_hidden_state[0]

    def generate(
        self,
        sequence: SplicedSequence,
        special: SpecialTokenIds,
        max_new_tokens: int,
    ) -> tuple[torch.Tensor, list[int]]:
        """Greedy decoding with a KV cache.

        Returns (states, output_ids): states (L + N', H) where row L + j is the final-layer state
        computed when generated token j was the *input* (pitfall 8); the stop token is not fed.
        """
        cache = DynamicCache(config=self.llm.config)
        output = self.llm.model(inputs_embeds=sequence.embeds[None], past_key_values=cache, use_cache=True)
        states = [output.last_hidden_state[0]]
        next_token = int(self.llm.lm_head(output.last_hidden_state[0, -1]).argmax())
        output_ids: list[int] = []
        embedding = self.llm.get_input_embeddings()
        while True:
            output_ids.append(next_token)
            finished = next_token in special.stop_ids or len(output_ids) >= max_new_tokens
            if finished and next_token != special.seg:
                break
            token = torch.tensor([[next_token]], device=sequence.embeds.device)
            output = self.llm.model(inputs_embeds=embedding(token), past_key_values=cache, use_cache=True)
            states.append(output.last_hidden_state[0])
            if finished:  # a <SEG> cut off by the budget still gets its state
                break
            next_token = int(self.llm.lm_head(output.last_hidden_state[0, -1]).argmax())
        return torch.cat(states), output_ids
