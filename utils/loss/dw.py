"""Strategy ``dw``: Dual Weighting label assignment (Li et al., CVPR 2022) on the YOLOv5 head.

The joint score of an anchor for class c is ``s = sigmoid(cls_c) * sigmoid(obj)``: objectness plays
the part of DW's centerness branch, so inference stays YOLOv5's ``obj * cls``. Behaviour pinned to
strongwolf/DW ``dw_head.py`` (``_loss_single``, ``loss``, ``CenterPrior``).

priors -> assign (no grad) -> losses:

1. Candidates (:func:`utils.assign.centre_prior.cells_inside_boxes`): every cell of every level whose
   centre lies strictly inside an object. Each of the cell's ``na`` anchors is a separate candidate
   (its own box, obj and cls outputs), all with the cell's prior: the Gaussian
   ``exp(-d^2 / (2 * dw_sigma^2))`` per axis of the centre distance in strides (official sigma
   1.11, mean 0, fixed), 0 outside the box. Anchors whose decode cannot reach the object
   (``wh <= 4 * anchor``) simply earn a low ``p_loc`` and so a low weight.
2. Weights of every (candidate, object) pair, no gradient
   (:func:`utils.assign.dw_weights.dw_pos_weights_pairs`, :func:`~utils.assign.dw_weights.dw_neg_iou_weights_pairs`):
   ``p_loc = exp(-5 * (1 - GIoU))`` of the decoded box, ``p_cls = s`` of the object's class,
   ``p = p_cls * p_loc``; ``w_pos = exp(5p) p prior / sum over the object's pairs of exp(3p) p prior``.
   The negative IoU factor ``(1 - IoU^2) / 0.75``, min-max normalised over the object's pairs, 1 below
   IoU 0.5; 1 for every (anchor, class) not paired with an object of that class.
3. Losses, summed over the batch:

   - ``cls_pos = dw_pos_weight * sum w_pos * -log(p_cls) / N_obj``;
   - ``loc = dw_pos_weight * sum w_pos * -log(p_loc) / N_obj`` (``-log p_loc = 5 * GIoU loss``);
   - ``cls_neg = dw_neg_weight * sum over (anchor, class) of w_neg_iou * s^2 * -log(1 - s) /
     max(1, sum (1 - w_neg_iou))``.

   ``N_obj`` is the number of objects in the batch (at least 1), candidates or not, as the official
   ``pos_avg_factor``. The log terms are computed exactly from the logits (``-log p_cls`` as softplus terms,
   ``1 - s`` as ``sigmoid(-a) + sigmoid(a) sigmoid(-b)``, so it stays accurate as ``s`` nears 1 and
   autocast is safe); the official BCE on probabilities clamps each term at 100.

Cost: the negative term is dense over (anchors x classes);
:func:`~utils.loss.functional.focal_negative_sum` computes it at weight 1 in one fused pass per level,
which also hands out the candidates' box, obj and own-class logits (their gradients share its
buffer), and the few weighted cells are corrected from those.

Decisions where the official code is silent or differs on purpose:

- ``dw_best_object`` (``false`` by default, as the official code): with ``true`` an anchor inside
  several objects keeps its positive weight only for the object it fits best (highest
  ``p = p_cls * p_loc``), so one YOLOv5 anchor is not regressed towards two overlapping boxes; with
  ``class`` only among objects of the same class (an anchor inside an RBC and a platelet on it stays
  a positive of both, one per class output); its negative IoU factor is unchanged.
- An (anchor, class) paired with several objects of that class (overlapping boxes of one class)
  takes the smallest IoU factor (it is a good positive of one of them). The official code writes
  the factors with an indexed assignment whose winner among duplicates is unspecified.
- As in the official code, the IoU factor is detached but the ``s^2`` importance keeps its
  gradient (a focal-loss-style modulating factor); ``w_pos`` is detached.
- Gains: the official losses are means over the batch (mmdetection); here, as every strategy, the
  total is multiplied by the batch size (YOLOv5 convention) and trained with YOLOv5's SGD recipe.
  DW's per-image loss is ~10x YOLOv5's at the start (weights of an object sum to 1..e^2, the loc
  term carries the factor 5), so ``dw_gain`` (default 0.1) scales all three terms to YOLOv5's
  magnitude; ``train_hyp`` (the base rule) leaves it unscaled by levels, image size and class count
  (DW's normalisers do not depend on those).
- ``dw_pos_weight`` is 1.0 by default, not the official 0.25. The negative term is normalised by
  ``sum (1 - w_neg_iou)``, DW's count of effective positives, which is small on the YOLOv5 head
  (few anchors per object reach IoU > 0.5 early on), so at 0.25 the negative term outweighs the
  positive ones and the right boxes end up scored low: on BCCD (60 epochs, yolov5n, 320 px, the README
  comparison) the official 0.25 gave mAP50-95 0.413 / 0.400 on seeds 0 / 1 with the right RBC box's
  median score 0.34 against yolov5's 0.59; 1.0 gave 0.473 / 0.447 (yolov5 0.446 / 0.393).
  ``dw_pos_weight: 0.25`` restores the paper.
- The model keeps YOLOv5's bias initialisation (obj ~8 objects per 640 image, cls 0.6 / nc); DW's
  classifier prior 0.02 is not imposed from the loss.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from utils.assign.centre_prior import centre_candidates, gaussian_centre_prior
from utils.assign.result import WEIGHTED_CANDIDATE_ROW, AssignResult, LevelCandidates
from utils.assign.targets import Targets
from utils.boxes import bbox_iou
from utils.loss.base import AnchorLossStrategy, StrategyHyp
from utils.assign.dw_weights import dw_neg_iou_weights_pairs, dw_pos_weights_pairs
from utils.loss.functional import FOCAL_NEG_FLOOR, focal_negative_sum, pick_row_class


@dataclasses.dataclass(frozen=True)
class DWHyp(StrategyHyp):
    dw_sigma: float = 1.11  # centre prior sigma, in strides
    dw_loc_scale: float = 5.0  # p_loc = exp(-dw_loc_scale * GIoU loss)
    dw_pos_weight: float = 1.0  # weight of both positive terms (official 0.25; see "Gains")
    dw_neg_weight: float = 1.0  # weight of the negative term (official 1.0)
    dw_gain: float = 0.1  # overall gain, for YOLOv5's loss x batch-size convention
    dw_best_object: bool | str = False  # false, true (among all objects) or 'class' (among objects of its class)
    assigner: str = "dw"  # its centre-prior candidates (utils/assign/centre_prior.py), re-weighed here

    def __post_init__(self):
        if self.dw_best_object not in (False, True, "class"):
            raise ValueError(f"hyp key 'dw_best_object' must be false, true or 'class', got {self.dw_best_object!r}")
        for key in ("dw_sigma", "dw_loc_scale"):
            if getattr(self, key) <= 0:
                raise ValueError(f"hyp key '{key}' must be > 0, got {getattr(self, key)}")
        for key in ("dw_pos_weight", "dw_neg_weight", "dw_gain"):
            if getattr(self, key) < 0:
                raise ValueError(f"hyp key '{key}' must be >= 0, got {getattr(self, key)}")


@dataclasses.dataclass
class _PairTerms:
    """Per-pair quantities of all levels, concatenated level by level."""

    cls_logit: torch.Tensor  # (k,) logit of the object's class
    obj_logit: torch.Tensor  # (k,)
    giou: torch.Tensor  # (k,) GIoU of the decoded box with the object, with gradient
    iou: torch.Tensor  # (k,) IoU, detached
    prior: torch.Tensor  # (k,)
    target: torch.Tensor  # (k,) long, row in ``targets``
    cls: torch.Tensor  # (k,) long, the object's class
    anchor: torch.Tensor  # (k,) long, one id per anchor of the batch (all levels)


class ComputeLossDW(AnchorLossStrategy):
    """Dual Weighting on the YOLOv5 head; ``names = ('loc', 'cls_pos', 'cls_neg')``."""

    names = ("loc", "cls_pos", "cls_neg")
    Hyp = DWHyp
    name = "dw"
    only_rules = ("dw",)  # its weights need the candidates' own extras
    row_kind = WEIGHTED_CANDIDATE_ROW
    hyp_file = "hyp.dw.yaml"

    @torch.no_grad()
    def candidates(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[LevelCandidates]:
        """Every (object, anchor, cell) whose cell centre lies inside the object, per level
        (:func:`utils.assign.centre_prior.centre_candidates`)."""
        targets = targets.to(device=preds[0].device, dtype=torch.float32)
        return centre_candidates(targets, self.anchors, [(p.shape[2], p.shape[3]) for p in preds])

    @staticmethod
    def candidate_rows(preds: list[torch.Tensor], cands: list[LevelCandidates]) -> list[torch.Tensor]:
        """Per level, the candidates' box, obj and own-class logits (k_i, 6), by plain indexing."""
        return [pick_row_class(pi, m.flat_rows(pi), m.cls) for pi, m in zip(preds, cands)]

    def pair_terms(self, rows: list[torch.Tensor], cands: list[LevelCandidates],
                   preds: list[torch.Tensor]) -> _PairTerms:
        """Decode each candidate's prediction (YOLOv5 v6/v7 decode) and score it against its object.

        ``rows``: per level, the candidates' ``[x, y, w, h, obj, own class]`` logits (k_i, 6). All levels are decoded
        together: boxes are in grid units of their own level, and IoU / GIoU do not depend on the unit.
        """
        offsets = [0]
        for pi in preds[:-1]:
            offsets.append(offsets[-1] + pi.shape[:4].numel())
        anchor_ids = torch.cat([m.flat_rows(pi) + o for pi, m, o in zip(preds, cands, offsets)])
        logits = torch.cat([r.T.float() for r in rows], 1)  # (6, k): each of the six contiguous
        box_xywh_cell = torch.cat([m.box_xywh_cell for m in cands]).T.contiguous()  # (4, k)
        anchor_wh = torch.cat([m.anchor_wh for m in cands]).T  # (2, k)
        pxy = self.box_coder.decode_xy(logits[:2])
        pwh = self.box_coder.decode_wh(logits[2:4], anchor_wh)
        pbox = torch.cat((pxy, pwh)).T  # (k, 4) xywh, xy relative to the cell; column-major for bbox_iou
        giou = bbox_iou(pbox, box_xywh_cell.T, GIoU=True).squeeze(-1)
        with torch.no_grad():
            iou = bbox_iou(pbox, box_xywh_cell.T).squeeze(-1)
        prior = gaussian_centre_prior(box_xywh_cell[:2].T - 0.5, self.hyp.dw_sigma)
        return _PairTerms(cls_logit=logits[5], obj_logit=logits[4], giou=giou, iou=iou, prior=prior,
                          target=torch.cat([m.target for m in cands]), cls=torch.cat([m.cls for m in cands]),
                          anchor=anchor_ids)

    def weights(self, terms: _PairTerms, n_obj: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``w_pos`` and the negative IoU factor of every pair (detached)."""
        with torch.no_grad():
            p_cls = torch.sigmoid(terms.cls_logit) * torch.sigmoid(terms.obj_logit)
            p_loc = torch.exp(-self.hyp.dw_loc_scale * (1 - terms.giou))
            p = p_cls * p_loc
            prior = terms.prior
            if self.hyp.dw_best_object and len(p):
                key = terms.anchor if self.hyp.dw_best_object is True else terms.anchor * self.nc + terms.cls
                best = p.new_zeros(int(key.max()) + 1).scatter_reduce_(0, key, p, "amax")
                prior = prior * (p >= best[key])
            w_pos = dw_pos_weights_pairs(p, prior, terms.target, n_obj)
            w_neg_iou = dw_neg_iou_weights_pairs(terms.iou, terms.target, n_obj)
        return w_pos, w_neg_iou

    @torch.no_grad()
    def match(self, preds: list[torch.Tensor], targets: Targets) -> AssignResult:
        """All candidates of every level, with ``weight`` = their DW positive weight ``w_pos``; the
        negative IoU factor of every candidate is ``extras['w_neg_iou']`` (k,), levels concatenated."""
        targets = targets.normalised
        cands = self.candidates(preds, targets)
        w_pos, w_neg_iou = self.weights(self.pair_terms(self.candidate_rows(preds, cands), cands, preds),
                                        targets.shape[0])
        for m, w in zip(cands, w_pos.split([len(m) for m in cands])):
            m.weight = w
        return AssignResult(cands, targets.shape[0], {"w_neg_iou": w_neg_iou}, self.row_kind)

    def losses(self, preds: list[torch.Tensor], assignment: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """The three DW terms given the weighted candidates."""
        h = self.hyp
        bs = preds[0].shape[0]
        cands = assignment.levels
        # the dense negative sum at weight 1 of every level, and the candidates' rows with gradient
        dense, rows = zip(*(focal_negative_sum(pi, 2.0, rows=m.flat_rows(pi), cls=m.cls) for pi, m in zip(preds, cands)))
        n_obj = max(assignment.num_targets, 1)
        terms = self.pair_terms(rows, cands, preds)
        w_pos = torch.cat([m.weight for m in cands]).to(terms.giou.dtype)
        w_neg_iou = assignment.extras["w_neg_iou"]
        neg_log_p_cls = F.softplus(-terms.cls_logit) + F.softplus(-terms.obj_logit)
        neg_log_p_loc = h.dw_loc_scale * (1 - terms.giou)
        lcls_pos = ((w_pos * neg_log_p_cls).sum() * h.dw_pos_weight / n_obj).view(1)
        lloc = ((w_pos * neg_log_p_loc).sum() * h.dw_pos_weight / n_obj).view(1)
        neg_sum, neg_norm = 0.0, 0.0
        for pi, m, r, d, w in zip(preds, cands, rows, dense, w_neg_iou.split([len(m) for m in cands])):
            level_sum, level_norm = self._negative_level(pi, m, r, d, w)
            neg_sum, neg_norm = neg_sum + level_sum, neg_norm + level_norm
        lcls_neg = (neg_sum * h.dw_neg_weight / max(float(neg_norm), 1.0)).view(1)
        parts = torch.cat((lloc, lcls_pos, lcls_neg)) * h.dw_gain
        return parts.sum() * bs, parts.detach()

    @staticmethod
    def _negative_level(pi: torch.Tensor, m: LevelCandidates, rows: torch.Tensor, dense: torch.Tensor,
                        w_neg_iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over (anchor, class) of ``w * s^2 * -log(1 - s)``, and the sum of ``1 - w``, of one level.

        ``w`` is 1 except at (anchor, class) cells paired with an object of that class, so the sum
        is the dense sum at ``w = 1`` (``dense``) plus ``(w - 1) * s^2 * -log(1 - s)`` at those few
        cells, read from the candidates' ``rows``.
        """
        keep = w_neg_iou < 1
        if not keep.any():
            return dense, w_neg_iou.new_zeros(())
        no = pi.shape[-1]
        cell, inverse = torch.unique(m.flat_rows(pi)[keep] * (no - 5) + m.cls[keep], return_inverse=True)
        w = torch.ones(len(cell), device=pi.device).scatter_reduce_(0, inverse, w_neg_iou[keep].float(), "amin")
        first = torch.zeros(len(cell), dtype=torch.long, device=pi.device)
        first.scatter_(0, inverse, torch.arange(len(inverse), device=pi.device))  # one candidate per cell
        r = rows[keep][first].float()  # (u, 6)
        s = torch.sigmoid(r[:, 4]) * torch.sigmoid(r[:, 5])
        f = s.square() * -torch.log(torch.clamp(1 - s, min=FOCAL_NEG_FLOOR))
        return dense + ((w - 1) * f).sum(), (1 - w).sum()

