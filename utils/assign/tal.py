"""Task-aligned assignment (TOOD, Feng et al., ICCV 2021) with YOLOv8's choices, on the anchor-free head.

For every object (one batch, all levels' cells together, cells numbered level by level in raster order):

1. candidates: the cells whose centre lies strictly inside the object (by more than ``eps`` pixels on
   all four sides; YOLOv8's ``select_candidates_in_gts``);
2. for each candidate, ``s`` = the predicted score (sigmoid) of the object's class there and ``u`` =
   CIoU of the cell's decoded box with the object, clamped at 0; alignment ``t = s^alpha * u^beta``;
3. the ``topk`` largest ``t`` are the object's positives (equal ``t`` lowest cell first,
   :func:`utils.assign.common.highest_first`); a pair with ``t = 0`` would carry target 0 and is
   dropped;
4. a cell claimed by several objects of one image goes to the object with the largest ``u`` among
   every object of the image containing that cell, claimant or not (YOLOv8 takes the argmax over the
   whole overlap column), the lowest object row on an exact tie; it then carries that object's ``t``;
5. soft target of each positive: ``t * max(u) / (max(t) + eps)``, the maxima over that object's
   positives after step 4: the best-aligned positive of an object gets its best IoU.

Worked example (tests/test_assign_tal.py): one level of stride 8, a 32x32 image (4x4 cells), one
object xyxy (0, 0, 16, 16) px: the cells (0, 0), (1, 0), (0, 1), (1, 1) have their centres inside (4 or
12 px), nothing else does. If every cell predicts the object's box exactly (u = 1) with class score
0.25 at cell 0 and 0.64 elsewhere, t = 0.5 and 0.8; with ``topk = 2`` cells 1 and 4 (raster order,
0.8 each, the lowest indices among the three equal) are positive and get 0.8 * 1 / 0.8 = 1.0.

YOLOv8 (ultralytics ``utils/tal.py`` ``TaskAlignedAssigner``, used with topk 10, alpha 0.5, beta 6.0
in ``v8DetectionLoss``): equal assignments (tests/test_assign_tal.py checks a dense transcription),
except that YOLOv8 leaves the order of equal ``t`` to ``torch.topk`` and keeps ``t = 0`` pairs as
positives with target 0. Such a pair changes no loss by itself (background BCE target, box weight 0),
but when an object has fewer than ``topk`` aligned cells YOLOv8's picks among its zeros follow
``torch.topk``'s unspecified order, and a picked cell that another object claims becomes contested
(step 4); leaving ``t = 0`` pairs out keeps the result defined. TOOD itself uses alpha 1.0, beta 6.0,
top 13.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import torch

from models.geometry import PriorGenerator
from utils.assign.centre_prior import cells_inside_boxes
from utils.assign.common import highest_first, resolve_cell_conflicts
from utils.assign.params import NON_NEGATIVE, POSITIVE, HypParams
from utils.assign.result import AssignResult, LevelCandidates
from utils.assign.rule import AssignRule, HeadPriors, level_rows
from utils.assign.targets import Targets
from utils.assign.view import PredictionView
from utils.boxes import bbox_iou

TAL_EPS = 1e-9  # YOLOv8's eps: the soft-target denominator's guard (and its inside margin in pixels)

# (image (p,), cell (p,), class (p,)) -> (predicted score of that class (p,), decoded box (p, 4) xyxy px):
# the predictions are read only at the (object, candidate cell) pairs, not at every cell and class
PairPredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def dense_predictor(scores: torch.Tensor, pred_xyxy_px: torch.Tensor) -> PairPredictor:
    """The :data:`PairPredictor` of dense tensors: scores (Tensor[bs, N, nc]) probabilities and
    pred_xyxy_px (Tensor[bs, N, 4]) boxes of every cell, levels concatenated."""
    return lambda image, cell, cls: (scores[image, cell, cls].float(), pred_xyxy_px[image, cell].float())


@torch.no_grad()
def alignment(targets: Targets, priors: HeadPriors, predict: PairPredictor, alpha: float,
              beta: float) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Steps 1-2 for every (object, prior) pair of the batch (every anchor of a cell is a prior).

    Returns:
        pairs (object (k,), prior (k,)): every candidate, priors numbered globally; align t and
        overlap u (Tensor[nt, N] float32, 0 at non-candidates), N = priors of one image.
    """
    boxes_xyxy_px = targets.xyxy_px
    nt = boxes_xyxy_px.shape[0]
    # strictly inside: for cell centres on a power-of-2 stride grid "> 0" and YOLOv8's "> 1e-9 px" agree
    # (float32 differences of two coordinates above 1 px are 0 or far above 1e-9); ranges per level
    # instead of a (nt, N, 4) distance tensor
    obj, prior = [], []
    for lv in priors.levels:
        o, gj, gi = cells_inside_boxes(boxes_xyxy_px / lv.stride, (lv.ny, lv.nx))
        a = torch.arange(lv.na, device=o.device)[:, None]
        obj.append(o.expand(lv.na, -1).reshape(-1))
        prior.append((lv.start + (a * lv.ny + gj) * lv.nx + gi).reshape(-1))
    obj, prior = torch.cat(obj), torch.cat(prior)
    s_pair, pred_pair = predict(targets.image[obj], prior, targets.cls[obj])
    u_pair = bbox_iou(boxes_xyxy_px[obj], pred_pair, xywh=False, CIoU=True).squeeze(-1).clamp_(0)
    u = torch.zeros((nt, priors.count), device=boxes_xyxy_px.device)
    align = torch.zeros_like(u)
    u[obj, prior] = u_pair
    align[obj, prior] = s_pair.pow(alpha) * u_pair.pow(beta)
    return (obj, prior), align, u


