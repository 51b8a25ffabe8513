"""SimOTA dynamic-k matching (YOLOX), batched over images with padding, as YOLOv7's OTA uses it.

Every image has its own small matching problem: its targets (rows) against its C candidate
predictions (columns). All targets of the batch are stacked as rows of one ``(n, C)`` matrix, each
row holding its own image's columns padded to the widest image (``col_valid (B, C)`` marks the real
column slots), so one call solves all images without a Python loop over images or targets, and
without padded target rows.

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

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from utils.assign.common import cheapest_first, group_spans, slots_in_groups  # noqa: F401  (importable here)


@torch.no_grad()
def row_iou(boxes_xyxy: torch.Tensor, columns_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of each box with its own row of columns: ``(n, 4)`` x ``(n, 4, C)`` -> ``(n, C)``.

    Row r of ``columns_xyxy`` holds x1, y1, x2, y2 of the C columns of box r's image. Same formula
    as torchvision's ``box_iou`` (no epsilon): inter / (area1 + area2 - inter).
    """
    x1, y1, x2, y2 = boxes_xyxy[:, :, None].unbind(1)  # 4 x (n, 1)
    cx1, cy1, cx2, cy2 = columns_xyxy.unbind(1)  # 4 x (n, C)
    area1 = (x2 - x1) * (y2 - y1)
    area2 = (cx2 - cx1).mul_(cy2 - cy1)
    inter = torch.minimum(cx2, x2).sub_(torch.maximum(cx1, x1)).clamp_(0)
    inter.mul_(torch.minimum(cy2, y2).sub_(torch.maximum(cy1, y1)).clamp_(0))
    return inter.div_(area2.add_(area1).sub_(inter))  # inter / (area1 + area2 - inter)


@torch.no_grad()
def class_cost_table(cls_logits: torch.Tensor, obj_logits: torch.Tensor) -> torch.Tensor:
    """YOLOv7's class cost of every column for every class, without a (targets x columns x classes) tensor.

    The score is ``y = sqrt(sigmoid(cls) * sigmoid(obj))`` and the cost for a target of class t is
    ``sum_c BCE(y_c, onehot_c) = sum_c BCE(y_c, 0) + [BCE(y_t, 1) - BCE(y_t, 0)]``
    ``= -sum_c log(1 - y_c) - log(y_t) + log(1 - y_t)``: one row per column, one entry per class, so
    a (target, column) pair costs one look-up. Computed in float32 whatever the input dtype; ``y`` is
    kept inside (0, 1) so saturated logits give large finite costs (YOLOv7's ``log(y / (1 - y))``
    gives inf or NaN there).

    Args:
        cls_logits (Tensor[N, nc]); obj_logits (Tensor[N]).

    Returns:
        Tensor[N, nc]: entry (n, t) = class cost of column n for a target of class t.
    """
    y = cls_logits.float().sigmoid().mul_(obj_logits.float().sigmoid()[:, None]).sqrt_()
    table = torch.log1p(torch.neg(y).clamp_(min=-(1.0 - 2.0 ** -24)))  # log(1 - y)
    log_1my_sum = table.sum(1, keepdim=True)
    return table.sub_(y.clamp_(min=torch.finfo(torch.float32).tiny).log_()).sub_(log_1my_sum)


@torch.no_grad()
def dynamic_k(iou: torch.Tensor, topk: int = 10) -> torch.Tensor:
    """``max(1, int(sum of the topk largest IoUs))`` per row: ``(..., C)`` -> ``(...)`` long.

    Padded columns must hold IoU 0; fewer than ``topk`` columns sum all of them, as YOLOv7's
    ``topk(min(10, n))`` does.
    """
    if iou.shape[-1] < topk:
        iou = F.pad(iou, (0, topk - iou.shape[-1]))
    return iou.topk(topk, dim=-1).values.sum(-1).int().clamp(min=1).long()


