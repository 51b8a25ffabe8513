"""SSD's MultiBox matching (Liu et al. 2016): every object keeps its best anchor, then IoU >= threshold.

Two rules, applied to the IoU matrix of n objects against m anchor boxes:

1. every object takes the anchor it overlaps most, however low that IoU is, so no object is left
   without an anchor; when two objects share the same best anchor the later object (higher row)
   wins, as in ssd.pytorch's ``match`` loop and mmdetection's ``MaxIoUAssigner``;
2. every other anchor whose best IoU with some object is >= ``iou_thr`` takes that object (ties
   between objects: the lower row); all remaining anchors are background.

Rule 1 overrides rule 2, and an anchor serves at most one object.

Worked example: anchors A0, A1, A2; object g0 overlaps them 0.30 / 0.10 / 0.00, object g1 overlaps
them 0.60 / 0.70 / 0.55, threshold 0.5. Rule 2 gives A0 -> g1 (0.60 >= 0.5 and g1 > g0 there),
A1 -> g1, A2 -> g1. Rule 1 gives g0 its best anchor A0 (IoU 0.30, below the threshold) and g1 its
best anchor A1. Result: ``gt_index = [0, 1, 1]``, ``iou = [0.30, 0.70, 0.55]``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from utils.assign.params import FRACTION, POSITIVE, HypParams
from utils.assign.result import AssignResult
from utils.assign.rule import AssignRule, HeadPriors, level_rows
from utils.assign.targets import Targets
from utils.boxes import box_iou, xywh2xyxy


@torch.no_grad()
def match_max_iou(gt_xyxy: torch.Tensor, anchors_xyxy: torch.Tensor,
                  iou_thr: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD matching of one image's objects to its anchor boxes.

    Args:
        gt_xyxy (Tensor[n, 4]): object boxes, x1y1x2y2, any unit shared with the anchors.
        anchors_xyxy (Tensor[m, 4]): anchor boxes, x1y1x2y2.
        iou_thr: rule 2's positive threshold (SSD: 0.5).

    Returns:
        gt_index (LongTensor[m]): the object (row of ``gt_xyxy``) each anchor serves, -1 = background.
        iou (Tensor[m]): for an anchor that serves an object, its IoU with *that* object (a forced
            rule-1 anchor reports its true IoU, which may be below ``iou_thr``); for background,
            its largest IoU over all objects (0 when there are none). ssd.pytorch writes a sentinel
            2 at forced anchors and mmdetection keeps the max over objects even where rule 1 gave
            the anchor a different object; we return the IoU of the pair actually matched because
            that is what an IoU-aware objectness target or a plot of the positives needs, and the
            background values stay mmdetection's ``max_overlaps`` (useful for ignore bands).
    """
    m = anchors_xyxy.shape[0]
    n = gt_xyxy.shape[0]
    device = anchors_xyxy.device
    if n == 0 or m == 0:
        return (torch.full((m,), -1, dtype=torch.long, device=device),
                torch.zeros(m, dtype=anchors_xyxy.dtype, device=device))
    iou = box_iou(gt_xyxy.to(anchors_xyxy.dtype), anchors_xyxy)  # (n, m)
    best_gt_iou, best_gt = iou.max(0)  # (m,) torch returns the first maximum: ties go to the lower row
    gt_index = torch.where(best_gt_iou >= iou_thr, best_gt, torch.full_like(best_gt, -1))
    # Rule 1. scatter_reduce(amax) makes the later object win a shared best anchor deterministically,
    # which a plain indexed assignment with duplicate indices does not guarantee.
    best_anchor = iou.argmax(1)  # (n,) first maximum: ties go to the lower anchor
    forced = torch.full((m,), -1, dtype=torch.long, device=device)
    forced.scatter_reduce_(0, best_anchor, torch.arange(n, device=device), reduce="amax")
    gt_index = torch.where(forced >= 0, forced, gt_index)
    matched_iou = iou.gather(0, gt_index.clamp(min=0)[None])[0]
    return gt_index, torch.where(gt_index >= 0, matched_iou, best_gt_iou)