@torch.no_grad()
def select_positives(image: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor], align: torch.Tensor,
                     u: torch.Tensor, topk: int, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3-4: (object row (p,), cell (p,)) of every positive, one per (image, cell), by image then cell.

    image (Tensor[nt] long): each object's image; pairs: (object, cell) of every candidate (centre
    inside); align, u (Tensor[nt, N]) as :func:`alignment`.
    """
    n = align.shape[1]
    top = highest_first(align, min(topk, n))  # (nt, k)
    claim = torch.zeros(align.shape, dtype=torch.bool, device=align.device).scatter_(1, top, True) & (align > 0)
    obj, cell = claim.nonzero(as_tuple=True)
    key = image[obj] * n + cell
    contested = torch.bincount(key, minlength=bs * n)[key] > 1
    # a contested cell goes to the largest u over every object of its image containing it (claimant or
    # not), as YOLOv8's argmax over the whole overlap column: the cell-conflict rule over all candidates
    c_obj, c_cell = pairs
    c_key = image[c_obj] * n + c_cell
    competing = torch.isin(c_key, key[contested]).nonzero().squeeze(1)
    c_obj, c_cell = c_obj[competing], c_cell[competing]
    won = resolve_cell_conflicts(c_obj, c_cell, image[c_obj], u[c_obj, c_cell], n)
    c_obj, c_cell = c_obj[won], c_cell[won]
    won_aligned = align[c_obj, c_cell] > 0
    obj = torch.cat((obj[~contested], c_obj[won_aligned]))
    cell = torch.cat((cell[~contested], c_cell[won_aligned]))
    order = (image[obj] * n + cell).argsort()
    return obj[order], cell[order]


@torch.no_grad()
def soft_targets(obj: torch.Tensor, t: torch.Tensor, u: torch.Tensor, nt: int, eps: float = TAL_EPS) -> torch.Tensor:
    """Step 5: ``t * max(u) / (max(t) + eps)`` per positive, maxima over its object's positives (p,)."""
    max_t = torch.zeros(nt, device=t.device).scatter_reduce(0, obj, t, "amax")
    max_u = torch.zeros(nt, device=t.device).scatter_reduce(0, obj, u, "amax")
    return t * max_u[obj] / (max_t[obj] + eps)


@torch.no_grad()
def tal_assign(targets: torch.Tensor, grid_shapes: list[tuple[int, int]], strides: list[float] | torch.Tensor,
               img_hw: tuple[int, int], predict: PairPredictor, bs: int, topk: int = 10,
               alpha: float = 0.5, beta: float = 6.0) -> list[LevelCandidates]:
    """Task-aligned positives of every level of the anchor-free head (see the module docstring).

    Args:
        targets (Tensor[nt, 6]): ``[image, class, x, y, w, h]``, xywh normalised 0..1 of the image.
        grid_shapes: ``(ny, nx)`` of each level; strides: pixels per cell of each level.
        img_hw: (height, width) of the (letterboxed) input image in pixels.
        predict: the predicted class score (sigmoid) and decoded box (pixels) at given (image, cell,
            class) pairs, cells numbered level by level in raster order (:func:`dense_predictor` for
            dense tensors).
        bs: images in the batch.
        topk, alpha, beta: positives per object and the exponents of ``t = s^alpha * u^beta``.

    Returns:
        one :class:`LevelCandidates` per level, one row per positive, ordered by image, then cell;
        ``anchor`` 0, ``anchor_wh`` 0 (no prior box), ``weight`` the soft target (step 5).
    """
    gen = PriorGenerator(torch.tensor([float(s) for s in strides]))
    priors = HeadPriors("dfl", gen.levels(list(grid_shapes), targets.device), gen)
    rule = TALRule({"tal_topk": topk, "tal_alpha": alpha, "tal_beta": beta})
    return rule.match(priors, predict, Targets.of_size(targets, img_hw, bs)).levels


@dataclasses.dataclass(frozen=True)
class TALHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"tal_topk": POSITIVE, **dict.fromkeys(("tal_alpha", "tal_beta"), NON_NEGATIVE)}

    tal_topk: int = 10  # task-aligned positives per object (YOLOv8 10; TOOD 13)
    tal_alpha: float = 0.5  # exponent of the class score in t = s^alpha * u^beta (YOLOv8 0.5; TOOD 1.0)
    tal_beta: float = 6.0  # exponent of the CIoU (YOLOv8 and TOOD 6.0)


class TALRule(AssignRule):
    """``assigner: tal``: task-aligned positives with their soft targets in ``weight``. On the anchor
    head every anchor of a cell inside the object is a candidate and ``s`` is the joint probability
    ``sigmoid(cls) * sigmoid(obj)`` (:class:`utils.assign.view.AnchorView`)."""

    name = "tal"
    Hyp = TALHyp
    reads_predictions = True

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: PredictionView, targets: Targets) -> AssignResult:
        return self.match(priors, view.pair, targets)

    def match(self, priors: HeadPriors, predict: PairPredictor, targets: Targets) -> AssignResult:
        """The rule with the predictions read through ``predict`` (image, prior, class) -> (score, box px)."""
        if len(targets) == 0:
            return self.empty(priors, targets)
        h = self.hyp
        pairs, align, u = alignment(targets, priors, predict, h.tal_alpha, h.tal_beta)
        obj, prior = select_positives(targets.image, pairs, align, u, h.tal_topk, targets.bs)
        weight = soft_targets(obj, align[obj, prior], u[obj, prior], len(targets))
        anchor_wh = None if priors.kind == "anchor" else 0.0
        return AssignResult(level_rows(obj, prior, targets, priors, weight, anchor_wh), len(targets))
