"""FreeAnchor's matching (Zhang et al., NeurIPS 2019) on the YOLOv5 anchor head: bags and matched pairs.

Pure, no-grad units used by :class:`utils.loss.freeanchor.ComputeLossFreeAnchor`.

1. Bags (:func:`anchor_bags`): every object's bag is the ``k`` anchor boxes (cell centre + anchor
   w, h, all levels together, :class:`models.geometry.PriorGenerator`) with the highest IoU with
   the object. Equal IoUs go to the lower prior index, so a bag is the same on every device.
2. Matched pairs (:func:`matched_class_prob`): ``P(j -> i)``, FreeAnchor's saturated-linear function
   of the IoU between anchor j's decoded prediction and object i; per (image, anchor, class) its max
   over the objects of that class, ``B``. Only pairs whose prediction can reach the threshold are
   decoded (:func:`reachable_pairs`).

Worked example (the test's): one level of stride 8 on a 32x32 image (4x4 cells), one anchor of
2x2 cells (16x16 px), one object 16x16 px centred at (16, 16), on the corner shared by cells
(1, 1), (2, 1), (1, 2), (2, 2). Those four anchor boxes (centres 12 or 20) overlap it 12x12 px: IoU
144 / (256 + 256 - 144) = 0.391; the next ring (centres 4 or 28 on one axis) 4x12 px: IoU 0.103;
the corners 4x4 px: IoU 0.031. A bag of 6 is priors 5, 6, 9, 10 (row-major ``gj * 4 + gi``), then the
lowest-index two of the eight with IoU 0.103: 1 and 2.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from models.geometry import AnchorPriors, LevelPriors, YOLOBoxCoder
from utils.assign.centre_prior import cells_in_ranges
from utils.assign.common import highest_first
from utils.assign.params import POSITIVE, HypParams
from utils.assign.result import BAG_MEMBER_ROW, AssignResult
from utils.assign.rule import AssignRule, HeadPriors, level_rows
from utils.assign.targets import Targets
from utils.boxes import xywh2xyxy


@dataclasses.dataclass
class Bags:
    """The objects of a batch and their bags."""

    image: torch.Tensor  # (nt,) long
    cls: torch.Tensor  # (nt,) long
    box_xywh_px: torch.Tensor  # (nt, 4)
    member: torch.Tensor  # (nt, k) long, prior index, highest prior IoU first


@torch.no_grad()
def decode_xyxy(box_logits: torch.Tensor, pri: AnchorPriors, prior: torch.Tensor | None = None) -> torch.Tensor:
    """YOLOv5 decode of box logits at their priors -> x1y1x2y2 pixels: (bs, m, 4) for every prior,
    or (n, 4) rows at the priors ``prior`` (LongTensor[n])."""
    if prior is None:
        return xywh2xyxy(YOLOBoxCoder.decode(box_logits, pri.xywh_px[:, 2:], pri.cell_xy, pri.stride_px[:, None]))
    return xywh2xyxy(YOLOBoxCoder.decode(box_logits, pri.xywh_px[prior, 2:], pri.cell_xy[prior],
                                         pri.stride_px[prior, None]))


def paired_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of row-aligned x1y1x2y2 boxes: a, b (Tensor[n, 4]) -> (Tensor[n])."""
    a, b = a.T.contiguous(), b.T.contiguous()  # (4, n): contiguous columns are much faster on CPU
    iw = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp_(min=0)
    ih = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp_(min=0)
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter + eps)


@torch.no_grad()
def prior_iou(box_xywh_px: torch.Tensor, levels: list[LevelPriors], eps: float = 1e-7) -> torch.Tensor:
    """(n, m) IoU of objects (Tensor[n, 4] xywh px) with every prior box, all levels in prior order.

    A prior's x-overlap with an object depends only on its column and anchor, the y-overlap only on
    its row and anchor, so both are computed per axis, (n, na, nx) and (n, na, ny), and only their
    product and the IoU division touch all (object, prior) pairs.
    """
    g = box_xywh_px.T.contiguous()  # (4, n)
    out = []
    for lv in levels:
        cx, cy = lv.centres_px(g.device)
        aw, ah = lv.anchor_wh_px.unbind(1)  # (na,)
        iw = torch.minimum(((g[2, :, None, None] + aw[:, None]) / 2 - (g[0, :, None, None] - cx).abs()).clamp_(min=0),
                           torch.minimum(g[2, :, None, None], aw[:, None]))  # (n, na, nx)
        ih = torch.minimum(((g[3, :, None, None] + ah[:, None]) / 2 - (g[1, :, None, None] - cy).abs()).clamp_(min=0),
                           torch.minimum(g[3, :, None, None], ah[:, None]))  # (n, na, ny)
        inter = ih[..., :, None] * iw[..., None, :]  # (n, na, ny, nx)
        area = (g[2] * g[3])[:, None] + aw * ah  # (n, na)
        iou = inter.div_(torch.sub(area[..., None, None], inter).add_(eps))
        out.append(iou.flatten(1))
    return torch.cat(out, 1)


