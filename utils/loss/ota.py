"""Strategy ``ota``: YOLOv7's ComputeLossOTA = the ``yolov5`` loss on SimOTA's positives.

``loss: ota`` is ``loss: yolov5`` with ``assigner: simota`` (:class:`utils.assign.simota.SimOTARule`),
the same objective to the bit (tests/test_loss_ota.py); the name stays for YOLOv7 users and for the
checkpoints that record it.

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
  (targets x columns x classes) tensor (:func:`utils.assign.simota.class_cost_table`). All matching
  maths runs in float32 under autocast.
- Saturated logits (``sigmoid`` = 1.0 in float32) give a large finite class cost; YOLOv7's
  ``log(y / (1 - y))`` round trip gives inf/NaN there.
"""
from __future__ import annotations

import dataclasses

from utils.loss.yolov5 import ComputeLoss, YOLOv5Hyp


@dataclasses.dataclass(frozen=True)
class OTAHyp(YOLOv5Hyp):
    assigner: str = "simota"  # YOLOv7's rule; ota_topk, ota_iou_weight are its keys (utils/assign/simota.py)


class ComputeLossOTA(ComputeLoss):
    """YOLOv7's OTA loss; ``names = ('box', 'obj', 'cls')``; the ``yolov5`` loss with the ``simota`` rule."""

    name = "ota"
    only_rules = ("simota",)  # another rule on this loss is yolov5+<rule>
    Hyp = OTAHyp
    hyp_file = "hyp.ota.yaml"

    def __init__(self, model, hyp, max_pair_elems: int = 2 ** 21):
        """``max_pair_elems``: memory bound of SimOTA's (targets, columns) tensors of one group of images,
        or of one chunk of an image's targets when one image alone exceeds it; results do not depend on it."""
        super().__init__(model, hyp)
        self.rule.max_pair_elems = max_pair_elems
