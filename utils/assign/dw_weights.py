"""Dual Weighting's sample weights (Li et al., CVPR 2022), as strongwolf/DW ``dw_head.py`` computes them.

Pure and no-grad: the weights are targets of the DW loss (``utils/loss/dw.py``), never trained through.
"""
from __future__ import annotations

import torch

DW_EPS = 1e-12  # the official EPS, used in both normalisations


@torch.no_grad()
def dw_pos_weights_pairs(p: torch.Tensor, prior: torch.Tensor, group: torch.Tensor, n_groups: int,
                         gamma_num: float = 5.0, gamma_den: float = 3.0) -> torch.Tensor:
    """DW positive weights of (candidate, object) pairs, normalised per object.

    ``w = exp(5 p) p prior / sum over the object's pairs of exp(3 p) p prior`` (denominator clamped
    at ``DW_EPS``). The exponents differ on purpose: the official code rebalances positives against
    negatives this way (strongwolf/DW issue #3), so an object's weights sum to more than 1.

    Args:
        p (Tensor[n]): consistency ``p_cls * p_loc`` of each pair, in 0..1.
        prior (Tensor[n]): centre prior of each pair.
        group (LongTensor[n]): the pair's object, in ``0 .. n_groups - 1``.

    Returns:
        Tensor[n], detached.
    """
    p, prior = p.detach(), prior.detach()
    num = torch.exp(gamma_num * p) * p * prior
    den = p.new_zeros(n_groups).index_add_(0, group, torch.exp(gamma_den * p) * p * prior)
    return num / den.clamp(min=DW_EPS)[group]


@torch.no_grad()
def dw_neg_iou_weights_pairs(iou: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """DW's IoU factor of the negative weight for (candidate, object) pairs.

    ``t(x) = (1 - x^2) / (1 - 0.5^2)`` falls from 4/3 at IoU 0 through 1 at IoU 0.5 to 0 at IoU 1.
    Per object it is min-max normalised over that object's pairs, ``(t - min t + EPS) /
    (min(1, max t) - min t + EPS)``, and set to 1 where IoU < 0.5. So the object's best-IoU pair
    gets ~0 (it is hardly a negative), and an object with a single pair of IoU >= 0.5 gets
    ``EPS / EPS = 1``, exactly as the official code.

    Args:
        iou (Tensor[n]): IoU of the pair's decoded prediction with its object.
        group (LongTensor[n]): the pair's object, in ``0 .. n_groups - 1``.

    Returns:
        Tensor[n] in 0..1, detached.
    """
    iou = iou.detach()
    t = (1 - iou ** 2) / (1 - 0.5 ** 2)
    if not len(t):
        return t
    t_min = t.new_zeros(n_groups).scatter_reduce_(0, group, t, "amin", include_self=False)[group]
    t_max = t.new_zeros(n_groups).scatter_reduce_(0, group, t, "amax", include_self=False)[group]
    w = (t - t_min + DW_EPS) / (t_max.clamp(max=1.0) - t_min + DW_EPS)
    return torch.where(iou < 0.5, torch.ones_like(w), w)


@torch.no_grad()
def dw_weights(p_cls: torch.Tensor, p_loc: torch.Tensor, prior: torch.Tensor, iou: torch.Tensor,
               inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DW's two weights on the dense (point, object) layout of the official ``_loss_single``.

    Args:
        p_cls (Tensor[m, n_obj]): joint score of each point for the object's class.
        p_loc (Tensor[m, n_obj]): ``exp(-5 * GIoU loss)`` of the point's decoded box to the object.
        prior (Tensor[m, n_obj]): centre prior (the official ``CenterPrior`` makes it 0 outside).
        iou (Tensor[m, n_obj]): IoU of the point's decoded box with the object.
        inside (BoolTensor[m, n_obj]): the point lies inside the object.

    Returns:
        w_pos (Tensor[m, n_obj]): positive weight; as in the official code it is normalised over
            every point of the object weighted by ``prior`` (0 wherever prior is 0);
        w_neg_iou (Tensor[m, n_obj]): IoU factor of the negative weight, before the ``score^2``
            importance; 1 where not inside.
        Both detached.
    """
    m, n_obj = p_cls.shape
    point, obj = torch.meshgrid(torch.arange(m, device=p_cls.device),
                                torch.arange(n_obj, device=p_cls.device), indexing="ij")
    p = (p_cls * p_loc).reshape(-1)
    w_pos = dw_pos_weights_pairs(p, prior.reshape(-1), obj.reshape(-1), n_obj).view(m, n_obj)
    w_neg_iou = torch.ones_like(iou)
    w_neg_iou[inside] = dw_neg_iou_weights_pairs(iou[inside], obj[inside], n_obj).to(iou.dtype)
    return w_pos, w_neg_iou.detach()
