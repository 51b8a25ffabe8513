"""Strategy ``tal``: YOLOv8's training objective (task-aligned assignment, BCE + CIoU + DFL) on the ``dfl`` head.

priors -> assign -> losses:

* priors: one point per grid cell, centre ``(g + 0.5) * stride``, and the head's box coder (DFL
  expectation, distances from the centre), as for ``gfl`` (:mod:`utils.loss.dfl`);
* assign: task-aligned assignment (:func:`utils.assign.tal.tal_assign`: cells whose centre is inside
  the object, t = s^0.5 * CIoU^6, top 10 per object, conflicts to the larger CIoU, soft target
  t * max(u) / max(t) in each row's ``weight``); ``assigner: atss`` swaps in ATSS, whose rows carry no
  target, and then the target is the IoU of the decoded (detached) box with its object (YOLOv6's ATSS);
* losses, as ultralytics' ``v8DetectionLoss``, all divided by ``max(sum of targets, 1)`` over the batch:
    - ``cls``: BCE with logits over every cell and class against the soft targets (0 off the positives);
    - ``box``: 1 - CIoU of the decoded box in grid units, weighted by the target;
    - ``dfl``: Distribution Focal Loss of the four sides (targets clamped to [0, reg_max - 0.01]),
      mean over the sides, weighted by the target.

Gains: ``box`` 7.5, ``cls`` 0.5, ``dfl`` 1.5 (ultralytics ``cfg/default.yaml``); the total is multiplied
by the batch size, as YOLOv8 and YOLOv5 do. Not rescaled by levels, image size or classes (YOLOv8 does
not either). Where the project's dfl head differs from YOLOv8's: 17 bins per side (``reg_max`` 16 means
bins 0..16 here; YOLOv8's ``reg_max=16`` is 16 bins, 0..15), one 1x1 convolution per level on the YOLOv5
neck instead of two 3x3-conv branches, and GFL's initialisation (class prior 0.01 for every level,
distance bias 0) instead of YOLOv8's (class bias log(5 / nc / (640 / stride)^2), box bias 1.0).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from utils.assign.result import AssignResult
from utils.boxes import bbox_iou
from utils.loss.base import NON_NEGATIVE
from utils.loss.dfl import DFLHyp, DFLLossStrategy

DFL_TARGET_EPS = 0.01  # DFL targets stay below reg_max by this much (YOLOv8's bbox2dist)


@dataclasses.dataclass(frozen=True)
class TALHyp(DFLHyp):
    RANGES: ClassVar[dict[str, str]] = dict.fromkeys(("box", "cls", "dfl"), NON_NEGATIVE)

    box: float = 7.5  # CIoU box loss gain (YOLOv8 7.5)
    cls: float = 0.5  # class BCE gain (YOLOv8 0.5)
    dfl: float = 1.5  # Distribution Focal Loss gain (YOLOv8 1.5)
    assigner: str = "tal"  # YOLOv8's own rule


class ComputeLossTAL(DFLLossStrategy):
    """YOLOv8's loss on the ``dfl`` head; ``names = ('box', 'cls', 'dfl')``.

    preds: per level ``(bs, 1, ny, nx, 4 * (reg_max + 1) + nc)`` raw logits.
    """

    name = "tal"
    names = ("box", "cls", "dfl")
    Hyp = TALHyp
    hyp_file = "hyp.tal.yaml"

    def _targets(self, pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor,
                 weight: torch.Tensor | None) -> torch.Tensor:
        """Soft target (n,) of each positive: the assigner's, else the IoU of the detached decoded box."""
        if weight is not None:
            return weight.float()
        with torch.no_grad():
            return bbox_iou(pred_xyxy, target_xyxy, xywh=False).squeeze(1).clamp(0)

    def losses(self, preds: list[torch.Tensor], matches: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE, CIoU and DFL given the positives of each level -> (loss * bs, items)."""
        h = self.hyp
        bs = preds[0].shape[0]
        # BCE(x, y) = softplus(x) - x * y: the background term over every cell and class (fused, with the
        # rows' gathering), then the positives' -x * y, so no dense (cells x classes) target is built
        lcls, rows = self.background_and_rows(preds, matches, 0.0)
        rows = rows.float()  # (n, no)
        lbox = ldfl = torch.zeros((), device=preds[0].device)
        pos = self.concat_levels(matches)
        if len(pos):
            dist = rows[:, :self.n_dist]
            pred_xyxy, target_xyxy = self.boxes(dist, pos.box_xywh_cell)  # (n, 4) each, grid units
            target = self._targets(pred_xyxy, target_xyxy, pos.weight)  # (n,)
            lcls = lcls - (rows[:, self.n_dist:].gather(1, pos.cls[:, None]).squeeze(1) * target).sum()
            ciou = bbox_iou(pred_xyxy, target_xyxy, xywh=False, CIoU=True).squeeze(1)
            lbox = ((1.0 - ciou) * target).sum()
            ldfl = (self.dfl_per_row(dist, target_xyxy, DFL_TARGET_EPS) * target).sum()
            norm = target.sum().clamp(min=1)
        else:
            norm = torch.ones((), device=preds[0].device)
        lbox, lcls, ldfl = lbox / norm * h.box, lcls / norm * h.cls, ldfl / norm * h.dfl
        items = torch.stack((lbox, lcls, ldfl)).detach()
        return (lbox + lcls + ldfl) * bs, items
