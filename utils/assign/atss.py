"""ATSS: Adaptive Training Sample Selection (Zhang et al., CVPR 2020), as GFL uses it.

Priors are grid-cell centres ``((gi + 0.5) * stride, (gj + 0.5) * stride)`` with, for the IoU
only, a virtual square box of side ``anchor_scale * stride`` (GFL: one anchor of octave scale 8).
For every object:

1. on every level, the ``topk`` cell centres nearest (Euclidean) to the object's centre are its
   candidates (``min(topk, cells of the level)`` where a level is tiny);
2. the IoU of each candidate's virtual box with the object; threshold = mean + std (Bessel
   corrected, ``torch.std``'s default, as mmdetection) of those IoUs over all candidates;
3. a candidate is positive when its IoU >= the threshold and its centre lies inside the object
   by more than ``eps`` pixels on all four sides (mmdetection's 0.01);
4. a cell that is positive for several objects of one image goes to the one with the largest IoU
   (the lowest object row on an exact tie).

Worked example, one level of stride 8 on a 64x64 image (8x8 cells), ``topk=9``, one object with
pixel box xyxy (8, 8, 56, 56): its centre (32, 32) lies on a cell corner, so the 4 cells around it
(gj, gi in {3, 4}) are 5.66 px away, the next 8 are 12.65 px away (the 9th candidate is picked by
``topk`` among equals). The 64x64 px virtual boxes of the 4 nearest contain the object: IoU
2304 / 4096 = 0.5625; the others reach IoU 0.4925. mean + std of (4 x 0.5625, 5 x 0.4925) is
0.5605, so exactly the 4 nearest cells are positive (their centres lie inside the object).

Everything runs over all objects of the batch at once (no Python loop over images or objects);
only step 4 looks at which image an object belongs to.
"""
from __future__ import annotations

import torch

from models.geometry import cell_centres
from utils.assign.common import resolve_cell_conflicts, rows_by_level
from utils.assign.result import LevelCandidates
from utils.boxes import xywh2xyxy

INSIDE_EPS = 0.01  # pixels a centre must lie inside the object (mmdetection's ATSSAssigner)


WINDOW = 7  # cells per side searched around an object's centre when topk <= 9 (see _level_candidates)


