"""Teacher-forced X-SAM forward pass over a batch (the model's own `forward`), with X-SAM's losses
(LM + set criterion)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

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
    """All losses for one batch (see `data.collate`); "total" is what to back-propagate."""
    examples: list[TrainingExample] = batch["examples"]
    device = model.device
    output = model(
        input_ids=[example.input_ids for example in examples],
        special=special,
        pixel_values=batch["sam_pixels"].to(device),
        siglip_pixel_values=batch["siglip_pixels"].to(device),
        image_index=batch["image_index"],
        prompt_masks=[[mask.to(device) for mask in example.prompt_masks] for example in examples],
        return_auxiliary=True,
    )
    conditions = output.conditions
    if not bool(conditions.seg_found.all()):
        raise ValueError("Every training answer needs a <SEG> token; check the answer templates.")

    # Language-model loss on the answer tokens, each predicted from the previous position.
    row_length = conditions.hidden_states.shape[1]
    answer_positions = torch.cat([
        torch.arange(e * row_length + length - example.answer_length, e * row_length + length, device=device)
        for e, (example, length) in enumerate(zip(examples, conditions.lengths))
    ])
    flat_states = conditions.hidden_states.reshape(-1, conditions.hidden_states.shape[-1])
    lm_logits = model.language_model.llm.lm_head(flat_states[answer_positions - 1])
    loss_lm = F.cross_entropy(lm_logits.float(), conditions.token_ids.flatten()[answer_positions])

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
