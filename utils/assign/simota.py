"""SimOTA dynamic-k matching (YOLOX), batched over images with padding, as YOLOv7's OTA uses it.

Every image has its own small matching problem: G targets (rows) against C candidate predictions
(columns). They are stacked into ``(B, G, C)`` tensors padded to the largest image, with
``gt_valid (B, G)`` and ``col_valid (B, C)`` marking the real slots, so one call solves all images
without a Python loop over images or targets.

Worked example, one image, two targets, three columns, IoU rows ``t0 = [0.9, 0.8, 0.0]`` and
``t1 = [0.0, 0.7, 0.6]``: dynamic k = ``max(1, int(sum of the top-10 IoUs))`` gives k0 = int(1.7) = 1
and k1 = int(1.3) = 1. Each target takes its k cheapest columns: t0 takes column 0 if its cost is
lowest there, t1 column 2 or 1. A column taken by both targets goes to the target with the lower
cost on it (over all targets of the image, as YOLOv7 takes ``min`` over the whole cost column).
Columns nobody takes are negatives.

Ties: among columns of exactly equal cost a target prefers the lower column index.
YOLOv7 leaves the order to ``torch.topk``, which does not define it; exact ties come from one cell
offered twice (two targets' neighbour cells coincide), whose rows are then identical anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def slots_in_groups(group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of every item inside its group, for items already sorted by group.

    Args:
        group (Tensor[N] long): group (image) of each item, ascending.
        n_groups: number of groups (batch size).

    Returns:
        slot (Tensor[N] long): 0, 1, ... within each group; counts (Tensor[n_groups] long).
    """
    counts = torch.bincount(group, minlength=n_groups)
    start = counts.cumsum(0) - counts
    slot = torch.arange(group.shape[0], device=group.device) - start[group]
    return slot, counts


@torch.no_grad()
def pairwise_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of every pair, batched: ``(B, G, 4)`` x ``(B, C, 4)`` xyxy -> ``(B, G, C)``.

    Same formula as torchvision's ``box_iou`` (no epsilon): inter / (area1 + area2 - inter).
    """
    a, b = boxes1_xyxy.unbind(-1), boxes2_xyxy.unbind(-1)  # 4 x (B, G), 4 x (B, C)
    area1 = ((a[2] - a[0]) * (a[3] - a[1]))[:, :, None]
    area2 = ((b[2] - b[0]) * (b[3] - b[1]))[:, None, :]
    iw = (torch.minimum(a[2][:, :, None], b[2][:, None]) - torch.maximum(a[0][:, :, None], b[0][:, None])).clamp_(0)
    ih = (torch.minimum(a[3][:, :, None], b[3][:, None]) - torch.maximum(a[1][:, :, None], b[1][:, None])).clamp_(0)
    inter = iw.mul_(ih)
    return inter.div_(torch.sub(area1, inter).add_(area2))  # inter / (area1 + area2 - inter)


@torch.no_grad()
def class_cost_table(cls_logits: torch.Tensor, obj_logits: torch.Tensor) -> torch.Tensor:
    """YOLOv7's class cost of every column for every class, without a (targets x columns x classes) tensor.

    The score is ``y = sqrt(sigmoid(cls) * sigmoid(obj))`` and the cost for a target of class t is
    ``sum_c BCE(y_c, onehot_c) = sum_c BCE(y_c, 0) + [BCE(y_t, 1) - BCE(y_t, 0)]``
    ``= -sum_c log(1 - y_c) - log(y_t) + log(1 - y_t)``: one row per column, one entry per class, so
    a (target, column) pair costs one gather. Computed in float32 whatever the input dtype; ``y`` is
    kept inside (0, 1) so saturated logits give large finite costs (YOLOv7's ``log(y / (1 - y))``
    gives inf or NaN there).

    Args:
        cls_logits (Tensor[N, nc]); obj_logits (Tensor[N]).

    Returns:
        Tensor[N + 1, nc]: entry (n, t) = class cost of column n for a target of class t; the extra
        last row is +inf, the cost of a padded column.
    """
    n, nc = cls_logits.shape
    y = cls_logits.float().sigmoid().mul_(obj_logits.float().sigmoid()[:, None]).sqrt_()
    table = y.new_empty((n + 1, nc))
    body = table[:n]
    torch.log1p(torch.neg(y).clamp_(min=-(1.0 - 2.0 ** -24)), out=body)  # log(1 - y)
    log_1my_sum = body.sum(1, keepdim=True)
    body.sub_(y.clamp_(min=torch.finfo(torch.float32).tiny).log_()).sub_(log_1my_sum)
    table[n] = float("inf")
    return table


@torch.no_grad()
def dynamic_k(iou: torch.Tensor, topk: int = 10) -> torch.Tensor:
    """``max(1, int(sum of the topk largest IoUs))`` per row of ``(B, G, C)`` -> ``(B, G)`` long.

    Padded columns must hold IoU 0; fewer than ``topk`` columns sum all of them, as YOLOv7's
    ``topk(min(10, n))`` does.
    """
    if iou.shape[2] < topk:
        iou = F.pad(iou, (0, topk - iou.shape[2]))
    return iou.topk(topk, dim=2).values.sum(2).int().clamp(min=1).long()


@torch.no_grad()
def cheapest_first(cost: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest values along the last dim, equal values lowest index first.

    The float64 key ``cost * (1 + index * 2^-26 / C)`` keeps the order of distinct non-negative
    float32 costs (neighbours differ by at least 2^-24 relative) and orders equal ones by index, so
    ``topk`` gives the same answer on every device and for any padding of the batch dimension.
    """
    c = cost.shape[-1]
    ramp = torch.arange(c, device=cost.device, dtype=torch.float64).mul_(2.0 ** -26 / c).add_(1.0)
    return cost.double().mul_(ramp).topk(k, dim=-1, largest=False).indices