def _level_candidates(centres: torch.Tensor, ny: int, nx: int, stride: float, topk: int) -> torch.Tensor:
    """Indices (nt, min(topk, ny * nx)) of the cells of one level nearest to each centre (pixels).

    For topk <= 9 only a 7x7 window of cells around the centre's cell (shifted to stay inside the
    grid) is searched: 9 cells closer than 3.5 cells always lie inside it, and every cell outside is
    at least 3.5 cells away, so the result equals a search of the whole grid (up to equal distances).
    """
    device = centres.device
    c = centres / stride  # (nt, 2) grid units
    if topk > 9 or min(ny, nx) < WINDOW:
        gy, gx = torch.arange(ny, device=device), torch.arange(nx, device=device)
        wy, wx = gy.expand(c.shape[0], ny), gx.expand(c.shape[0], nx)
    else:
        r = torch.arange(WINDOW, device=device)
        start_x = (c[:, 0].floor().long() - WINDOW // 2).clamp(0, nx - WINDOW)
        start_y = (c[:, 1].floor().long() - WINDOW // 2).clamp(0, ny - WINDOW)
        wx, wy = start_x[:, None] + r, start_y[:, None] + r  # (nt, W)
    dx2 = (wx + 0.5 - c[:, :1]).pow(2)  # (nt, Wx)
    dy2 = (wy + 0.5 - c[:, 1:]).pow(2)  # (nt, Wy)
    d2 = (dy2[:, :, None] + dx2[:, None, :]).flatten(1)  # (nt, Wy * Wx)
    k = min(topk, ny * nx)
    local = d2.topk(k, dim=1, largest=False).indices
    return wy.gather(1, local // wx.shape[1]) * nx + wx.gather(1, local % wx.shape[1])


def _candidates(centres: torch.Tensor, grid_shapes: list[tuple[int, int]], strides: list[float],
                topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per object the topk nearest cells of every level.

    Returns (cand (nt, K) global cell index, points (N, 2) pixel centres, point_stride (N,)),
    K = sum over levels of min(topk, ny * nx), cells numbered level by level in raster order.
    """
    device = centres.device
    cand, points, point_stride, offset = [], [], [], 0
    for (ny, nx), s in zip(grid_shapes, strides):
        cand.append(_level_candidates(centres, ny, nx, s, topk) + offset)
        points.append(cell_centres(ny, nx, s, device))
        point_stride.append(torch.full((ny * nx,), float(s), device=device))
        offset += ny * nx
    return torch.cat(cand, 1), torch.cat(points), torch.cat(point_stride)


def _virtual_box_iou(pts: torch.Tensor, side: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of square boxes (centre pts (nt, K, 2), side (nt, K)) with boxes_xyxy (nt, 1, 4) -> (nt, K)."""
    half = side[..., None] / 2
    lt = torch.maximum(pts - half, boxes_xyxy[..., :2])
    rb = torch.minimum(pts + half, boxes_xyxy[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=0).prod(-1)
    return inter / (side * side + area - inter)


@torch.no_grad()
def atss_assign(targets: torch.Tensor, grid_shapes: list[tuple[int, int]], strides: list[float] | torch.Tensor,
                img_hw: tuple[int, int], topk: int = 9, anchor_scale: float = 8.0) -> list[LevelCandidates]:
    """ATSS positives of every level (see the module docstring for the rule).

    Args:
        targets (Tensor[nt, 6]): ``[image, class, x, y, w, h]``, xywh normalised 0..1 of the image.
        grid_shapes: ``(ny, nx)`` of each level.
        strides: pixels per cell of each level.
        img_hw: (height, width) of the (letterboxed) input image in pixels.
        topk: candidates per level per object.
        anchor_scale: side of the virtual prior box, in strides.

    Returns:
        one :class:`LevelCandidates` per level, one row per positive cell, ordered by image, then
        cell (raster order); ``anchor`` is 0; ``box_xywh_cell`` is the object's xywh in grid units with
        xy relative to the cell's top-left corner (so the cell centre is (0.5, 0.5)); ``anchor_wh``
        is the virtual box (anchor_scale, anchor_scale) in grid units.
    """
    device = targets.device
    strides = [float(s) for s in strides]
    nt = targets.shape[0]
    if nt == 0:
        return [LevelCandidates.empty(device) for _ in grid_shapes]
    h, w = img_hw
    boxes_xywh = targets[:, 2:6].float() * torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
    boxes_xyxy = xywh2xyxy(boxes_xywh)  # (nt, 4) pixels
    cand, points, point_stride = _candidates(boxes_xywh[:, :2], grid_shapes, strides, topk)  # (nt, K)
    cand_pts = points[cand]  # (nt, K, 2)
    iou = _virtual_box_iou(cand_pts, point_stride[cand] * anchor_scale, boxes_xyxy[:, None])  # (nt, K)
    std = iou.std(1) if iou.shape[1] > 1 else torch.zeros_like(iou[:, 0])
    thr = iou.mean(1) + std  # (nt,)
    ltrb = torch.cat((cand_pts - boxes_xyxy[:, None, :2], boxes_xyxy[:, None, 2:] - cand_pts), -1)
    pos = (iou >= thr[:, None]) & (ltrb.min(-1).values > INSIDE_EPS)  # (nt, K)
    t, k = pos.nonzero(as_tuple=True)
    cell = cand[t, k]
    keep = resolve_cell_conflicts(t, cell, targets[t, 0].long(), iou[t, k], points.shape[0])
    return rows_by_level(t[keep], cell[keep], targets, boxes_xywh, grid_shapes, strides, anchor_scale)
