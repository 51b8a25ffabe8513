"""Task-aligned assignment (TOOD, Feng et al., ICCV 2021) with YOLOv8's choices, on the anchor-free head.

For every object (one batch, all levels' cells together, cells numbered level by level in raster order):

1. candidates: the cells whose centre lies strictly inside the object (by more than ``eps`` pixels on
   all four sides; YOLOv8's ``select_candidates_in_gts``);
2. for each candidate, ``s`` = the predicted score (sigmoid) of the object's class there and ``u`` =
   CIoU of the cell's decoded box with the object, clamped at 0; alignment ``t = s^alpha * u^beta``;
3. the ``topk`` largest ``t`` are the object's positives (equal ``t`` lowest cell first,
   :func:`utils.assign.common.highest_first`); a pair with ``t = 0`` would carry target 0 and is
   dropped;
4. a cell claimed by several objects of one image goes to the object with the largest ``u`` among
   every object of the image containing that cell, claimant or not (YOLOv8 takes the argmax over the
   whole overlap column), the lowest object row on an exact tie; it then carries that object's ``t``;
5. soft target of each positive: ``t * max(u) / (max(t) + eps)``, the maxima over that object's
   positives after step 4: the best-aligned positive of an object gets its best IoU.

Worked example (tests/test_assign_tal.py): one level of stride 8, a 32x32 image (4x4 cells), one
object xyxy (0, 0, 16, 16) px: the cells (0, 0), (1, 0), (0, 1), (1, 1) have their centres inside (4 or
12 px), nothing else does. If every cell predicts the object's box exactly (u = 1) with class score
0.25 at cell 0 and 0.64 elsewhere, t = 0.5 and 0.8; with ``topk = 2`` cells 1 and 4 (raster order,
0.8 each, the lowest indices among the three equal) are positive and get 0.8 * 1 / 0.8 = 1.0.

YOLOv8 (ultralytics ``utils/tal.py`` ``TaskAlignedAssigner``, used with topk 10, alpha 0.5, beta 6.0
in ``v8DetectionLoss``): equal assignments, except that YOLOv8 leaves the order of equal ``t`` to
``torch.topk`` and keeps ``t = 0`` pairs as positives with target 0 (no loss difference: their BCE
target is the background's and their box weight is 0). TOOD itself uses alpha 1.0, beta 6.0, top 13.
"""
from __future__ import annotations

import torch

from models.geometry import cell_centres
from utils.assign.common import highest_first, rows_by_level
from utils.assign.result import LevelCandidates
from utils.boxes import bbox_iou, xywh2xyxy

TAL_EPS = 1e-9  # YOLOv8's eps: the inside margin in pixels and the soft-target denominator's guard


