"""Strategy ``ota``: YOLOv7's ComputeLossOTA (find_3_positive + SimOTA), batched over the whole batch.

priors -> assign (no grad) -> losses:

1. Candidates: YOLOv5's rule (:func:`utils.assign.yolo_candidates.yolo_candidates`, YOLOv7's
   ``find_3_positive``): anchors within ``anchor_t`` w/h ratio, own cell plus 2 nearest neighbours.
2. Per image, every candidate row of that image is a column of a matching matrix (duplicated cells
   stay separate columns, as in YOLOv7) and every target of the image a row; all images' rows are
   stacked into one matrix whose columns are padded to the widest image. The candidate's
   prediction is decoded to pixels; cost = class BCE of ``sqrt(sigmoid(cls) * sigmoid(obj))``
   against the target's one-hot + ``ota_iou_weight * -log(IoU + 1e-8)``; SimOTA
   (:func:`utils.assign.simota.simota_match`) keeps each target's dynamic-k cheapest columns. A
   column may go to a target other than the one that proposed it; its row keeps the column's own
   level, anchor and cell, and takes the matched target's class and box (xy relative to the cell).
3. Losses: YOLOv5's :meth:`ComputeLoss.losses` on the matched rows (CIoU box, objectness
   with the IoU as target, class BCE, level balance 4.0/1.0/0.4).

Differences from YOLOv7's code, on purpose:
- ``items`` holds ``(box, obj, cls)`` (``names``), like ``yolov5``; YOLOv7 appends the total.
- Target boxes are scaled to pixels by the image width for x and the height for y; YOLOv7 uses
  ``imgs[i].shape[1]`` (the height) for both, which differs only on rectangular batches.
- Equal-cost columns are taken lowest column first (see :mod:`utils.assign.simota`); YOLOv7 leaves
  that to ``torch.topk``.
- No Python loop over targets, no per-target sync (one sync per batch for the deepest dynamic k);
  the pairwise tensors are built for groups of images of at most ``max_pair_elems`` (targets x
  columns) elements (one group unless that is large), and the class cost never materialises a
  (targets x columns x classes) tensor: a (columns x classes) table holds
  ``sum_c BCE(y_c, 0) + BCE(y_t, 1) - BCE(y_t, 0)`` (:func:`utils.assign.simota.class_cost_table`),
  laid out per image as (class, column) rows, so a target's costs are one row copy. All matching
  maths runs in float32 under autocast.
- Saturated logits (``sigmoid`` = 1.0 in float32) give a large finite class cost; YOLOv7's
  ``log(y / (1 - y))`` round trip gives inf/NaN there.
"""
from __future__ import annotations

import dataclasses

import torch

from utils.assign.simota import class_cost_table, row_iou, simota_match, simota_match_rows, slots_in_groups
from utils.assign.result import AssignResult, LevelCandidates
from models.geometry import cell_frame
from utils.boxes import xywh2xyxy
from utils.loss.yolov5 import ComputeLoss, YOLOv5Hyp


@dataclasses.dataclass(frozen=True)
class OTAHyp(YOLOv5Hyp):
    ota_topk: int = 10  # IoUs summed for a target's dynamic k
    ota_iou_weight: float = 3.0  # weight of -log(IoU) against the class cost

    def __post_init__(self):
        if self.ota_topk < 1:
            raise ValueError(f"hyp key 'ota_topk' must be >= 1, got {self.ota_topk}")
        if self.ota_iou_weight < 0:
            raise ValueError(f"hyp key 'ota_iou_weight' must be >= 0, got {self.ota_iou_weight}")


@dataclasses.dataclass
class _Columns:
    """Candidate rows of all levels, sorted by image (then level, then candidate order)."""

    image: torch.Tensor  # (N,) long
    level: torch.Tensor  # (N,) long
    anchor: torch.Tensor  # (N,) long
    cell: torch.Tensor  # (N, 2) long: gi, gj
    anchor_wh: torch.Tensor  # (N, 2) grid units of the column's level
    boxes_xyxy_px: torch.Tensor  # (4, N) decoded predictions: x1, y1, x2, y2 rows
    cls_logits: torch.Tensor  # (N, nc)
    obj_logits: torch.Tensor  # (N,)


