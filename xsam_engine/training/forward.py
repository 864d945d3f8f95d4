"""Teacher-forced X-SAM forward pass over a batch, with X-SAM's losses (LM + set criterion)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..modeling_llm import phrase_spans
from ..modeling_xsam import XSamModel
from ..tokenization import SpecialTokenIds
from .data import TrainingExample
from .losses import CriterionWeights, set_criterion


def training_losses(
    model: XSamModel,
    batch: dict,
    special: SpecialTokenIds,
    weights: CriterionWeights = CriterionWeights(),
    loss_size: int = 128,
    lm_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """All losses for one batch; "total" is what to back-propagate."""
    examples: list[TrainingExample] = batch["examples"]
    device = model.device
    mask_output = model.encode_mask_image(batch["sam_pixels"].to(device))
    pixel_features = model.encode_pixels(mask_output)
    sam_tokens = model.sam_tokens(mask_output)
    siglip_tokens = model.encode_vision(batch["siglip_pixels"].to(device))
    language_model = model.language_model

    sequences = []
    for b, example in enumerate(examples):
        region_tokens = None
        if example.prompt_masks:
            masks = [mask.to(device) for mask in example.prompt_masks]
            region_tokens = model.encode_regions(sam_tokens[b], masks)
        image_tokens = torch.cat([siglip_tokens[b], sam_tokens[b]])
        sequences.append(language_model.splice(example.input_ids, image_tokens, region_tokens))

    lengths = [sequence.embeds.shape[0] for sequence in sequences]
    max_length = max(lengths)
    hidden = sequences[0].embeds.shape[1]
    embeds = sequences[0].embeds.new_zeros(len(sequences), max_length, hidden)
    attention_mask = torch.zeros(len(sequences), max_length, dtype=torch.long, device=device)
    for b, sequence in enumerate(sequences):
        embeds[b, : lengths[b]] = sequence.embeds
        attention_mask[b, : lengths[b]] = 1
    states = language_model.llm.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state

    # Language-model loss on the answer tokens (predicted from the previous position).
    lm_logits, lm_targets = [], []
    conditions, seg_embeds = [], []
    for b, (sequence, example) in enumerate(zip(sequences, examples)):
        answer_positions = torch.arange(lengths[b] - example.answer_length, lengths[b], device=device)
        lm_logits.append(language_model.llm.lm_head(states[b, answer_positions - 1]))
        lm_targets.append(sequence.token_ids[answer_positions])
        spans = phrase_spans(sequence.token_ids, special)
        conditions.append(language_model.pool_conditions(states[b], spans))
        seg_position = (sequence.token_ids == special.seg).nonzero().flatten()[:1]
        seg_embeds.append(language_model.condition_projector(states[b, seg_position])[0])
    loss_lm = F.cross_entropy(torch.cat(lm_logits).float(), torch.cat(lm_targets))

    max_conditions = max(c.shape[0] for c in conditions)
    condition_dim = conditions[0].shape[1]
    condition_embeds = states.new_zeros(len(conditions), max_conditions, condition_dim)
    condition_mask = torch.zeros(len(conditions), max_conditions, dtype=torch.bool, device=device)
    for b, condition in enumerate(conditions):
        condition_embeds[b, : condition.shape[0]] = condition
        condition_mask[b, : condition.shape[0]] = True
    output = model.decode(
        pixel_features, condition_embeds, torch.stack(seg_embeds), condition_mask, return_auxiliary=True
    )
    targets = [(e.target_labels.to(device), e.target_masks.to(device)) for e in examples]
    losses: dict[str, torch.Tensor] = {"lm": lm_weight * loss_lm}
    stages = [*output.auxiliary, (output.class_logits, output.mask_logits)]
    for index, (class_logits, mask_logits) in enumerate(stages):
        stage_losses = set_criterion(class_logits, mask_logits, targets, weights, loss_size)
        for name, value in stage_losses.items():
            key = name if index == len(stages) - 1 else f"aux_{name}"
            losses[key] = losses.get(key, 0.0) + value
    losses["total"] = sum(value for value in losses.values())
    return losses