@torch.no_grad()
def simota_match(cost: torch.Tensor, iou: torch.Tensor, gt_valid: torch.Tensor, col_valid: torch.Tensor,
                 topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA's dynamic-k matching on padded per-image cost matrices.

    Args:
        cost (Tensor[B, G, C]): matching cost (>= 0) of target slot g and column c; must be +inf
            at padded columns.
        iou (Tensor[B, G, C]): IoU of the same pairs, for the dynamic k; must be 0 at padded columns.
        gt_valid (Tensor[B, G] bool), col_valid (Tensor[B, C] bool): real (unpadded) slots.
        topk: how many of a target's largest IoUs are summed for its k.

    Returns:
        matched (Tensor[B, C] long): target slot each column goes to (meaningful where ``fg``);
        fg (Tensor[B, C] bool): columns that became positives.
    """
    b, g, c = cost.shape
    dev = cost.device
    matched = torch.zeros((b, c), dtype=torch.long, device=dev)
    if g == 0 or c == 0:
        return matched, torch.zeros((b, c), dtype=torch.bool, device=dev)
    k = dynamic_k(iou, topk) * gt_valid  # (B, G), each <= topk; 0 for padded targets
    kk = min(topk, c)
    order = cheapest_first(cost, kk)  # (B, G, kk)
    take = torch.arange(kk, device=dev) < k[..., None]
    bi, gi, ji = take.nonzero(as_tuple=True)  # selected (image, target, rank)
    ci = order[bi, gi, ji]
    ok = col_valid[bi, ci]  # an image without columns still has k = 1
    bi, gi, ci = bi[ok], gi[ok], ci[ok]
    count = torch.zeros((b, c), dtype=torch.long, device=dev).index_put_((bi, ci), torch.ones_like(ci),
                                                                          accumulate=True)
    matched[bi, ci] = gi
    # a column claimed by several targets goes to the cheapest target of the image (all targets, not
    # only the claimants, as YOLOv7 takes the minimum over the whole cost column)
    mb, mc = (count > 1).nonzero(as_tuple=True)
    if len(mb):
        costs = cost[mb, :, mc].masked_fill(~gt_valid[mb], float("inf"))  # (M, G)
        matched[mb, mc] = costs.argmin(1)
    return matched, count > 0
