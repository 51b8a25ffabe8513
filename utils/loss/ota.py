"""Strategy ``ota``: YOLOv7's ComputeLossOTA (find_3_positive + SimOTA), batched over the whole batch.

priors -> assign (no grad) -> losses:

1. Candidates: YOLOv5's rule (:func:`utils.assign.yolo_candidates.yolo_candidates`, YOLOv7's
   ``find_3_positive``): anchors within ``anchor_t`` w/h ratio, own cell plus 2 nearest neighbours.
2. Per image, every candidate row of that image is a column of a matching matrix (duplicated cells
   stay separate columns, as in YOLOv7) and every target of the image a row. The candidate's
   prediction is decoded to pixels; cost = class BCE of ``sqrt(sigmoid(cls) * sigmoid(obj))``
   against the target's one-hot + ``ota_iou_weight * -log(IoU + 1e-8)``; SimOTA
   (:func:`utils.assign.simota.simota_match`) keeps each target's dynamic-k cheapest columns. A
   column may go to a target other than the one that proposed it; its row keeps the column's own
   level, anchor and cell, and takes the matched target's class and box (xy relative to the cell).
3. Losses: YOLOv5's :meth:`ComputeLoss.matched_losses` on the matched rows (CIoU box, objectness
   with the IoU as target, class BCE, level balance 4.0/1.0/0.4).

Differences from YOLOv7's code, on purpose:
- ``items`` holds ``(box, obj, cls)`` (``names``), like ``yolov5``; YOLOv7 appends the total.
- Target boxes are scaled to pixels by the image width for x and the height for y; YOLOv7 uses
  ``imgs[i].shape[1]`` (the height) for both, which differs only on rectangular batches.
- Equal-cost columns are taken lowest column first (see :mod:`utils.assign.simota`); YOLOv7 leaves
  that to ``torch.topk``.
- No Python loop over images or targets, no per-target sync; the pairwise tensors are built for
  groups of images of at most ``max_pair_elems`` (targets x columns) elements, and the class cost
  never materialises a (targets x columns x classes) tensor: a (columns x classes) table holds
  ``sum_c BCE(y_c, 0) + BCE(y_t, 1) - BCE(y_t, 0)`` and each pair gathers one entry
  (:func:`utils.assign.simota.class_cost_table`). All matching maths runs in float32 under autocast.
- Saturated logits (``sigmoid`` = 1.0 in float32) give a large finite class cost; YOLOv7's
  ``log(y / (1 - y))`` round trip gives inf/NaN there.
"""
from __future__ import annotations

import dataclasses

import torch

from utils.assign.simota import class_cost_table, pairwise_iou, simota_match, slots_in_groups
from utils.assign.yolo_candidates import LevelCandidates
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
    row: torch.Tensor  # (N,) long, index into that level's LevelCandidates
    boxes_xyxy_px: torch.Tensor  # (N, 4) decoded predictions
    cls_logits: torch.Tensor  # (N, nc)
    obj_logits: torch.Tensor  # (N,)