@torch.no_grad()
@torch.no_grad()
def _claims(cost: torch.Tensor, iou: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every column a row takes: its dynamic-k cheapest, ``(n, C)`` -> 2 x (M,).

    Row by row, so a matrix cut into row chunks gives the same pairs chunk by chunk."""
    k = dynamic_k(iou, topk)  # (n,), each <= topk
    kk = min(int(k.max()), cost.shape[1])  # one sync per call; top-k costs grow with k
    order = cheapest_first(cost, kk)  # (n, kk)
    ri, ji = (torch.arange(kk, device=cost.device) < k[:, None]).nonzero(as_tuple=True)  # selected (row, rank)
    return ri, order[ri, ji]


@torch.no_grad()
def simota_match(cost: torch.Tensor, iou: torch.Tensor, row_image: torch.Tensor, col_valid: torch.Tensor,
                 topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA's dynamic-k matching for a batch of images, one row per real target.

    Row r is a target of image ``row_image[r]`` against that image's columns (padded to the widest
    image), so no work is spent on padded targets.

    Args:
        cost (Tensor[n, C]): matching cost (>= 0) of target row r and column slot c of its image;
            must be +inf at padded columns.
        iou (Tensor[n, C]): IoU of the same pairs, for the dynamic k; must be 0 at padded columns.
        row_image (Tensor[n] long): image of each row, ascending (rows of an image are contiguous).
        col_valid (Tensor[B, C] bool): real (unpadded) column slots of each image.
        topk: how many of a target's largest IoUs are summed for its k.

    Returns:
        matched (Tensor[B, C] long): the row each column goes to (meaningful where ``fg``);
        fg (Tensor[B, C] bool): columns that became positives.
    """
    n, c = cost.shape
    b = col_valid.shape[0]
    dev = cost.device
    matched = torch.zeros((b, c), dtype=torch.long, device=dev)
    if n == 0 or c == 0:
        return matched, torch.zeros((b, c), dtype=torch.bool, device=dev)
    ri, ci = _claims(cost, iou, topk)
    bi = row_image[ri]
    ok = col_valid[bi, ci]  # an image without columns still has k = 1
    ri, bi, ci = ri[ok], bi[ok], ci[ok]
    count = torch.zeros((b, c), dtype=torch.long, device=dev).index_put_((bi, ci), torch.ones_like(ci),
                                                                          accumulate=True)
    matched[bi, ci] = ri
    # a column claimed by several targets goes to the cheapest target of the image (all targets, not
    # only the claimants, as YOLOv7 takes the minimum over the whole cost column)
    mb, mc = (count > 1).nonzero(as_tuple=True)
    if len(mb):
        rows_per_image, first = group_spans(row_image, b)
        g = torch.arange(int(rows_per_image.max()), device=dev)
        rows = first[mb, None] + g  # (M, G): the rows of each conflict's image
        costs = cost[rows.clamp(max=n - 1), mc[:, None]].masked_fill(g >= rows_per_image[mb, None], float("inf"))
        matched[mb, mc] = rows.gather(1, costs.argmin(1, keepdim=True))[:, 0]
    return matched, count > 0


@torch.no_grad()
def simota_match_rows(chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], col_valid: torch.Tensor,
                      topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``simota_match`` for one image whose matrices come in consecutive row chunks, so memory is that
    of one chunk however many targets the image holds (3,000 boxes: ~4 GB as one matrix).

    Args:
        chunks: yields (cost (Tensor[q, C]), iou (Tensor[q, C])) for rows 0..q-1, q..., as ``simota_match``
            takes them (cost +inf and IoU 0 at padded columns).
        col_valid (Tensor[C] bool): real column slots.

    Returns:
        matched (Tensor[C] long), fg (Tensor[C] bool), equal to ``simota_match`` on the whole matrix: a
        column claimed twice goes to the row of lowest cost among all rows, the first such row on ties.
    """
    c = col_valid.shape[0]
    dev = col_valid.device
    count = torch.zeros(c, dtype=torch.long, device=dev)
    matched = torch.zeros(c, dtype=torch.long, device=dev)
    best_cost = torch.full((c,), float("inf"), device=dev)
    best_row = torch.zeros(c, dtype=torch.long, device=dev)
    r0 = 0
    for cost, iou in chunks:
        ri, ci = _claims(cost, iou, topk)
        ok = col_valid[ci]
        ri, ci = ri[ok], ci[ok]
        count.index_add_(0, ci, torch.ones_like(ci))
        matched[ci] = ri + r0
        chunk_row = cost.argmin(0)  # first row of the lowest cost, as simota_match's argmin
        chunk_cost = cost.gather(0, chunk_row[None])[0]
        better = chunk_cost < best_cost  # strict: an earlier chunk wins a tie
        best_cost = torch.where(better, chunk_cost, best_cost)
        best_row = torch.where(better, chunk_row + r0, best_row)
        r0 += cost.shape[0]
    return torch.where(count > 1, best_row, matched), count > 0
