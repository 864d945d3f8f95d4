"""Teacher-forced X-SAM forward pass over a batch, with X-SAM's losses (LM + set criterion).

Per-sample slicing of tensors that need gradients (`states[b]`) makes autograd allocate a
full-size zero gradient for every slice; positions are therefore gathered once for the whole
batch from the flattened states.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..modeling_llm import phrase_spans
from ..modeling_xsam import XSamModel
from ..tokenization import SpecialTokenIds
from .data import TrainingExample
from .losses import CriterionWeights, set_criterion


def _pooled_conditions(
    model: XSamModel, flat_states: torch.Tensor, spans: list[list[tuple[int, int]]], row_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the projected states over every span -> padded (E, C_max, D) and mask (E, C_max)."""
    positions, owners, slots = [], [], []
    condition = 0
    for example, example_spans in enumerate(spans):
        for slot, (start, end) in enumerate(example_spans):
            positions.extend(range(example * row_length + start, example * row_length + end + 1))
            owners.extend([condition] * (end - start + 1))
            slots.append((example, slot))
            condition += 1
    device = flat_states.device
    projected = model.language_model.condition_projector(flat_states[torch.tensor(positions, device=device)])
    owner_index = torch.tensor(owners, device=device)
    sums = projected.new_zeros(condition, projected.shape[1]).index_add(0, owner_index, projected)
    counts = torch.bincount(owner_index, minlength=condition).clamp(min=1).to(projected.dtype)
    pooled = sums / counts[:, None]
    max_conditions = max(len(example_spans) for example_spans in spans)
    rows = torch.tensor([example for example, _ in slots], device=device)
    cols = torch.tensor([slot for _, slot in slots], device=device)
    padded = pooled.new_zeros(len(spans), max_conditions, pooled.shape[1]).index_put((rows, cols), pooled)
    mask = torch.zeros(len(spans), max_conditions, dtype=torch.bool, device=device)
    mask[rows, cols] = True
    return padded, mask


def training_losses(
    model: XSamModel,
    batch: dict,
    special: SpecialTokenIds,
    weights: CriterionWeights = CriterionWeights(),
    loss_size: int = 128,
    lm_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """All losses for one batch (see `data.collate`); "total" is what to back-propagate."""
    examples: list[TrainingExample] = batch["examples"]
    image_index: list[int] = batch["image_index"]
    device = model.device
    mask_output = model.encode_mask_image(batch["sam_pixels"].to(device))
    pixel_features = model.encode_pixels(mask_output)
    sam_tokens = model.sam_tokens(mask_output)
    siglip_tokens = model.encode_vision(batch["siglip_pixels"].to(device))
    language_model = model.language_model
    image_tokens = torch.cat([siglip_tokens, sam_tokens], dim=1).unbind(0)
    sam_token_maps = sam_tokens.unbind(0)

    sequences = []
    for example, image in zip(examples, image_index):
        region_tokens = None
        if example.prompt_masks:
            masks = [mask.to(device) for mask in example.prompt_masks]
            region_tokens = model.encode_regions(sam_token_maps[image], masks)
        sequences.append(language_model.splice(example.input_ids, image_tokens[image], region_tokens))
    lengths = [sequence.embeds.shape[0] for sequence in sequences]
    row_length = max(lengths)
    embeds = torch.nn.utils.rnn.pad_sequence([s.embeds for s in sequences], batch_first=True)
    token_ids = torch.nn.utils.rnn.pad_sequence([s.token_ids for s in sequences], batch_first=True, padding_value=-1)
    attention_mask = (torch.arange(row_length, device=device)[None] < torch.tensor(lengths, device=device)[:, None]).long()
    states = language_model.llm.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
    flat_states = states.reshape(-1, states.shape[-1])

    # Language-model loss on the answer tokens, each predicted from the previous position.
    answer_positions = torch.cat([
        torch.arange(e * row_length + length - example.answer_length, e * row_length + length, device=device)
        for e, (example, length) in enumerate(zip(examples, lengths))
    ])
    lm_logits = language_model.llm.lm_head(flat_states[answer_positions - 1])
    loss_lm = F.cross_entropy(lm_logits.float(), token_ids.flatten()[answer_positions])

    spans = [phrase_spans(ids, special) for ids in token_ids]
    condition_embeds, condition_mask = _pooled_conditions(model, flat_states, spans, row_length)
    seg_positions = torch.stack([
        e * row_length + (ids == special.seg).nonzero().flatten()[0] for e, ids in enumerate(token_ids)
    ])
    seg_embeds = language_model.condition_projector(flat_states[seg_positions])

    if len(set(image_index)) != len(image_index):  # several questions per image: repeat its features
        index = torch.tensor(image_index, device=device)
        pixel_features = type(pixel_features)(
            mask_features=pixel_features.mask_features[index],
            multi_scale_features=tuple(features[index] for features in pixel_features.multi_scale_features),
        )
    output = model.decode(pixel_features, condition_embeds, seg_embeds, condition_mask, return_auxiliary=True)
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
