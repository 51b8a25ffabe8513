"""Strategy ``gfl``: Generalized Focal Loss (Li et al., NeurIPS 2020) on the ``dfl`` head.

priors -> assign -> losses:

* priors: one point per grid cell, centre ``(g + 0.5) * stride``, and the box coder (DFL expectation,
  distances from the centre): the head's own (models/geometry.py);
* assign: ATSS (:func:`utils.assign.atss.atss_assign`: top-9 nearest cells per level, IoU of a
  virtual ``8 * stride`` box, threshold mean + std, centre inside the object); ``assigner: tal`` swaps
  in the task-aligned rule (:mod:`utils.assign.tal`), whose soft targets this loss does not read (QFL's
  target stays the IoU);
* losses, as GFocal's ``gfl_head.py`` / mmdetection's ``GFLHead``:
    - ``qfl``: Quality Focal Loss over every cell and class; the soft target at a positive is the
      IoU of its decoded (detached) box with its object, 0 elsewhere; summed and divided by the
      number of positives (each image counted as at least 1);
    - ``box``: 1 - GIoU of the decoded box, weighted by the positive's quality (max class sigmoid,
      no gradient), divided by the sum of those weights (at least 1);
    - ``dfl``: Distribution Focal Loss on the two bins around each side's distance (target in
      strides, clamped to [0, reg_max - 0.1] as GFocal / mmdetection's ``bbox2distance``), mean of
      the four sides, same weights and normaliser as ``box``.

Gains: ``qfl``, ``giou`` and ``dfl`` multiply the three terms (GFL: 1.0, 2.0, 0.25); the total is
multiplied by the batch size (YOLOv5 convention). hyp/hyp.gfl.yaml explains the values it uses.
Boxes are compared in grid units of their level (GFL divides by the stride too), so IoUs and DFL
targets do not depend on the level.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from utils.assign.result import AssignResult
from utils.boxes import bbox_iou
from utils.loss.base import NON_NEGATIVE
from utils.loss.dfl import DFLHyp, DFLLossStrategy

DFL_TARGET_EPS = 0.1  # DFL targets stay below reg_max by this much (bbox2distance's eps)


@dataclasses.dataclass(frozen=True)
class GFLHyp(DFLHyp):
    RANGES: ClassVar[dict[str, str]] = dict.fromkeys(("qfl", "qfl_beta", "giou", "dfl"), NON_NEGATIVE)

    qfl: float = 1.0  # Quality Focal Loss gain
    qfl_beta: float = 2.0  # QFL focusing exponent
    giou: float = 2.0  # GIoU box loss gain
    dfl: float = 0.25  # Distribution Focal Loss gain
    assigner: str = "atss"  # GFL's own rule


def qfl_positive_correction(logits: torch.Tensor, scores: torch.Tensor, beta: float) -> torch.Tensor:
    """Sum of (QFL towards ``scores`` - QFL towards 0) for the positive entries ``logits`` (n,)."""
    prob = logits.sigmoid()
    pos = F.binary_cross_entropy_with_logits(logits, scores, reduction="none") * (scores - prob).abs().pow(beta)
    return (pos - F.softplus(logits) * prob.pow(beta)).sum()


class ComputeLossGFL(DFLLossStrategy):
    """GFL loss on the ``dfl`` head; ``names = ('qfl', 'box', 'dfl')``.

    preds: per level ``(bs, 1, ny, nx, 4 * (reg_max + 1) + nc)`` raw logits (see
    :class:`models.dfl_head.DFLDetect`).
    """

    name = "gfl"
    names = ("qfl", "box", "dfl")
    Hyp = GFLHyp
    hyp_file = "hyp.gfl.yaml"

    def _positive_losses(self, p: torch.Tensor, cls: torch.Tensor,
                         box_xywh_cell: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """QFL correction, weighted GIoU and DFL sums and the weight sum of the positives.

        p (n, no) float logits at the positive cells; cls (n,) their classes; box_xywh_cell (n, 4) their
        objects' xywh in grid units relative to the cell corner (levels may be mixed).
        """
        h = self.hyp
        dist, cls_logits = p[:, :self.n_dist], p[:, self.n_dist:]
        pred_xyxy, target_xyxy = self.boxes(dist, box_xywh_cell)  # (n, 4) each, grid units, cell corner origin
        with torch.no_grad():
            score = bbox_iou(pred_xyxy, target_xyxy, xywh=False).squeeze(1).clamp(0)
            weight = cls_logits.sigmoid().max(1).values  # (n,)
        x = cls_logits.gather(1, cls[:, None]).squeeze(1)
        qfl = qfl_positive_correction(x, score, h.qfl_beta)
        giou = bbox_iou(pred_xyxy, target_xyxy, xywh=False, GIoU=True).squeeze(1)
        box = ((1.0 - giou) * weight).sum()
        dfl = (self.dfl_per_row(dist, target_xyxy, DFL_TARGET_EPS) * weight).sum()
        return qfl, box, dfl, weight.sum()

    def losses(self, preds: list[torch.Tensor], matches: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """The three GFL losses given the positives of each level -> (loss * bs, items)."""
        h = self.hyp
        dev = preds[0].device
        bs = preds[0].shape[0]
        lbox = ldfl = wsum = torch.zeros((), device=dev)
        pos_per_image = torch.zeros(bs, device=dev)
        lqfl, rows = self.background_and_rows(preds, matches, h.qfl_beta)  # rows (n, no)
        pos = self.concat_levels(matches)
        if len(pos):  # the positive terms do not depend on the level (grid units): one pass for all
            q, lbox, ldfl, wsum = self._positive_losses(rows.float(), pos.cls, pos.box_xywh_cell)
            lqfl = lqfl + q
            pos_per_image += torch.bincount(pos.image, minlength=bs).to(pos_per_image.dtype)
        lqfl = lqfl / pos_per_image.clamp(min=1).sum() * h.qfl
        wsum = wsum.clamp(min=1)
        lbox = lbox / wsum * h.giou
        ldfl = ldfl / wsum * h.dfl
        items = torch.stack((lqfl, lbox, ldfl)).detach()
        return (lqfl + lbox + ldfl) * bs, items