@torch.no_grad()
def max_iou_assign(gt_xyxy: torch.Tensor, gt_image: torch.Tensor, anchors_xyxy: torch.Tensor, bs: int,
                   iou_thr: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`match_max_iou` for every image of a batch whose images share one set of anchor boxes.

    Args:
        gt_xyxy (Tensor[n, 4]): the objects of the whole batch, x1y1x2y2.
        gt_image (LongTensor[n]): the image of each object.
        anchors_xyxy (Tensor[m, 4]): the anchor boxes of one image.
        bs: images in the batch.
        iou_thr: rule 2's positive threshold.

    Returns:
        anchor (LongTensor[k]), target (LongTensor[k]): every positive (anchor, object row) pair,
        image by image, anchors ascending within an image. An image without objects has none.
        iou (Tensor[bs, m]): :func:`match_max_iou`'s ``iou`` per image (0 in an image without
            objects): at a background anchor its largest IoU with an object of the image, which is
            what an ignore band for negatives is cut from; at a positive, its IoU with that object.
    """
    m = anchors_xyxy.shape[0]
    anchor_idx, target_idx = [], []
    iou = torch.zeros(bs, m, dtype=anchors_xyxy.dtype, device=anchors_xyxy.device)
    for b in range(bs):  # one (n_b, m) IoU matrix per image keeps memory at 640 px bounded
        rows = (gt_image == b).nonzero().squeeze(1)
        if not len(rows):
            continue
        gt_index, iou[b] = match_max_iou(gt_xyxy[rows], anchors_xyxy, iou_thr)
        pos = (gt_index >= 0).nonzero().squeeze(1)
        anchor_idx.append(pos)
        target_idx.append(rows[gt_index[pos]])
    empty = torch.zeros(0, dtype=torch.long, device=anchors_xyxy.device)
    return ((torch.cat(anchor_idx) if anchor_idx else empty), (torch.cat(target_idx) if target_idx else empty),
            iou)


@dataclasses.dataclass(frozen=True)
class MaxIoUHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"ssd_iou_thr": FRACTION, "max_iou_scale": POSITIVE}

    ssd_iou_thr: float = 0.5  # a prior is positive when its IoU with some object is >= this (SSD 0.5)
    max_iou_scale: float = 8.0  # dfl head: side of the square prior box of a cell, in strides (as ATSS's)


class MaxIoURule(AssignRule):
    """``assigner: max_iou``: SSD's MultiBox matching of the prior boxes, per image.

    Prior boxes: the anchor boxes (cell centre + anchor w, h) on the anchor head; a square of
    ``max_iou_scale`` strides around each cell centre on the dfl head. ``extras['prior_iou']``
    (Tensor[bs, N], prior order) is :func:`max_iou_assign`'s ``iou``, from which ``ssd`` cuts its
    ignore band.
    """

    name = "max_iou"
    Hyp = MaxIoUHyp

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: object, targets: Targets) -> AssignResult:
        device = targets.normalised.device
        boxes = priors.anchor_boxes(device)
        xyxy = boxes.xyxy_px
        if priors.kind != "anchor":
            side = boxes.stride_px[:, None] * self.hyp.max_iou_scale
            xyxy = xywh2xyxy(torch.cat((boxes.xywh_px[:, :2], side, side), 1))
        prior, obj, iou = max_iou_assign(targets.xyxy_px, targets.image, xyxy, targets.bs, self.hyp.ssd_iou_thr)
        order = torch.sort(boxes.level[prior], stable=True).indices  # by level, then image and prior
        scale = None if priors.kind == "anchor" else self.hyp.max_iou_scale
        return AssignResult(level_rows(obj[order], prior[order], targets, priors, anchor_wh=scale), len(targets),
                            extras={"prior_iou": iou})
