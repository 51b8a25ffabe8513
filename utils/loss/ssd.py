"""Strategy ``ssd``: SSD MultiBox matching with hard negative mining, on the YOLOv5 head.

Priors: one anchor box per (level, anchor, cell) = the cell centre plus the level's anchor w/h, in
pixels of the input image, all levels together. Assignment: ``assigner: max_iou`` by default
(:class:`utils.assign.max_iou.MaxIoURule`: :func:`~utils.assign.max_iou.match_max_iou` per image, each
object forced onto its best-IoU anchor, then every anchor with IoU >= ``ssd_iou_thr`` takes its best
object); any other rule of hard positives on the anchor head (``yolov5``, ``simota``, ``atss``, ``tal``:
their rows are the positives, a soft weight is not read) feeds the same mining, without the ignore band,
which is cut from max_iou's prior IoUs. Losses, all summed and divided by the number of positives in the batch N
(at least 1, so a batch without objects gives a finite loss):

- box: 1 - CIoU of the YOLOv5-decoded prediction and the object, at positives;
- cls: class BCE (mean over classes) at positives, against label-smoothed one-hot;
- obj: BCE at positives toward the detached IoU of their prediction (``ssd_obj_iou``, YOLOv5's
  quality target) or toward 1, plus BCE toward 0 at the hardest negatives of each image ranked by
  that loss: ``ssd_neg_pos_ratio`` per positive, at least ``ssd_min_neg`` per image, none inside
  the ignore band ``ssd_neg_iou_thr``.

Why CIoU and not SSD's smooth-L1 on encoded offsets (``(g - a) / (0.1 a)``, ``log(g / a) / 0.2``):
the YOLOv5 head decodes with bounded sigmoids (``xy = 2 sigmoid - 0.5 + cell``, ``wh = (2 sigmoid)^2
anchor``), not SSD's linear / exp decode, and val.py / detect.py and official checkpoints rely on that
decode. Regressing SSD offsets would need either another head or logit-space targets that are
infinite wherever the object lies at the edge of the decode's reach; CIoU on the decoded box is
scale-invariant, needs no encoding variances and keeps the loss comparable with ``yolov5``'s.
A consequence of SSD matching on this head: a large anchor can match (IoU >= 0.5) an object whose
centre is more than one cell away, beyond the decode's reach; such positives saturate, and the IoU
objectness target then scores them low.

Negatives per positive: 30 by default, not SSD's 3 (``ssd_neg_pos_ratio: 3`` gives SSD's rule). Mining
takes the ``ratio x positives`` highest-scoring negatives of each image. When an image holds that many
negatives that look like its positives -- a crowded scene, objects nobody labelled, anchors one cell
or one scale off a labelled object -- mining finds them at every step, whatever feature the model
uses, and ``N * BCE(p, t) + ratio * N * BCE(p, 0)`` is smallest at one value ``p = t / (1 + ratio)``
for positives and negatives alike: the objectness stops ranking anything. BCCD (dense red cells,
many without a box) does exactly that at 3: a trained model gave RBC positives 0.144 and its mined
negatives 0.149 against the predicted 0.152, and which class then fell below the shared best-F1
threshold changed with the seed (README, "Why ssd collapsed"). At 30 the look-alikes are a minority of
the mined set, the RBC positives separate (0.134 against 0.016 after 20 epochs) and the collapse
did not happen in three 60-epoch seeds. ``tools/ssd_stats.py --weights`` prints these numbers for a run.

Zero-positive policy: SSD keeps ``ratio x positives`` negatives, i.e. none from an image without
objects, so background-only images would never teach "no object". Here every image keeps at least
``ssd_min_neg`` hardest negatives (default 16).

Ignore band (``ssd_neg_iou_thr``, default 1.0 = off, as SSD): anchors whose IoU with some object is at
least this are never mined as negatives (RetinaNet uses 0.4 below its 0.5 positives). On BCCD it
did not stop the collapse at ratio 3 (0.4 and 0.3 tried), because most look-alike negatives are not
near a labelled object.

Gains: N is counted over all levels at once, where YOLOv5 sums one mean per level, so the defaults
``box 0.15`` and ``cls 1.5`` equal YOLOv5's per-batch totals for 3 levels (0.05 and 0.5 per level);
obj keeps 1.0 (chosen when the ratio was 3: 4 N anchors / N is close to YOLOv5's level balance sum
5.4; at 30 the sum has 31 N terms, most near 0 once trained, and 1.0 was measured, not tuned). ``box``, ``obj`` and
``cls`` scale with levels, image size and class count as ``yolov5``'s do
(:class:`~utils.loss.yolov5.YOLOv5GainScaling`).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from utils.assign.result import AssignResult
from models.geometry import AnchorPriors
from utils.boxes import bbox_iou
from utils.loss.base import FRACTION, NON_NEGATIVE, AnchorLossStrategy, StrategyHyp
from utils.loss.functional import bce_with_logits, hard_negative_mask, smooth_bce_targets
from utils.loss.yolov5 import YOLOv5GainScaling


@dataclasses.dataclass(frozen=True)
class SSDHyp(StrategyHyp):
    RANGES: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("box", "obj", "cls", "cls_pw", "obj_pw", "ssd_neg_pos_ratio", "ssd_min_neg"), NON_NEGATIVE),
        **dict.fromkeys(("label_smoothing", "ssd_neg_iou_thr"), FRACTION)}

    box: float = 0.15
    obj: float = 1.0
    cls: float = 1.5
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    label_smoothing: float = 0.0
    ssd_neg_pos_ratio: float = 30.0
    ssd_min_neg: int = 16
    ssd_obj_iou: bool = True
    ssd_neg_iou_thr: float = 1.0
    assigner: str = "max_iou"  # SSD's matching (its key ssd_iou_thr); any rule of positives on the anchor head


class ComputeLossSSD(YOLOv5GainScaling, AnchorLossStrategy):
    """SSD matching + hard negative mining; ``names = ('box', 'obj', 'cls')``."""

    name = "ssd"
    names = ("box", "obj", "cls")
    Hyp = SSDHyp
    hyp_file = "hyp.ssd.yaml"

    def __init__(self, model, hyp):
        super().__init__(model, hyp)
        self.cp, self.cn = smooth_bce_targets(self.hyp.label_smoothing)

    def anchor_boxes(self, grid_shapes: list[tuple[int, int]], device: torch.device) -> AnchorPriors:
        """The anchor boxes of every level for these grid shapes (cached for the last shape seen)."""
        return self.priors.anchor_boxes(grid_shapes, device)

    def losses(self, preds: list[torch.Tensor], matches: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """Box / cls at the positives and objectness with hard negatives, all divided by N."""
        h = self.hyp
        dev = preds[0].device
        bs = preds[0].shape[0]
        n_pos = max(sum(len(m) for m in matches), 1)
        lbox = torch.zeros(1, device=dev)
        lcls = torch.zeros(1, device=dev)
        obj_logits, obj_target, positive = [], [], []
        for pi, m in zip(preds, matches):
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=dev)  # (bs, na, ny, nx)
            pos = torch.zeros(pi.shape[:4], dtype=torch.bool, device=dev)
            if len(m):
                pbox, _, pcls = pi[m.image, m.anchor, m.gj, m.gi].split((4, 1, self.nc), 1)
                pbox = self.box_coder.decode(pbox, m.anchor_wh.to(pi.dtype))  # (n, 4) xywh, cell frame
                iou = bbox_iou(pbox, m.box_xywh_cell.to(pi.dtype), CIoU=True).squeeze(-1)
                lbox = lbox + (1.0 - iou).sum()
                pos[m.image, m.anchor, m.gj, m.gi] = True
                tobj[m.image, m.anchor, m.gj, m.gi] = (iou.detach().clamp(0).type(tobj.dtype)
                                                       if h.ssd_obj_iou else 1.0)
                if self.nc > 1:
                    t = torch.full_like(pcls, self.cn)
                    t[torch.arange(len(m), device=dev), m.cls] = self.cp
                    lcls = lcls + bce_with_logits(pcls, t, h.cls_pw, reduction="none").mean(1).sum()
            obj_logits.append(pi[..., 4].reshape(bs, -1))
            obj_target.append(tobj.reshape(bs, -1))
            positive.append(pos.reshape(bs, -1))
        obj_logits, obj_target, positive = (torch.cat(x, 1) for x in (obj_logits, obj_target, positive))
        obj_loss = bce_with_logits(obj_logits, obj_target, h.obj_pw, reduction="none")  # (bs, m)
        prior_iou = matches.extras.get("prior_iou")  # max_iou's; other rules give no ignore band
        ignore = None if prior_iou is None else prior_iou >= h.ssd_neg_iou_thr
        negative = hard_negative_mask(obj_loss, positive, h.ssd_neg_pos_ratio, h.ssd_min_neg, ignore)
        lobj = (obj_loss * (positive | negative)).sum().view(1)
        lbox = lbox * h.box / n_pos
        lobj = lobj * h.obj / n_pos
        lcls = lcls * h.cls / n_pos
        return (lbox + lobj + lcls).sum() * bs, torch.cat((lbox, lobj, lcls)).detach()
