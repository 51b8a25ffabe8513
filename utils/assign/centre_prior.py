"""Cells whose centre lies inside an object, and a Gaussian prior on their distance to its centre.

FCOS-style candidates (used by ``dw``): a grid cell of a level is a candidate of an object when
the cell's centre ``((gi + 0.5), (gj + 0.5))`` in grid units (``* stride`` in pixels) lies strictly
inside the object's box, as mmdetection's ``bbox_targets.min(-1) > 0``.

Worked example, one level with a 4x4 grid: an object spanning x 0.6..2.4 and y 1.2..1.8 (grid
units) holds the centres x = 1.5 (0.5 < 0.6 is outside, 2.5 > 2.4 outside) and y = 1.5, so its
only cell is (gi=1, gj=1). An object with x 0.9..1.1 holds no centre: it has no candidate at this
level. :func:`centre_candidates` (``dw``'s rule) then offers every anchor of such a cell, so with 3
anchors the first object gets three rows (gi=1, gj=1, anchor 0, 1, 2).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from models.geometry import cell_frame
from utils.assign.params import POSITIVE, HypParams
from utils.assign.result import WEIGHTED_CANDIDATE_ROW, AssignResult, LevelCandidates
from utils.assign.rule import AssignRule, HeadPriors
from utils.assign.targets import Targets
from utils.boxes import xywh2xyxy


@torch.no_grad()
def cells_inside_boxes(boxes_xyxy_grid: torch.Tensor, grid_shape: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (object, cell) pair whose cell centre lies strictly inside the object.

    Args:
        boxes_xyxy_grid (Tensor[n, 4]): boxes in grid units of the level.
        grid_shape: ``(ny, nx)``.

    Returns:
        obj, gj, gi (LongTensor[k] each): the pair's object row, cell row and cell column; pairs
        are ordered by object, then row, then column.
    """
    ny, nx = grid_shape
    # centre c = g + 0.5 inside (lo, hi) strictly  <=>  floor(lo - 0.5) + 1 <= g <= ceil(hi - 0.5) - 1
    lo = (torch.floor(boxes_xyxy_grid[:, :2] - 0.5) + 1).clamp(min=0).long()  # (n, 2) first gi, gj
    hi = (torch.ceil(boxes_xyxy_grid[:, 2:] - 0.5) - 1).long()  # (n, 2) last gi, gj
    hi[:, 0].clamp_(max=nx - 1)
    hi[:, 1].clamp_(max=ny - 1)
    return cells_in_ranges(lo, hi)


@torch.no_grad()
def cells_in_ranges(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every cell of n inclusive column/row ranges: lo, hi (LongTensor[n, 2], (gi, gj)) -> obj, gj, gi.

    An empty range (hi < lo on either axis) gives no cell; cells are ordered by range, then row,
    then column.
    """
    span = (hi - lo + 1).clamp(min=0)  # (n, 2) columns, rows
    count = span[:, 0] * span[:, 1]  # (n,)
    obj = torch.repeat_interleave(torch.arange(len(count), device=lo.device), count)  # (k,)
    start = torch.cumsum(count, 0) - count
    # per object (start, columns, first column, first row), gathered once; index_select and float
    # division (exact below 2^24 cells per object) are several times faster than tensor[idx] and
    # int64 // % on the CPU
    per = torch.stack((start, span[:, 0], lo[:, 0], lo[:, 1]), 1).index_select(0, obj)  # (k, 4)
    k = torch.arange(len(obj), device=lo.device) - per[:, 0]  # index of the cell inside its range
    row = ((k.float() + 0.5) / per[:, 1].float()).floor_().long()
    return obj, per[:, 3] + row, per[:, 2] + k - row * per[:, 1]


def gaussian_centre_prior(offset_grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-dx^2 / (2 sigma^2)) * exp(-dy^2 / (2 sigma^2))`` of (cell centre - object centre).

    Args:
        offset_grid (Tensor[k, 2]): the offset in grid units, i.e. in units of the level's stride
            (DW's ``CenterPrior`` with mean 0 and the same sigma on both axes).

    Returns:
        Tensor[k].
    """
    return torch.exp(-(offset_grid ** 2).sum(-1) / (2 * sigma ** 2))


@torch.no_grad()
def centre_candidates(targets: torch.Tensor, anchors_grid: torch.Tensor,
                      grid_shapes: list[tuple[int, int]]) -> list[LevelCandidates]:
    """Every (object, anchor, cell) whose cell centre lies strictly inside the object, per level.

    Args:
        targets (Tensor[nt, 6]): ``[image, class, x, y, w, h]``, xywh normalised 0..1.
        anchors_grid (Tensor[nl, na, 2]): anchor w, h in grid units of each level.
        grid_shapes: ``(ny, nx)`` of each level.

    Returns:
        one :class:`LevelCandidates` per level, ordered by object, then cell (raster order), then
        anchor; ``box_xywh_cell`` is in the cell frame, so the cell centre's offset from the object's
        centre is ``0.5 - box_xywh_cell[:, :2]``.
    """
    targets = targets.float()
    device = targets.device
    anchors = anchors_grid.to(device=device, dtype=torch.float32)
    image_cls = targets[:, :2].long()  # (nt, 2)
    na = anchors.shape[1]
    out = []
    for i, (ny, nx) in enumerate(grid_shapes):
        box = targets[:, 2:6] * targets.new_tensor([nx, ny, nx, ny])  # (nt, 4) xywh grid units
        obj, gj, gi = cells_inside_boxes(xywh2xyxy(box), (ny, nx))  # (k,) each
        cell_box = cell_frame(box.index_select(0, obj), gi, gj)
        ic = image_cls.index_select(0, obj)
        # each cell's na anchors side by side: (k * na,) rows (expand + reshape, no index ops)
        t, gj, gi, image, cls = (v[:, None].expand(-1, na).reshape(-1) for v in (obj, gj, gi, ic[:, 0], ic[:, 1]))
        out.append(LevelCandidates(image=image, anchor=torch.arange(na, device=device).repeat(len(obj)), gj=gj,
                                   gi=gi, target=t, cls=cls, box_xywh_cell=cell_box[:, None].expand(-1, na, 4).reshape(-1, 4),
                                   anchor_wh=anchors[i].repeat(len(obj), 1)))
    return out


@dataclasses.dataclass(frozen=True)
class CentrePriorHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"dw_sigma": POSITIVE}

    dw_sigma: float = 1.11  # Gaussian centre prior sigma, in strides (DW's official 1.11)


class CentrePriorRule(AssignRule):
    """``assigner: dw``: DW's candidates, every anchor of every cell whose centre lies inside the object
    (:func:`centre_candidates`), weighted by the Gaussian centre prior of the cell (``weight``).

    The prediction-dependent part of DW's weighting (class-localisation consistency, negative
    importance) is the ``dw`` loss's own: it re-weighs these candidates. A loss of hard positives
    (``yolov5``) takes every candidate as a positive and does not read the prior.
    """

    name = "dw"
    heads = ("anchor",)
    Hyp = CentrePriorHyp
    row_kind = WEIGHTED_CANDIDATE_ROW

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: object, targets: Targets) -> AssignResult:
        levels = centre_candidates(targets.normalised, priors.anchors_grid, priors.grid_shapes)
        for m in levels:
            m.weight = gaussian_centre_prior(m.box_xywh_cell[:, :2] - 0.5, self.hyp.dw_sigma)
        return AssignResult(levels, len(targets), row_kind=self.row_kind)