class ComputeLossOTA(ComputeLoss):
    """YOLOv7's OTA loss; ``names = ('box', 'obj', 'cls')``; ``assign`` returns matched rows per level."""

    Hyp = OTAHyp
    hyp_file = "hyp.ota.yaml"

    def __init__(self, model, hyp, max_pair_elems: int = 2 ** 21):
        """``max_pair_elems``: memory bound of the (targets, columns) tensors of one group of images, or
        of one chunk of an image's targets when one image alone exceeds it; results do not depend on it."""
        super().__init__(model, hyp)
        self.max_pair_elems = max_pair_elems

    @torch.no_grad()
    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor, imgs: torch.Tensor) -> AssignResult:
        """The rows SimOTA keeps on every level, ordered by image, then candidate order."""
        cands = super().assign(preds, targets, imgs)
        if cands.num_rows == 0:
            return cands
        targets = targets.float()
        bs = preds[0].shape[0]
        cols = self._columns(preds, cands.levels)
        matched_target, fg = self._match(cols, targets, bs, imgs.shape[-2:])
        return AssignResult(self._matched_rows(cols, targets, matched_target, fg, preds), targets.shape[0])

    def _columns(self, preds: list[torch.Tensor], cands: list[LevelCandidates]) -> _Columns:
        """Every candidate's prediction decoded to pixels (YOLOv5 v6 decode), all levels at once."""
        dev = cands[0].image.device
        ps, fields = [], []
        for i, (pi, c) in enumerate(zip(preds, cands)):
            ps.append(pi.detach().reshape(-1, pi.shape[-1]).index_select(0, c.flat_rows(pi)).float())
            fields.append((c.image, torch.full_like(c.image, i), c.anchor, torch.stack((c.gi, c.gj), 1), c.anchor_wh))
        image, level, anchor, cell, anchor_wh = (torch.cat(f) for f in zip(*fields))
        order = torch.sort(image, stable=True).indices
        image, level, anchor, cell, anchor_wh = (f[order] for f in (image, level, anchor, cell, anchor_wh))
        ps = torch.cat(ps)[order]
        stride = self.stride.to(device=dev, dtype=torch.float32)[level, None]  # (N, 1)
        boxes = xywh2xyxy(self.box_coder.decode(ps[:, :4], anchor_wh * stride, cell, stride)).T  # (4, N) px
        return _Columns(image, level, anchor, cell, anchor_wh, boxes, ps[:, 5:], ps[:, 4])

    def _match(self, cols: _Columns, targets: torch.Tensor, bs: int,
               img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """SimOTA per image: one row per target against its image's columns, padded to the widest image.

        Returns, per column (in ``cols`` order): the index of its matched target in ``targets``
        and whether it is a positive.
        """
        dev = targets.device
        h = self.hyp
        col_slot, col_counts = slots_in_groups(cols.image, bs)
        n_c, nc = int(col_counts.max()), cols.cls_logits.shape[1]
        col_valid = torch.arange(n_c, device=dev) < col_counts[:, None]  # (B, C)
        # per image, padded column slots: boxes far outside the image (IoU 0) and +inf class cost,
        # laid out so that a target's row of either is one contiguous copy
        c_boxes = torch.tensor([[-2e4], [-2e4], [-1e4], [-1e4]], device=dev).repeat(bs, 1, n_c)
        c_boxes[cols.image, :, col_slot] = cols.boxes_xyxy_px.T  # (B, 4, C)
        c_cost = torch.full((bs, nc, n_c), float("inf"), device=dev)
        c_cost[cols.image, :, col_slot] = class_cost_table(cols.cls_logits, cols.obj_logits)  # (B, nc, C)
        c_cost = c_cost.view(bs * nc, n_c)

        t_order = torch.sort(targets[:, 0].long(), stable=True).indices  # rows of an image contiguous
        t_image = targets[t_order, 0].long()
        height, width = img_hw
        gain = torch.tensor([width, height, width, height], device=dev, dtype=torch.float32)
        t_boxes = xywh2xyxy(targets[t_order, 2:6] * gain)  # (n, 4) px
        t_cost_row = t_image * nc + targets[t_order, 1].long()  # row of c_cost

        def pairs(r0: int, r1: int) -> tuple[torch.Tensor, torch.Tensor]:
            """(cost, iou) of target rows [r0, r1) against their images' columns, each (r1 - r0, C)."""
            iou = row_iou(t_boxes[r0:r1], c_boxes.index_select(0, t_image[r0:r1]))
            cost = c_cost.index_select(0, t_cost_row[r0:r1])  # class cost of each pair
            return cost.add_(iou.add(1e-8).log_(), alpha=-h.ota_iou_weight), iou

        matched = torch.zeros((bs, n_c), dtype=torch.long, device=dev)  # row of t_order
        fg = torch.zeros((bs, n_c), dtype=torch.bool, device=dev)
        for i0, i1, r0, r1 in self._image_groups(torch.bincount(t_image, minlength=bs), n_c):
            if (r1 - r0) * n_c <= self.max_pair_elems or i1 - i0 > 1:
                m, f = simota_match(*pairs(r0, r1), t_image[r0:r1] - i0, col_valid[i0:i1], h.ota_topk)
            else:  # one image too crowded for one matrix: its target rows in chunks
                step = max(1, self.max_pair_elems // n_c)
                chunks = (pairs(q, min(q + step, r1)) for q in range(r0, r1, step))
                m, f = simota_match_rows(chunks, col_valid[i0], h.ota_topk)
            # row 0 where nothing matched: a group of images without targets starts at r0 = n
            matched[i0:i1], fg[i0:i1] = (m + r0).masked_fill_(~f, 0), f
        matched_target = t_order[matched]  # (B, C)
        return matched_target[cols.image, col_slot], fg[cols.image, col_slot]

    def _image_groups(self, rows_per_image: torch.Tensor, n_c: int):
        """Consecutive images ``[i0, i1)`` and their target rows ``[r0, r1)`` whose (rows x columns)
        tensors stay within ``max_pair_elems`` (one image at least)."""
        counts = rows_per_image.tolist()
        i0 = r0 = 0
        while i0 < len(counts):
            i1, r1 = i0 + 1, r0 + counts[i0]
            while i1 < len(counts) and (r1 + counts[i1]) * n_c <= self.max_pair_elems:
                r1 += counts[i1]
                i1 += 1
            yield i0, i1, r0, r1
            i0, r0 = i1, r1

    def _matched_rows(self, cols: _Columns, targets: torch.Tensor,
                      matched_target: torch.Tensor, fg: torch.Tensor,
                      preds: list[torch.Tensor]) -> list[LevelCandidates]:
        """Each level's positive rows with the matched target's class and grid-unit box."""
        pos = fg.nonzero()[:, 0]
        pos = pos[torch.sort(cols.level[pos], stable=True).indices]  # by level, then image and candidate order
        level, cell, tgt = cols.level[pos], cols.cell[pos], matched_target[pos]
        t = targets[tgt]
        grid_wh = torch.tensor([[p.shape[3], p.shape[2]] for p in preds], device=t.device, dtype=t.dtype)
        box = cell_frame(t[:, 2:6] * grid_wh[level].repeat(1, 2), cell[:, 0], cell[:, 1])
        split = torch.bincount(level, minlength=len(preds)).tolist()
        fields = (cols.image[pos], cols.anchor[pos], cell[:, 1], cell[:, 0], tgt, t[:, 1].long(), box,
                  cols.anchor_wh[pos])
        return [LevelCandidates(*f) for f in zip(*(x.split(split) for x in fields))]
