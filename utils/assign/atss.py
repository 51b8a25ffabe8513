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

import dataclasses
from typing import ClassVar

import torch

from models.geometry import CELL_CENTRE, PriorGenerator
from utils.assign.common import resolve_cell_conflicts
from utils.assign.params import POSITIVE, HypParams
from utils.assign.result import AssignResult, LevelCandidates
from utils.assign.rule import AssignRule, HeadPriors, level_rows
from utils.assign.targets import Targets

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


def _virtual_box_iou(pts: torch.Tensor, wh: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of prior boxes (centre pts (nt, K, 2), size wh (nt, K, 2)) with boxes_xyxy (nt, 1, 4) -> (nt, K)."""
    half = wh / 2
    lt = torch.maximum(pts - half, boxes_xyxy[..., :2])
    rb = torch.minimum(pts + half, boxes_xyxy[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=0).prod(-1)
    return inter / (wh[..., 0] * wh[..., 1] + area - inter)


def _candidates(targets: Targets, priors: HeadPriors, prior_wh_px: list[torch.Tensor],
                topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per object, every prior at the ``topk`` cells of every level nearest to its centre.

    Returns (cand (nt, K) global prior index, centre (nt, K, 2) px, wh (nt, K, 2) px of the prior box),
    K = sum over levels of na * min(topk, ny * nx), anchor-major within a level.
    """
    nt = len(targets)
    cand, pts, whs = [], [], []
    for lv, wh in zip(priors.levels, prior_wh_px):
        cells = _level_candidates(targets.xywh_px[:, :2], lv.ny, lv.nx, lv.stride, topk)  # (nt, k) raster
        k = cells.shape[1]
        centre = (torch.stack((cells % lv.nx, cells // lv.nx), -1).float() + CELL_CENTRE) * lv.stride
        a = torch.arange(lv.na, device=cells.device)
        cand.append((lv.start + a[:, None] * (lv.ny * lv.nx) + cells[:, None, :]).reshape(nt, -1))
        pts.append(centre[:, None].expand(nt, lv.na, k, 2).reshape(nt, -1, 2))
        whs.append(wh.to(cells.device)[:, None].expand(lv.na, k, 2)[None].expand(nt, -1, -1, -1).reshape(nt, -1, 2))
    return torch.cat(cand, 1), torch.cat(pts, 1), torch.cat(whs, 1)


@torch.no_grad()
def atss_pairs(targets: Targets, priors: HeadPriors, prior_wh_px: list[torch.Tensor],
               topk: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """ATSS positives: (object row (p,), global prior (p,)), one per (image, prior), by image then prior.

    ``prior_wh_px``: per level the (na, 2) size of the prior boxes in pixels (the anchors, or the
    dfl head's virtual square).
    """
    boxes_xyxy = targets.xyxy_px
    cand, cand_pts, cand_wh = _candidates(targets, priors, prior_wh_px, topk)  # (nt, K)
    iou = _virtual_box_iou(cand_pts, cand_wh, boxes_xyxy[:, None])  # (nt, K)
    std = iou.std(1) if iou.shape[1] > 1 else torch.zeros_like(iou[:, 0])
    thr = iou.mean(1) + std  # (nt,)
    ltrb = torch.cat((cand_pts - boxes_xyxy[:, None, :2], boxes_xyxy[:, None, 2:] - cand_pts), -1)
    pos = (iou >= thr[:, None]) & (ltrb.min(-1).values > INSIDE_EPS)  # (nt, K)
    t, k = pos.nonzero(as_tuple=True)
    prior = cand[t, k]
    keep = resolve_cell_conflicts(t, prior, targets.image[t], iou[t, k], priors.count)
    return t[keep], prior[keep]


@torch.no_grad()
def atss_assign(targets: torch.Tensor, grid_shapes: list[tuple[int, int]], strides: list[float] | torch.Tensor,
                img_hw: tuple[int, int], topk: int = 9, anchor_scale: float = 8.0) -> list[LevelCandidates]:
    """ATSS positives of every level of the anchor-free head (see the module docstring for the rule).

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
    bs = int(targets[:, 0].max()) + 1 if targets.shape[0] else 1
    t = Targets.of_size(targets, img_hw, bs)
    gen = PriorGenerator(torch.tensor([float(s) for s in strides]))
    priors = HeadPriors("dfl", gen.levels(list(grid_shapes), targets.device), gen)
    return ATSSRule({"atss_topk": topk, "atss_scale": anchor_scale})(priors, None, t).levels


@dataclasses.dataclass(frozen=True)
class ATSSHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = dict.fromkeys(("atss_topk", "atss_scale"), POSITIVE)

    atss_topk: int = 9  # ATSS candidates per level per object (nearest cell centres)
    atss_scale: float = 8.0  # dfl head: side of ATSS's virtual prior box, in strides (GFL 8)


class ATSSRule(AssignRule):
    """``assigner: atss``: geometry only. On the anchor head the prior boxes are the anchors (cell
    centre + anchor w, h) and every anchor at the ``atss_topk`` nearest cells of a level is a candidate
    (mmdetection ranks anchors, so at equal distance it takes ``topk`` anchors, i.e. topk / na cells);
    on the dfl head one virtual square of ``atss_scale`` strides per cell."""

    name = "atss"
    Hyp = ATSSHyp

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: object, targets: Targets) -> AssignResult:
        if len(targets) == 0:
            return self.empty(priors, targets)
        h = self.hyp
        if priors.kind == "anchor":
            wh = [lv.anchor_wh_px for lv in priors.levels]
        else:
            wh = [torch.full((1, 2), lv.stride * h.atss_scale) for lv in priors.levels]
        obj, prior = atss_pairs(targets, priors, wh, h.atss_topk)
        scale = None if priors.kind == "anchor" else h.atss_scale
        return AssignResult(level_rows(obj, prior, targets, priors, anchor_wh=scale), len(targets))