@torch.no_grad()
def alignment(targets: torch.Tensor, boxes_xyxy_px: torch.Tensor, points_px: torch.Tensor,
              scores: torch.Tensor, pred_xyxy_px: torch.Tensor, alpha: float, beta: float,
              eps: float = TAL_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-2 for every (object, cell) pair of the batch.

    Args:
        targets (Tensor[nt, 6]): ``[image, class, x, y, w, h]``; boxes_xyxy_px (Tensor[nt, 4]) their boxes.
        points_px (Tensor[N, 2]): every cell's centre, pixels; scores (Tensor[bs, N, nc]): class
            scores (sigmoid); pred_xyxy_px (Tensor[bs, N, 4]): decoded boxes, pixels.

    Returns:
        inside (Tensor[nt, N] bool); align t and overlap u (Tensor[nt, N] float32, 0 outside).
    """
    nt, n = boxes_xyxy_px.shape[0], points_px.shape[0]
    ltrb = torch.cat((points_px[None] - boxes_xyxy_px[:, None, :2], boxes_xyxy_px[:, None, 2:] - points_px[None]), -1)
    inside = ltrb.amin(-1) > eps  # (nt, N)
    obj, cell = inside.nonzero(as_tuple=True)
    image, cls = targets[obj, 0].long(), targets[obj, 1].long()
    u_pair = bbox_iou(boxes_xyxy_px[obj], pred_xyxy_px[image, cell].float(), xywh=False, CIoU=True)
    u_pair = u_pair.squeeze(-1).clamp_(0)
    s_pair = scores[image, cell, cls].float()
    u = torch.zeros((nt, n), device=points_px.device)
    align = torch.zeros_like(u)
    u[obj, cell] = u_pair
    align[obj, cell] = s_pair.pow(alpha) * u_pair.pow(beta)
    return inside, align, u


@torch.no_grad()
def select_positives(image: torch.Tensor, inside: torch.Tensor, align: torch.Tensor, u: torch.Tensor,
                     topk: int, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3-4: (object row (p,), cell (p,)) of every positive, one per (image, cell).

    image (Tensor[nt] long): each object's image; inside, align, u (Tensor[nt, N]) as :func:`alignment`.
    """
    nt, n = align.shape
    top = highest_first(align, min(topk, n))  # (nt, k)
    claim = torch.zeros_like(inside).scatter_(1, top, True) & (align > 0)  # (nt, N)
    claims = torch.zeros((bs, n), device=align.device).index_add_(0, image, claim.float())  # per (image, cell)
    # step 4: the largest u over every object of the image containing the cell (-1 where outside)
    u_in = torch.where(inside, u, torch.full_like(u, -1.0))
    best = torch.full((bs, n), -1.0, device=u.device).scatter_reduce(0, image[:, None].expand(-1, n), u_in, "amax")
    rows = torch.arange(nt, device=u.device)[:, None].expand(-1, n)
    is_best = inside & (u_in == best[image])
    first = torch.full((bs, n), nt, device=u.device, dtype=torch.long).scatter_reduce(
        0, image[:, None].expand(-1, n), torch.where(is_best, rows, torch.full_like(rows, nt)), "amin")
    winner = rows == first[image]
    pos = torch.where(claims[image] > 1, winner & (align > 0), claim)
    obj, cell = pos.nonzero(as_tuple=True)
    order = (image[obj] * n + cell).argsort()  # by image, then cell
    return obj[order], cell[order]


@torch.no_grad()
def soft_targets(obj: torch.Tensor, t: torch.Tensor, u: torch.Tensor, nt: int, eps: float = TAL_EPS) -> torch.Tensor:
    """Step 5: ``t * max(u) / (max(t) + eps)`` per positive, maxima over its object's positives (p,)."""
    max_t = torch.zeros(nt, device=t.device).scatter_reduce(0, obj, t, "amax")
    max_u = torch.zeros(nt, device=t.device).scatter_reduce(0, obj, u, "amax")
    return t * max_u[obj] / (max_t[obj] + eps)


@torch.no_grad()
def tal_assign(targets: torch.Tensor, grid_shapes: list[tuple[int, int]], strides: list[float] | torch.Tensor,
               img_hw: tuple[int, int], scores: torch.Tensor, pred_xyxy_px: torch.Tensor, topk: int = 10,
               alpha: float = 0.5, beta: float = 6.0) -> list[LevelCandidates]:
    """Task-aligned positives of every level (see the module docstring for the rule).

    Args:
        targets (Tensor[nt, 6]): ``[image, class, x, y, w, h]``, xywh normalised 0..1 of the image.
        grid_shapes: ``(ny, nx)`` of each level; strides: pixels per cell of each level.
        img_hw: (height, width) of the (letterboxed) input image in pixels.
        scores (Tensor[bs, N, nc]): predicted class scores (sigmoid) of every cell, levels concatenated.
        pred_xyxy_px (Tensor[bs, N, 4]): every cell's decoded box, pixels.
        topk, alpha, beta: positives per object and the exponents of ``t = s^alpha * u^beta``.

    Returns:
        one :class:`LevelCandidates` per level, one row per positive, ordered by image, then cell;
        ``anchor`` 0, ``anchor_wh`` 0 (no prior box), ``weight`` the soft target (step 5).
    """
    device = targets.device
    strides = [float(s) for s in strides]
    if targets.shape[0] == 0:
        return [LevelCandidates.empty(device) for _ in grid_shapes]
    h, w = img_hw
    boxes_xywh = targets[:, 2:6].float() * torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
    boxes_xyxy = xywh2xyxy(boxes_xywh)  # (nt, 4) pixels
    points = torch.cat([cell_centres(ny, nx, s, device) for (ny, nx), s in zip(grid_shapes, strides)])  # (N, 2)
    inside, align, u = alignment(targets, boxes_xyxy, points, scores, pred_xyxy_px, alpha, beta)
    obj, cell = select_positives(targets[:, 0].long(), inside, align, u, topk, scores.shape[0])
    weight = soft_targets(obj, align[obj, cell], u[obj, cell], targets.shape[0])
    return rows_by_level(obj, cell, targets, boxes_xywh, grid_shapes, strides, 0.0, weight)