class ComputeLossOTA(ComputeLoss):
    """YOLOv7's OTA loss; ``names = ('box', 'obj', 'cls')``; ``assign`` returns matched rows per level."""

    Hyp = OTAHyp

    def __init__(self, model, hyp, max_pair_elems: int = 2 ** 21):
        """``max_pair_elems``: memory bound of the padded (images, targets, columns) tensors of one
        group of images (at least one image per group); results do not depend on it."""
        super().__init__(model, hyp)
        self.max_pair_elems = max_pair_elems

    @torch.no_grad()
    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor,
               imgs: torch.Tensor) -> list[LevelCandidates]:
        """The rows SimOTA keeps on every level, ordered by image, then candidate order."""
        cands = super().assign(preds, targets, imgs)
        if sum(len(c) for c in cands) == 0:
            return cands
        targets = targets.float()
        bs = preds[0].shape[0]
        cols = self._columns(preds, cands)
        matched_target, fg = self._match(cols, targets, bs, imgs.shape[-2:])
        return self._matched_rows(cols, cands, targets, matched_target, fg, preds)

    def _columns(self, preds: list[torch.Tensor], cands: list[LevelCandidates]) -> _Columns:
        """Decode every candidate's prediction to pixels (YOLOv5 v6 decode)."""
        parts = []
        for i, (pi, c) in enumerate(zip(preds, cands)):
            ps = pi[c.image, c.anchor, c.gj, c.gi].detach().float()  # (n, 5 + nc)
            stride = float(self.stride[i])
            grid = torch.stack((c.gi, c.gj), 1)
            pxy = (ps[:, :2].sigmoid() * 2.0 - 0.5 + grid) * stride
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * c.anchor_wh.float() * stride
            level = torch.full_like(c.image, i)
            row = torch.arange(len(c), device=c.image.device)
            parts.append((c.image, level, row, xywh2xyxy(torch.cat((pxy, pwh), 1)), ps[:, 5:], ps[:, 4]))
        fields = [torch.cat(x) for x in zip(*parts)]
        order = torch.sort(fields[0], stable=True).indices
        return _Columns(*(f[order] for f in fields))

    def _match(self, cols: _Columns, targets: torch.Tensor, bs: int,
               img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """SimOTA per image on padded (image, target slot, column slot) tensors.

        Returns, per column (in ``cols`` order): the index of its matched target in ``targets``
        and whether it is a positive.
        """
        dev = targets.device
        h = self.hyp
        col_slot, col_counts = slots_in_groups(cols.image, bs)
        t_order = torch.sort(targets[:, 0].long(), stable=True).indices
        t_image = targets[t_order, 0].long()
        t_slot, t_counts = slots_in_groups(t_image, bs)
        n_g, n_c = int(t_counts.max()), int(col_counts.max())

        def padded(values: torch.Tensor, image: torch.Tensor, slot: torch.Tensor, width: int, fill=0):
            out = values.new_full((bs, width, *values.shape[1:]), fill)
            out[image, slot] = values
            return out

        height, width = img_hw
        gain = torch.tensor([width, height, width, height], device=dev, dtype=torch.float32)
        # padded slots hold disjoint dummy boxes far outside the image, so their IoUs are 0, not 0/0
        t_boxes = padded(xywh2xyxy(targets[t_order, 2:6] * gain), t_image, t_slot, n_g, -4e4)  # (B, G, 4) px
        t_boxes[..., 2:].masked_fill_(t_boxes[..., 2:] == -4e4, -3e4)
        c_boxes = padded(cols.boxes_xyxy_px, cols.image, col_slot, n_c, -2e4)  # (B, C, 4) px
        c_boxes[..., 2:].masked_fill_(c_boxes[..., 2:] == -2e4, -1e4)
        t_cls = padded(targets[t_order, 1].long(), t_image, t_slot, n_g)  # (B, G)
        t_index = padded(t_order, t_image, t_slot, n_g)  # (B, G) row in targets
        gt_valid = padded(torch.ones_like(t_image, dtype=torch.bool), t_image, t_slot, n_g, False)
        n_cols = len(cols.image)
        # padded column slots point at the table's +inf row
        c_index = padded(torch.arange(n_cols, device=dev), cols.image, col_slot, n_c, n_cols)  # (B, C)
        col_valid = c_index < n_cols
        table = class_cost_table(cols.cls_logits, cols.obj_logits)  # (N + 1, nc)

        matched = torch.zeros((bs, n_c), dtype=torch.long, device=dev)
        fg = torch.zeros((bs, n_c), dtype=torch.bool, device=dev)
        step = max(1, self.max_pair_elems // max(1, n_g * n_c))
        for s in range(0, bs, step):
            sl = slice(s, s + step)
            iou = pairwise_iou(t_boxes[sl], c_boxes[sl])  # (b, G, C)
            by_class = table[c_index[sl]].transpose(1, 2)  # (b, nc, C): each column's cost per class
            cost = by_class.gather(1, t_cls[sl][:, :, None].expand(-1, -1, n_c))  # (b, G, C)
            cost.add_(torch.log(iou + 1e-8), alpha=-h.ota_iou_weight)
            matched[sl], fg[sl] = simota_match(cost, iou, gt_valid[sl], col_valid[sl], h.ota_topk)
        matched_target = t_index.gather(1, matched)  # (B, C)
        return matched_target[cols.image, col_slot], fg[cols.image, col_slot]

    def _matched_rows(self, cols: _Columns, cands: list[LevelCandidates], targets: torch.Tensor,
                      matched_target: torch.Tensor, fg: torch.Tensor,
                      preds: list[torch.Tensor]) -> list[LevelCandidates]:
        """Each level's positive rows with the matched target's class and grid-unit box."""
        out = []
        for i, c in enumerate(cands):
            keep = fg & (cols.level == i)
            m = c.select(cols.row[keep])
            tgt = matched_target[keep]
            ny, nx = preds[i].shape[2:4]
            t = targets[tgt]
            gain = torch.tensor([nx, ny, nx, ny], device=t.device, dtype=t.dtype)
            box = t[:, 2:6] * gain
            box[:, :2] -= torch.stack((m.gi, m.gj), 1)
            out.append(dataclasses.replace(m, target=tgt, cls=t[:, 1].long(), box_grid=box))
        return out