@torch.no_grad()
def reachable_pairs(box_xywh_px: torch.Tensor, levels: list[LevelPriors], thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(object, prior) pairs whose prediction can overlap the object with IoU above ``thr``.

    Under the YOLOv5 decode a prediction's centre lies within one stride of its prior's centre and
    its width ``wa`` in (0, 4 anchor w). IoU > t needs, per axis (x shown; IoU <= iw / wg and
    IoU <= iw / wa, iw the overlap width): ``wa >= t wg`` (so ``4 aw >= t wg``) and
    ``|dx| <= (wa + wg) / 2 - t max(wa, wg) <= (1 - t) max(wa, wg)``, with
    ``max(wa, wg) <= min(max(4 aw, wg), wg / t)``; plus plain overlap ``|dx| < wa / 2 + wg / 2``.
    Every pair outside those per-axis bounds has IoU <= ``thr`` whatever the head predicts.

    Returns:
        ``(obj, prior)`` LongTensors, level by level.
    """
    g = box_xywh_px.T.contiguous()  # (4, n)
    t = max(thr, 0.0)
    obj, prior = [], []
    for lv in levels:
        na, anchor_wh = lv.na, lv.anchor_wh_px
        lo, hi, ok = [], [], torch.ones((len(g[0]), na), dtype=torch.bool, device=g.device)
        for centre, size, a, cells in ((g[0], g[2], anchor_wh[:, 0], lv.nx), (g[1], g[3], anchor_wh[:, 1], lv.ny)):
            size, a4 = size[:, None], 4 * a[None]  # (n, 1), (1, na)
            reach = torch.minimum(a4 / 2 + size / 2, (1 - t) * torch.minimum(torch.maximum(a4, size), size / max(t, 1e-9)))
            reach = reach * (1 + 1e-5) + lv.stride + 1e-3  # (n, na), slack for rounding
            ok &= a4 * (1 + 1e-5) >= t * size
            # cell centres (i + 0.5) * stride within centre -+ reach
            lo.append(torch.ceil((centre[:, None] - reach) / lv.stride - 0.5).clamp_(min=0).long())
            hi.append(torch.floor((centre[:, None] + reach) / lv.stride - 0.5).clamp_(max=cells - 1).long())
        lo, hi = torch.stack(lo, -1), torch.stack(hi, -1)  # (n, na, 2) as (gi, gj)
        hi[~ok] = -1
        pair, gj, gi = cells_in_ranges(lo.view(-1, 2), hi.view(-1, 2))  # pair = object * na + anchor
        obj.append(pair // na)
        prior.append(lv.start + ((pair % na) * lv.ny + gj) * lv.nx + gi)
    if not obj:
        return (torch.zeros(0, dtype=torch.long, device=g.device),) * 2
    return torch.cat(obj), torch.cat(prior)


def saturated_linear(iou: torch.Tensor, thr: float = 0.6, best: torch.Tensor | None = None) -> torch.Tensor:
    """FreeAnchor's P(anchor j -> object i) from the IoU of j's predicted box with object i.

    Per object (row): 0 at or below ``thr``, 1 at the object's best IoU, linear in between, i.e.
    ``clamp((iou - thr) / (max_j iou - thr), 0, 1)``. A row whose best IoU is not above ``thr`` is all
    0 (the reference divides by a clamped 1e-12 there, which gives 0 below ``thr`` and 0/0 at it).

    Args:
        iou (Tensor[n_obj, n_anchor]).
        best: the objects' best IoU broadcastable to ``iou`` (default: the row maximum); given when
            ``iou`` holds only some (object, anchor) pairs, e.g. a flat (pairs,) tensor.

    Returns:
        Tensor shaped like ``iou``, in [0, 1].
    """
    if iou.shape[-1] == 0:
        return iou.clone()
    if best is None:
        best = iou.max(dim=-1, keepdim=True).values  # (n_obj, 1)
    span = (best - thr).clamp(min=torch.finfo(iou.dtype).tiny)
    return torch.where(best > thr, ((iou - thr) / span).clamp(0.0, 1.0), torch.zeros_like(iou))


@torch.no_grad()
def anchor_bags(box_xywh_px: torch.Tensor, levels: list[LevelPriors], k: int,
                max_pair_elems: int = 1 << 22) -> torch.Tensor:
    """Every object's bag: the ``k`` priors with the highest IoU with it, highest first.

    Args:
        box_xywh_px (Tensor[n, 4]): objects, xywh pixels.
        levels: the head's levels for this input shape (:meth:`PriorGenerator.levels`).
        k: bag size (at most the number of priors).
        max_pair_elems: objects x priors per chunk of the IoU matrix (memory bound; no effect on the result).

    Returns:
        LongTensor[n, k]: prior indices (level by level, (anchor, row, column) within a level).
    """
    m = sum(lv.na * lv.ny * lv.nx for lv in levels)
    member = torch.zeros((len(box_xywh_px), k), dtype=torch.long, device=box_xywh_px.device)
    step = max(1, max_pair_elems // max(m, 1))
    for s in range(0, len(box_xywh_px), step):
        member[s:s + step] = highest_first(prior_iou(box_xywh_px[s:s + step], levels), k)
    return member


@torch.no_grad()
def matched_class_prob(box_logits: torch.Tensor, pri: AnchorPriors, levels: list[LevelPriors], bags: Bags,
                       nc: int, thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The nonzero entries of B (image, prior, class) = max over objects of that class of P(j -> i).

    P(j -> i) is :func:`saturated_linear` of the IoU of j's decoded
    prediction with i. Only (object, prior) pairs whose prediction can reach IoU > ``thr`` under the
    YOLOv5 decode are decoded (see :func:`reachable_pairs`); the others are 0 in the dense formula
    too, so the result is the same.

    Args:
        box_logits (Tensor[bs, m, 4]): every prediction's box logits.
        pri: the anchor boxes of this input shape; levels: the same levels.
        bags: the objects (their image, class and box; the members are not used).
        nc: classes; thr: FreeAnchor's IoU threshold.

    Returns:
        flat indices into ``(bs, m, nc)`` (unique, ascending) and their values.
    """
    m = box_logits.shape[1]
    obj, prior = reachable_pairs(bags.box_xywh_px, levels, thr)
    logits = box_logits.reshape(-1, 4).index_select(0, bags.image[obj] * m + prior)  # (pairs, 4)
    pred = decode_xyxy(logits, pri, prior)  # only the pairs are decoded
    iou = paired_iou(pred, xywh2xyxy(bags.box_xywh_px)[obj])  # (pairs,)
    best = iou.new_full((len(bags.image),), -1.0).scatter_reduce(0, obj, iou, reduce="amax")
    prob = saturated_linear(iou, thr, best=best[obj])
    keep = prob > 0
    keys = (bags.image[obj[keep]] * m + prior[keep]) * nc + bags.cls[obj[keep]]
    unique, inverse = keys.unique(return_inverse=True)
    values = prob.new_zeros(len(unique)).scatter_reduce(0, inverse, prob[keep], reduce="amax")
    return unique, values


@dataclasses.dataclass(frozen=True)
class BagHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"fa_bag_size": POSITIVE}

    fa_bag_size: int = 9  # priors per object bag, highest IoU first, all levels (FreeAnchor 50 with 9 anchors)


class BagRule(AssignRule):
    """``assigner: freeanchor``: every object's bag, the ``fa_bag_size`` anchor boxes (cell centre +
    anchor w, h) with the highest IoU with it over all levels (:func:`anchor_bags`), rows ordered by
    object then IoU. The ``freeanchor`` loss weighs the members by its likelihoods."""

    name = "freeanchor"
    heads = ("anchor",)
    Hyp = BagHyp
    row_kind = BAG_MEMBER_ROW
    max_pair_elems = 1 << 22  # objects x priors per chunk of the pairwise IoU tensors

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: object, targets: Targets) -> AssignResult:
        k = min(self.hyp.fa_bag_size, priors.count)
        member = anchor_bags(targets.xywh_px, priors.levels, k, self.max_pair_elems)  # (nt, k)
        obj = torch.arange(len(targets), device=member.device).repeat_interleave(k)
        prior = member.reshape(-1)
        order = torch.sort(priors.locate(prior)[0], stable=True).indices  # by level, then object and rank
        return AssignResult(level_rows(obj[order], prior[order], targets, priors), len(targets), row_kind=self.row_kind)
