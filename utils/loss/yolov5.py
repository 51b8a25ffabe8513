"""Strategy ``yolov5``: YOLOv5 v7.0's ComputeLoss.

Assignment: the rule the hyp key ``assigner`` names, by default YOLOv5's own
(:func:`utils.assign.yolo_candidates.yolo_candidates`: w/h ratio < ``anchor_t``, own cell plus the two
nearest neighbours); ``simota`` (YOLOv7's ComputeLossOTA is this loss on SimOTA's positives: ``loss:
ota``), ``atss``, ``tal``, ``max_iou`` and ``dw`` (its centre-prior candidates) give other positives on
the same anchor head. The loss consumes hard positives: every row of the rule is a positive, and a
rule's soft weight (``tal``'s aligned target, ``dw``'s centre prior) is not read -- the objectness
target stays YOLOv5's own, the CIoU of the prediction -- so the rule changes *which* anchors train,
never the terms. Losses on the matched rows: CIoU box loss (mean of 1 - CIoU),
class BCE against (label-smoothed) one-hot, skipped when ``nc == 1``; objectness BCE over every
anchor with the detached, clamped CIoU as target at matched rows, levels weighted 4.0/1.0/0.4.
``box``, ``obj`` and ``cls`` are used as given; :meth:`YOLOv5GainScaling.train_hyp` (which train.py
calls before building the loss) scales them per level, image size and class count as YOLOv5's
train.py does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from utils.assign.result import POSITIVE_ROW, WEIGHTED_CANDIDATE_ROW, AssignResult
from utils.boxes import bbox_iou
from utils.loss.base import FRACTION, NON_NEGATIVE, POSITIVE, AnchorLossStrategy, StrategyHyp
from utils.loss.functional import bce_with_logits, smooth_bce_targets


@dataclasses.dataclass(frozen=True)
class YOLOv5Hyp(StrategyHyp):
    RANGES: ClassVar[dict[str, str]] = {"anchor_t": POSITIVE, "label_smoothing": FRACTION,
                                        **dict.fromkeys(("box", "obj", "cls", "cls_pw", "obj_pw", "fl_gamma"), NON_NEGATIVE)}

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    anchor_t: float = 4.0
    fl_gamma: float = 0.0
    label_smoothing: float = 0.0
    assigner: str = "yolov5"  # matching rule (utils/assign): yolov5 | simota | atss | tal | max_iou | dw


def level_balance(nl: int) -> list[float]:
    """YOLOv5's objectness weight per level (P3-P5; P3-P7 for 5 levels)."""
    return {3: [4.0, 1.0, 0.4]}.get(nl, [4.0, 1.0, 0.25, 0.06, 0.02])


class YOLOv5GainScaling:
    """YOLOv5's train.py rule for ``box``, ``obj`` and ``cls`` (3 levels, 80 classes and 640 px are unity):
    ``box * 3 / nl``, ``cls * nc / 80 * 3 / nl``, ``obj * (imgsz / 640)^2 * 3 / nl``; absent keys start
    from the strategy's own defaults. Mixed into the strategies whose gains follow it."""

    @classmethod
    def train_hyp(cls, hyp: dict[str, Any], *, nl: int, nc: int, imgsz: int,
                  label_smoothing: float = 0.0) -> dict[str, Any]:
        out = super().train_hyp(hyp, nl=nl, nc=nc, imgsz=imgsz, label_smoothing=label_smoothing)
        default = cls.Hyp()
        # factors formed first, as YOLOv5's ``hyp['box'] *= 3 / nl``, so unity leaves values bit-exact
        out["box"] = hyp.get("box", default.box) * (3 / nl)
        out["cls"] = hyp.get("cls", default.cls) * (nc / 80 * 3 / nl)
        out["obj"] = hyp.get("obj", default.obj) * ((imgsz / 640) ** 2 * 3 / nl)
        return out


class ComputeLoss(YOLOv5GainScaling, AnchorLossStrategy):
    """YOLOv5 v7.0 loss; ``names = ('box', 'obj', 'cls')``.

    ``ota`` is this class with SimOTA as its rule.
    """

    name = "yolov5"
    consumes = (POSITIVE_ROW, WEIGHTED_CANDIDATE_ROW)  # a weighted candidate is a hard positive here
    names = ("box", "obj", "cls")
    hyp_file = "hyp.scratch.yaml"
    Hyp = YOLOv5Hyp

    def __init__(self, model, hyp):
        super().__init__(model, hyp)
        self.balance = level_balance(self.nl)
        self.cp, self.cn = smooth_bce_targets(self.hyp.label_smoothing)

    def losses(self, preds: list[torch.Tensor], matches: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """YOLOv5's box/obj/cls losses given the matched rows of each level.

        preds: per level ``(bs, na, ny, nx, 5 + nc)`` raw logits.
        """
        h = self.hyp
        dev = preds[0].device
        lbox = torch.zeros(1, device=dev)
        lobj = torch.zeros(1, device=dev)
        lcls = torch.zeros(1, device=dev)
        for i, (pi, m) in enumerate(zip(preds, matches)):
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=dev)  # (bs, na, ny, nx)
            if len(m):
                pbox, _, pcls = pi[m.image, m.anchor, m.gj, m.gi].split((4, 1, self.nc), 1)
                pbox = self.box_coder.decode(pbox, m.anchor_wh)  # (n, 4) xywh, cell frame
                iou = bbox_iou(pbox, m.box_xywh_cell, CIoU=True).squeeze(-1)  # (n,)
                lbox = lbox + (1.0 - iou).mean()
                tobj[m.image, m.anchor, m.gj, m.gi] = iou.detach().clamp(0).type(tobj.dtype)
                if self.nc > 1:
                    t = torch.full_like(pcls, self.cn)
                    t[torch.arange(len(m), device=dev), m.cls] = self.cp
                    lcls = lcls + bce_with_logits(pcls, t, h.cls_pw, h.fl_gamma)
            lobj = lobj + bce_with_logits(pi[..., 4], tobj, h.obj_pw, h.fl_gamma) * self.balance[i]
        lbox = lbox * h.box
        lobj = lobj * h.obj
        lcls = lcls * h.cls
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls).sum() * bs, torch.cat((lbox, lobj, lcls)).detach()
