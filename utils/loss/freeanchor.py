"""Strategy ``freeanchor``: FreeAnchor (Zhang et al., NeurIPS 2019), learning to match, on the YOLOv5 head.

priors -> bags (no grad) -> likelihoods:

1. Priors: one anchor box per (level, anchor, cell) = cell centre + the level's anchor w/h, all
   levels together (:class:`models.geometry.PriorGenerator`). Class probability of anchor j for class c:
   ``p_jc = sigmoid(obj_j) * sigmoid(cls_jc)``, the score val.py and detect.py rank by.
2. Bag of object i: the ``fa_bag_size`` priors with the highest IoU between prior box and object
   (9 by default for the YOLOv5 head, the paper's 50 for RetinaNet: see "Bag size" below).
3. Recall (positive) term, per object: mean-max over its bag of ``P_cls * P_loc``
   (:func:`~utils.loss.functional.positive_bag_loss`), averaged over the objects of the batch,
   weight ``fa_alpha``.
4. Precision (negative) term: ``P(j -> i)`` = :func:`~utils.loss.functional.saturated_linear` of the
   IoU between j's decoded prediction and object i (threshold ``fa_iou_thr``, no gradient); per anchor
   and class its max over the objects of that class, ``B_jc``; focal BCE against 0 of
   ``p_jc * (1 - B_jc)`` (:func:`~utils.loss.functional.negative_bag_loss`, gamma ``fa_gamma``)
   summed over every anchor, class and image, divided by ``objects x bag size``, weight
   ``1 - fa_alpha``. The dense sum is taken over ``p_jc`` and corrected at the few (j, c) with
   ``B_jc > 0``, which equals the reference's dense ``p * (1 - B)`` without building ``B``.

L_loc: FreeAnchor's own, ``fa_bbox_weight * sum smooth-L1(beta = fa_bbox_beta)`` of the RetinaNet
deltas ``((x - x_a) / (0.1 w_a), (y - y_a) / (0.1 h_a), log(w / w_a) / 0.2, log(h / h_a) / 0.2)`` of the
YOLOv5-decoded prediction minus those of the object, both relative to the bag member's prior box.
Why: P_loc = exp(-L_loc) is a probability whose scale the paper tuned together with the bag size, the
mean-max and the 0.6 threshold; expressing the decoded box in the reference's delta coordinates keeps
that scale while the head and its decode (``xy = 2 sigmoid - 0.5 + cell``, ``wh = (2 sigmoid)^2 anchor``,
so the predicted deltas are ``(2 sigmoid - 1) stride / (0.1 w_a)`` and ``2 log(2 sigmoid) / 0.2``) stay
YOLOv5's. A bag member whose object lies beyond the decode's reach (centre more than a cell away, or
over 4x the anchor) keeps a large L_loc, so mean-max gives it little weight: the bag learns to prefer
members that can regress the box.

Bag size (``fa_bag_size`` 9, the paper's 50): the paper's bag of 50 comes from RetinaNet with 9
anchors per location and ~100k anchors per 800 px image, so bags cover ~6 locations and well under 1 %
of the anchors. The YOLOv5 head has 3 anchors per cell and, at 320 px, 6300 anchors per image: 50
members per object reach cells the decode cannot regress from (centre within one stride), and on
crowded images (13 labelled BCCD objects per image) the bags cover ~10 % of all anchors. The mean-max
then stays close to a plain mean (its best member's ``P_cls * P_loc`` is ~0.3, so weights
``1 / (1 - p)`` are near-uniform), and the recall term pushes every member up, by a rough estimate
~20x harder per anchor than the precision term pushes a stray one down: the model scores RBC-like
texture highly at most P4 cells (``tools/det_stats.py``: ~240 stray outputs per image at one P4
anchor; 25 RBC boxes per labelled RBC at confidence 0.25, 73 % of them stray).
Measured on BCCD (60 epochs, seed 0, mAP50-95): bag 50 -> 0.290, 17 (the paper's ~6 locations x 3
anchors) -> 0.395, 9 (~3 cells x 3 anchors, the order of the positives YOLOv5's own rule makes per
object) -> 0.443, against ``yolov5``'s 0.446 (README, "Measured").

Gain and scale: the loss is multiplied by the batch size (YOLOv5 convention, with YOLOv5's lr 0.01,
warm-up and gradient accumulation to 64 images). The paper's loss is a per-object mean at lr 0.01 for
16 images, so unscaled it would push ~60x (64 accumulated images) harder than the paper and ~10-15x
harder per object than ``yolov5``'s box and class terms. ``fa_gain`` (default 0.1, on both terms)
brings it to the order of ``yolov5``'s gradients. Its ``train_hyp`` (the base rule) does not rescale
it by levels, image size or class count: the negative term is normalised by objects, as in the
paper, not by anchors.

Classifier prior: the paper starts the class logits at p = 0.02. The YOLOv5 head starts objectness at
``8 / (img/stride)^2`` (1e-3 at P3, 0.02 at P5 for 640 px) and classes at ``0.6 / (nc - 0.99)``, so
p_jc starts at 1e-5 to 5e-3: lower than the paper's, which keeps the early negative term tiny (focal
``p^2``) and makes the first positive losses large but with bounded logit gradients (``-log sigmoid``).
It trains without change, and YOLOv5 checkpoints keep their meaning.

Numerics (faults the reference's users hit): probabilities in the negative term are clamped away from
0 and 1 (mmdetection PR #4082); mean-max clamps ``1 - p`` at 1e-12; the whole loss runs in float32
outside autocast (``F.binary_cross_entropy`` refuses autocast). Images without objects contribute the
negative term only, with gradients to objectness and classes (mmdetection PR #3176); a batch without
any object divides that term by ``bag size`` instead of the reference's 1, so an empty batch is not
weighted 50x more than a batch with one object.

Cost: the precision term is the one (images x priors x classes) computation;
:func:`~utils.loss.functional.focal_negative_sum` does it in one fused pass per level that also
hands out the bag rows, so their gradients share its buffer. Bags come from :func:`prior_iou`
(overlaps per axis, then one product), and only the pairs :func:`reachable_pairs` allows are
decoded for ``B``. Loss step cost: README, "Loss step cost".

``assign`` returns every bag member (``fa_bag_size`` rows per object), with ``weight`` giving each
row its mean-max weight within its bag, which is where FreeAnchor's learned matching shows.
"""
from __future__ import annotations

