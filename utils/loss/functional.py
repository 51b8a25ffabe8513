"""Pure loss functions shared by the strategies (no state, no hyper-parameter lookups).

Inputs are logits unless a name says ``prob``; reductions are explicit arguments.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_bce_targets(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative BCE targets under label smoothing (YOLOv5's ``smooth_BCE``)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0,
                    gamma: float = 0.0, alpha: float = 0.25, reduction: str = "mean") -> torch.Tensor:
    """BCE on logits with YOLOv5's ``pos_weight``; ``gamma > 0`` makes it YOLOv5's ``FocalLoss``.

    The focal form multiplies the element-wise BCE by ``alpha_t * (1 - p_t) ** gamma`` with
    ``p_t = p*y + (1-p)*(1-y)`` and ``alpha_t = y*alpha + (1-y)*(1-alpha)``.
    """
    pw = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    if gamma > 0:
        p = torch.sigmoid(logits)
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** gamma
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
