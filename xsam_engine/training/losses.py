"""Mask2Former-style set criterion: Hungarian matching, class cross-entropy, mask BCE + dice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F


@dataclass(frozen=True)
class CriterionWeights:
    """Mask2Former's defaults: class 2, mask BCE 5, dice 5; background class weight 0.1.

    `selection_weight` weighs our addition, the query-selection loss (see `set_criterion`).
    `selection_target` picks which query a target is matched to: "matched" (Mask2Former's cost,
    class + mask) or "best_mask" (mask cost only: the query whose mask is already closest to the
    target; its class logit, and for single-target conditions the selection loss, are then trained
    to pick it, so the query inference selects is the one with the best mask).
    """

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    selection_weight: float = 2.0
    selection_target: str = "matched"

    def __post_init__(self) -> None:
        if self.selection_target not in SELECTION_TARGETS:
            raise ValueError(f"selection_target must be one of {SELECTION_TARGETS}, got {self.selection_target!r}.")


SELECTION_TARGETS = ("matched", "best_mask")


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of 1 - dice; logits and targets (N, P)."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).mean()


def _pairwise_costs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE and dice cost matrices (Q, T) between query masks and targets, both (·, P)."""
    points = logits.shape[-1]
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (positive @ targets.T + negative @ (1 - targets).T) / points
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.T + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)
    return bce, dice


@torch.no_grad()
def hungarian_match(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
    weights: CriterionWeights,
) -> tuple[np.ndarray, np.ndarray]:
    """Match queries to targets of one image. class_logits (Q, C+1), mask_logits (Q, P), masks (T, P)."""
    probs = class_logits.float().softmax(-1)
    cost_class = -probs[:, labels]
    cost_bce, cost_dice = _pairwise_costs(mask_logits.float(), masks.float())
    class_weight = weights.class_weight if weights.selection_target == "matched" else 0.0
    cost = class_weight * cost_class + weights.mask_weight * cost_bce + weights.dice_weight * cost_dice
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return rows, cols


def set_criterion(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    targets: list[tuple[torch.Tensor, torch.Tensor]],
    weights: CriterionWeights,
    loss_size: int,
) -> dict[str, torch.Tensor]:
    """Losses for one decoder stage over a batch.

    Matching compares masks at the prediction's own resolution (targets are area-pooled to it);
    the losses then upsample only the matched masks to `loss_size`.

    Besides Mask2Former's losses, a query-selection loss: for every condition with exactly one
    target (referring, reasoning, interactive, GCG phrases, unique classes), cross-entropy over
    the queries of that condition's logit, with the matched query as the answer. Inference picks
    that condition's mask as the argmax over queries, and the per-query background softmax alone
    (whose false positives weigh only `no_object_weight`) trains this ranking slowly. Indexing is batched (one
    gather per tensor) because per-image slicing makes autograd allocate a full-size zero
    gradient for every slice.

    Args:
        class_logits: (B, Q, C_max + 1), the last column the background.
        mask_logits: (B, Q, h, w).
        targets: per image (labels (T,), masks (T, loss_size, loss_size) float).
        loss_size: side at which masks are compared in the loss.
    """
    batch, num_queries, num_columns = class_logits.shape
    background = num_columns - 1
    size = mask_logits.shape[-1]
    detached_classes = class_logits.detach()
    detached_masks = mask_logits.detach().flatten(2)
    class_targets = torch.full((batch, num_queries), background, dtype=torch.long, device=class_logits.device)
    batch_index, query_index, matched_targets = [], [], []
    select_batch, select_condition, select_query = [], [], []
    for b, (labels, masks) in enumerate(targets):
        if labels.numel() == 0:
            continue
        coarse = F.adaptive_avg_pool2d(masks[None], size)[0].flatten(1) if masks.shape[-1] != size else masks.flatten(1)
        rows, cols = hungarian_match(detached_classes[b], detached_masks[b], labels, coarse, weights)
        rows_t = torch.as_tensor(rows, device=class_logits.device)
        class_targets[b, rows_t] = labels[cols]
        batch_index.append(torch.full_like(rows_t, b))
        query_index.append(rows_t)
        matched_targets.append(masks[cols])
        counts = torch.bincount(labels)
        for row, col in zip(rows.tolist(), cols.tolist()):
            label = int(labels[col])
            if counts[label] == 1:
                select_batch.append(b)
                select_condition.append(label)
                select_query.append(row)
    class_weights = torch.ones(num_columns, device=class_logits.device)
    class_weights[background] = weights.no_object_weight
    # Padded conditions carry -1e9 logits; they are never targets, so cross-entropy ignores them.
    loss_class = F.cross_entropy(class_logits.float().transpose(1, 2), class_targets, weight=class_weights)
    if batch_index:
        selected = mask_logits[torch.cat(batch_index), torch.cat(query_index)]  # (N, h, w), one gather
        logits = F.interpolate(selected[:, None].float(), size=(loss_size, loss_size), mode="bilinear", align_corners=False)
        logits = logits.flatten(1)
        masks = torch.cat(matched_targets).flatten(1).float()
        loss_mask = F.binary_cross_entropy_with_logits(logits, masks)
        loss_dice = dice_loss(logits, masks)
    else:
        loss_mask = loss_dice = mask_logits.sum() * 0.0
    losses = {
        "class": weights.class_weight * loss_class,
        "mask": weights.mask_weight * loss_mask,
        "dice": weights.dice_weight * loss_dice,
    }
    if select_batch:
        device = class_logits.device
        # (N, Q): the logit of each single-target condition for every query of its image
        per_query = class_logits[torch.tensor(select_batch, device=device), :, torch.tensor(select_condition, device=device)]
        losses["select"] = weights.selection_weight * F.cross_entropy(
            per_query.float(), torch.tensor(select_query, device=device)
        )
    return losses