import dataclasses

import torch

from models.geometry import CELL_CENTRE, AnchorPriors, LevelPriors
from utils.assign.free_anchor import (Bags, anchor_bags, decode_xyxy, matched_class_prob, paired_iou,  # noqa: F401
                                      prior_iou, reachable_pairs)
from utils.assign.result import BAG_MEMBER_ROW, AssignResult
from utils.assign.rule import HeadPriors, level_rows
from utils.assign.targets import Targets
from utils.loss.base import AnchorLossStrategy, StrategyHyp
from utils.loss.functional import focal_negative_sum, negative_bag_loss, pick_row_class, positive_bag_loss

DELTA_STDS = (0.1, 0.1, 0.2, 0.2)  # RetinaNet's box-coder normalisation (x, y, w, h)


@dataclasses.dataclass(frozen=True)
class FreeAnchorHyp(StrategyHyp):
    fa_gain: float = 0.1
    fa_bag_size: int = 9
    fa_iou_thr: float = 0.6
    fa_alpha: float = 0.5
    fa_gamma: float = 2.0
    fa_bbox_beta: float = 0.11
    fa_bbox_weight: float = 0.75
    assigner: str = "freeanchor"  # its bags; fa_bag_size is also the rule's key (utils/assign/free_anchor.py)

    def __post_init__(self):
        if self.fa_bag_size < 1:
            raise ValueError(f"hyp key 'fa_bag_size' must be >= 1, got {self.fa_bag_size}")
        if not 0.0 <= self.fa_alpha <= 1.0:
            raise ValueError(f"hyp key 'fa_alpha' must be in [0, 1], got {self.fa_alpha}")
        if not 0.0 <= self.fa_iou_thr < 1.0:
            raise ValueError(f"hyp key 'fa_iou_thr' must be in [0, 1), got {self.fa_iou_thr}")
        for key in ("fa_gain", "fa_gamma", "fa_bbox_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"hyp key '{key}' must be >= 0, got {getattr(self, key)}")
        if self.fa_bbox_beta <= 0:
            raise ValueError(f"hyp key 'fa_bbox_beta' must be > 0, got {self.fa_bbox_beta}")


class _FlatPreds:
    """The head's per-level outputs addressed by (image, prior index) without concatenating them."""

    def __init__(self, preds: list[torch.Tensor]):
        self.bs, self.no = preds[0].shape[0], preds[0].shape[-1]
        self.preds = preds
        self.levels = [p.float().reshape(self.bs, -1, self.no) for p in preds]  # (bs, m_i, no)
        sizes = [x.shape[1] for x in self.levels]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.m = sum(sizes)

    def rows(self, image: torch.Tensor, prior: torch.Tensor, level: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """``[x, y, w, h, obj, class cls]`` logits (n, 6) of the given images and priors
        (``level`` = each prior's level)."""
        out = self.levels[0].new_zeros(prior.shape[0], 6)
        for i, (x, start) in enumerate(zip(self.levels, self.starts)):
            k = (level == i).nonzero().squeeze(1)
            out = out.index_copy(0, k, pick_row_class(x, image[k] * x.shape[1] + prior[k] - start, cls[k]))
        return out

    @property
    def box_logits(self) -> torch.Tensor:
        """The box columns of every prediction, (bs, m, 4), detached."""
        return torch.cat([x[..., :4].detach() for x in self.levels], 1)


def smooth_l1(diff: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise smooth-L1 of a difference (quadratic below ``beta``)."""
    a = diff.abs()
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


class ComputeLossFreeAnchor(AnchorLossStrategy):
    """FreeAnchor on the YOLOv5 head; ``names = ('pos', 'neg')`` (recall and precision terms)."""

    name = "freeanchor"
    only_rules = ("freeanchor",)  # its bags (utils/assign/free_anchor.py), weighed by its likelihoods here
    names = ("pos", "neg")
    Hyp = FreeAnchorHyp
    row_kind = BAG_MEMBER_ROW
    hyp_file = "hyp.freeanchor.yaml"
    max_pair_elems = 1 << 22  # objects x priors per chunk of the pairwise IoU tensors

    def anchor_boxes(self, preds: list[torch.Tensor]) -> AnchorPriors:
        """Every anchor box of these head outputs' grids (models/geometry.py)."""
        return self.priors.anchor_boxes([(p.shape[2], p.shape[3]) for p in preds], preds[0].device)

    def levels(self, preds: list[torch.Tensor]) -> list[LevelPriors]:
        """Grid geometry of each level of these head outputs."""
        return self.priors.levels([(p.shape[2], p.shape[3]) for p in preds], preds[0].device)

    # --- assignment (no grad) -------------------------------------------------------------------

    @torch.no_grad()
    def bags(self, preds: list[torch.Tensor], targets: torch.Tensor | Targets, imgs: torch.Tensor | None = None) -> Bags:
        """Every object's bag (:func:`utils.assign.free_anchor.anchor_bags`), all levels together, for
        :class:`~utils.assign.targets.Targets` or the loader's ``targets`` (n, 6) and ``imgs``."""
        t = targets if isinstance(targets, Targets) else Targets.build(targets.to(preds[0].device), imgs)
        levels = self.levels(preds)
        k = min(self.hyp.fa_bag_size, sum(lv.na * lv.ny * lv.nx for lv in levels))
        member = anchor_bags(t.xywh_px, levels, k, self.max_pair_elems)
        return Bags(image=t.image, cls=t.cls, box_xywh_px=t.xywh_px, member=member)

    @torch.no_grad()
    def matched_class_prob(self, flat: _FlatPreds, pri: AnchorPriors, bags: Bags) -> tuple[torch.Tensor, torch.Tensor]:
        """The nonzero entries of B (:func:`utils.assign.free_anchor.matched_class_prob`)."""
        return matched_class_prob(flat.box_logits, pri, self.levels(flat.preds), bags, self.nc, self.hyp.fa_iou_thr)

    # --- likelihoods ----------------------------------------------------------------------------

    def bag_probs(self, rows: torch.Tensor, pri: AnchorPriors, bags: Bags) -> torch.Tensor:
        """P_cls * P_loc of every bag member, (nt, k), from its ``[x, y, w, h, obj, object's class]``
        logits (nt * k, 6)."""
        nt, k = bags.member.shape
        j = bags.member.reshape(-1)
        p_cls = rows[:, 4].sigmoid() * rows[:, 5].sigmoid()
        anchor = pri.xywh_px[j]  # (nt * k, 4)
        sx, sy, sw, sh = DELTA_STDS
        pred = torch.cat((  # the decoded box in delta coordinates; sx == sy, sw == sh
            (self.box_coder.decode_xy(rows[:, 0:2]) - CELL_CENTRE) * pri.stride_px[j, None] / anchor[:, 2:] / sx,
            self.box_coder.log_wh_gain(rows[:, 2:4]) / sw), 1)
        gt = bags.box_xywh_px.repeat_interleave(k, 0)
        target = torch.cat(((gt[:, :2] - anchor[:, :2]) / anchor[:, 2:] / sx,
                            torch.log(gt[:, 2:].clamp(min=1e-6) / anchor[:, 2:]) / sw), 1)
        del sy, sh
        loc = self.hyp.fa_bbox_weight * smooth_l1(pred - target, self.hyp.fa_bbox_beta).sum(1)
        return (p_cls * torch.exp(-loc)).view(nt, k)

    def negative_and_rows(self, flat: _FlatPreds, image: torch.Tensor, prior: torch.Tensor,
                          cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense focal sum of ``p`` over every image, prior and class, and the ``[x, y, w, h, obj,
        class cls]`` logits (n, 6) of the given (image, prior, cls).

        One :func:`~utils.loss.functional.focal_negative_sum` per level, which also hands out the
        requested rows so that their gradient lands in the same buffer.
        """
        level = torch.bucketize(prior, prior.new_tensor(flat.starts), right=True) - 1
        rows = flat.levels[0].new_zeros(len(prior), 6)
        total = 0.0
        for i, (x, start) in enumerate(zip(flat.levels, flat.starts)):
            sel = (level == i).nonzero().squeeze(1)
            level_sum, picked = focal_negative_sum(x, self.hyp.fa_gamma, rows=image[sel] * x.shape[1] + prior[sel] - start,
                                                   cls=cls[sel])
            total = total + level_sum
            rows = rows.index_copy(0, sel, picked)
        return total, rows

    @torch.no_grad()
    def match(self, preds: list[torch.Tensor], targets: Targets) -> AssignResult:
        """Every bag member of every object, per level (``fa_bag_size`` rows per object in all).

        Rows are ordered by object, then by prior IoU (highest first) within the object; ``box_xywh_cell``
        is in the cell frame. ``weight`` is the row's mean-max weight ``(1 / (1 - p)) / sum over the bag``
        (a bag's weights sum to 1): how much the member counts in its object's likelihood,
        near-uniform early in training, concentrated on the learned match later. ``extras`` holds the
        bags (``'bags'``, :class:`utils.assign.free_anchor.Bags`) and the nonzero entries of B
        (``'matched'``: flat (image, prior, class) keys and values) for the precision term.
        """
        flat = _FlatPreds(preds)
        pri = self.anchor_boxes(preds)
        bags = self.bags(preds, targets)
        matched = self.matched_class_prob(flat, pri, bags)
        nt, k = bags.member.shape
        j = bags.member.reshape(-1)
        p = self.bag_probs(flat.rows(bags.image.repeat_interleave(k), j, pri.level[j], bags.cls.repeat_interleave(k)),
                           pri, bags)  # (nt, k)
        w = 1.0 / (1.0 - p).clamp(min=1e-12)
        w = (w / w.sum(1, keepdim=True)).reshape(-1)
        target = torch.arange(nt, device=j.device).repeat_interleave(k)
        order = torch.sort(pri.level[j], stable=True).indices  # by level, then object and rank
        out = level_rows(target[order], j[order], targets, HeadPriors.of(self.head, self.priors, preds), w[order])
        return AssignResult(out, nt, {"bags": bags, "matched": matched}, self.row_kind)

    def losses(self, preds: list[torch.Tensor], assignment: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """Recall (bag) and precision terms given the bags and B; float32, outside autocast."""
        with torch.autocast(preds[0].device.type, enabled=False):
            return self._likelihoods(preds, assignment.extras["bags"], *assignment.extras["matched"])

    def _likelihoods(self, preds: list[torch.Tensor], bags: Bags, keys: torch.Tensor,
                     box_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hyp
        g = h.fa_gamma
        flat = _FlatPreds(preds)
        pri = self.anchor_boxes(preds)
        nt, k = bags.member.shape
        # rows needed: every bag member, then every (image, prior) with a matched class B_jc > 0
        c = keys % self.nc
        jb = keys // self.nc
        image = torch.cat((bags.image.repeat_interleave(k), jb // flat.m))
        prior = torch.cat((bags.member.reshape(-1), jb % flat.m))
        dense, rows = self.negative_and_rows(flat, image, prior, torch.cat((bags.cls.repeat_interleave(k), c)))
        # precision term: the dense sum is of p, correct it to p * (1 - B) where B > 0
        p = rows[nt * k:, 4].sigmoid() * rows[nt * k:, 5].sigmoid()
        neg = dense + (negative_bag_loss(p * (1 - box_prob), g) - negative_bag_loss(p, g)).sum()
        neg = neg / (max(nt, 1) * k)
        pos = positive_bag_loss(self.bag_probs(rows[:nt * k], pri, bags)).sum() / max(nt, 1)
        lpos = (pos * h.fa_alpha * h.fa_gain).view(1)
        lneg = (neg * (1 - h.fa_alpha) * h.fa_gain).view(1)
        return (lpos + lneg).sum() * flat.bs, torch.cat((lpos, lneg)).detach()
