"""YOLOv5's candidate rule (YOLOv7 calls it ``find_3_positive``), shared by ``yolov5`` and ``ota``.

For every level, a target is offered to each anchor whose width/height ratio to it is within
``anchor_t`` (``max(r, 1/r) < anchor_t`` on both sides), in the cell holding its centre and in the
two neighbour cells nearest to the centre (left/right and up/down, picked by whether the centre
sits in the near half of its cell). With the YOLOv5 decode ``xy = 2*sigmoid - 0.5`` a prediction
can reach centres up to 1.5 cells away, so those neighbours can regress the box.

Worked example, one level with a 4x4 grid and one anchor of 1x1 cells: a target at grid
(x=1.3, y=2.8) with size 1x1 is offered to cell (gx=1, gy=2) — its own —, to (0, 2) because
x % 1 = 0.3 < 0.5 (near the left edge), and to (1, 3) because y is in the lower half
(1 - 0.8 < 0.5). Neighbours are only offered inside the grid (``x > 1`` and ``nx - x > 1``).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from models.geometry import cell_frame
from utils.assign.params import POSITIVE, HypParams
from utils.assign.result import AssignResult, LevelCandidates
from utils.assign.rule import AssignRule, HeadPriors
from utils.assign.targets import Targets

# Offsets of the own cell and the 4 neighbour directions, in cells; multiplied by the 0.5 rule.
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)


@torch.no_grad()
def yolo_candidates(targets: torch.Tensor, anchors_grid: torch.Tensor, grid_shapes: list[tuple[int, int]],
                    anchor_t: float = 4.0, offset: float = 0.5) -> list[LevelCandidates]:
    """YOLOv5 v7.0 ``build_targets`` candidate rows for every level.

    Args:
        targets (Tensor[nt, 6]): ``[image, class, x, y, w, h]``, xywh normalised 0..1.
        anchors_grid (Tensor[nl, na, 2]): anchor w, h in grid units of each level.
        grid_shapes: ``(ny, nx)`` of each level.
        anchor_t: the w/h ratio limit.
        offset: the neighbour rule's 0.5; 0 keeps only the own cell.

    Returns:
        one :class:`LevelCandidates` per level, ordered as YOLOv5 orders them (own cells first,
        then the right, down, left and up neighbours, each by anchor then target), so results and
        duplicate-write behaviour match YOLOv5's.
    """
    device = targets.device
    nl, na = anchors_grid.shape[:2]
    nt = targets.shape[0]
    # (na, nt, 8) = image, class, x, y, w, h, anchor, target row
    ai = torch.arange(na, device=device, dtype=targets.dtype).view(na, 1).expand(na, nt)
    ti = torch.arange(nt, device=device, dtype=targets.dtype).view(1, nt).expand(na, nt)
    rows = torch.cat((targets[None].expand(na, nt, 6), ai[..., None], ti[..., None]), 2)
    off = _NEIGHBOURS.to(device=device, dtype=targets.dtype) * offset
    out = []
    for level in range(nl):
        ny, nx = grid_shapes[level]
        gain = torch.tensor([1, 1, nx, ny, nx, ny, 1, 1], device=device, dtype=targets.dtype)
        t = rows * gain  # (na, nt, 8), xywh in grid units
        anchors = anchors_grid[level]
        if nt:
            r = t[..., 4:6] / anchors[:, None]
            t = t[torch.max(r, 1 / r).max(2)[0] < anchor_t]  # (n, 8)
            gxy = t[:, 2:4]
            gxi = torch.tensor([nx, ny], device=device, dtype=targets.dtype) - gxy
            j, k = ((gxy % 1 < offset) & (gxy > 1)).T
            l, m = ((gxi % 1 < offset) & (gxi > 1)).T
            keep = torch.stack((torch.ones_like(j), j, k, l, m))  # (5, n)
            t = t.repeat((5, 1, 1))[keep]
            offsets = (torch.zeros_like(gxy)[None] + off[:, None])[keep]
        else:
            t = rows[0, :0]
            offsets = torch.zeros((0, 2), device=device, dtype=targets.dtype)
        gxy = t[:, 2:4]
        gij = (gxy - offsets).long()
        # YOLOv5 clamps the cell in place before taking xy relative to it (only a centre exactly
        # on the far border is affected).
        gij[:, 0].clamp_(0, nx - 1)
        gij[:, 1].clamp_(0, ny - 1)
        a = t[:, 6].long()
        out.append(LevelCandidates(
            image=t[:, 0].long(), anchor=a, gj=gij[:, 1], gi=gij[:, 0], target=t[:, 7].long(),
            cls=t[:, 1].long(), box_xywh_cell=cell_frame(t[:, 2:6], gij[:, 0], gij[:, 1]), anchor_wh=anchors[a]))
    return out


@dataclasses.dataclass(frozen=True)
class YOLOv5RuleHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"anchor_t": POSITIVE}

    anchor_t: float = 4.0  # w/h ratio limit between a target and an anchor (YOLOv5 4.0)


class YOLOv5Rule(AssignRule):
    """``assigner: yolov5``: :func:`yolo_candidates`, every candidate a positive (anchor head only)."""

    name = "yolov5"
    heads = ("anchor",)
    Hyp = YOLOv5RuleHyp

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: object, targets: Targets) -> AssignResult:
        anchors = priors.anchors_grid.to(targets.normalised.device)
        return AssignResult(yolo_candidates(targets.normalised, anchors, priors.grid_shapes, self.hyp.anchor_t),
                            len(targets))
