"""SimOTA dynamic-k matching (YOLOX), batched over images with padding, as YOLOv7's OTA uses it.

Every image has its own small matching problem: its targets (rows) against its C candidate
predictions (columns). All targets of the batch are stacked as rows of one ``(n, C)`` matrix, each
row holding its own image's columns padded to the widest image (``col_valid (B, C)`` marks the real
column slots), so one call solves all images without a Python loop over images or targets, and
without padded target rows.

Worked example, one image, two targets, three columns, IoU rows ``t0 = [0.9, 0.8, 0.0]`` and
``t1 = [0.0, 0.7, 0.6]``: dynamic k = ``max(1, int(sum of the top-10 IoUs))`` gives k0 = int(1.7) = 1
and k1 = int(1.3) = 1. Each target takes its k cheapest columns: t0 takes column 0 if its cost is
lowest there, t1 column 2 or 1. A column taken by both targets goes to the target with the lower
cost on it (over all targets of the image, as YOLOv7 takes ``min`` over the whole cost column).
Columns nobody takes are negatives.

Ties: among columns of exactly equal cost a target prefers the lower column index.
YOLOv7 leaves the order to ``torch.topk``, which does not define it; exact ties come from one cell
offered twice (two targets' neighbour cells coincide), whose rows are then identical anyway.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F

from models.geometry import CELL_CENTRE
from utils.assign.centre_prior import cells_inside_boxes
from utils.assign.common import cheapest_first, group_spans, slots_in_groups  # noqa: F401  (importable here)
from utils.assign.params import NON_NEGATIVE, POSITIVE, HypParams
from utils.assign.result import AssignResult, LevelCandidates
from utils.assign.rule import AssignRule, HeadPriors, level_rows
from utils.assign.targets import Targets
from utils.assign.view import PredictionView
from utils.assign.yolo_candidates import yolo_candidates


@torch.no_grad()
def row_iou(boxes_xyxy: torch.Tensor, columns_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of each box with its own row of columns: ``(n, 4)`` x ``(n, 4, C)`` -> ``(n, C)``.

    Row r of ``columns_xyxy`` holds x1, y1, x2, y2 of the C columns of box r's image. Same formula
    as torchvision's ``box_iou`` (no epsilon): inter / (area1 + area2 - inter).
    """
    x1, y1, x2, y2 = boxes_xyxy[:, :, None].unbind(1)  # 4 x (n, 1)
    cx1, cy1, cx2, cy2 = columns_xyxy.unbind(1)  # 4 x (n, C)
    area1 = (x2 - x1) * (y2 - y1)
    area2 = (cx2 - cx1).mul_(cy2 - cy1)
    inter = torch.minimum(cx2, x2).sub_(torch.maximum(cx1, x1)).clamp_(0)
    inter.mul_(torch.minimum(cy2, y2).sub_(torch.maximum(cy1, y1)).clamp_(0))
    return inter.div_(area2.add_(area1).sub_(inter))  # inter / (area1 + area2 - inter)


@torch.no_grad()
def class_cost_table(cls_logits: torch.Tensor, obj_logits: torch.Tensor) -> torch.Tensor:
    """YOLOv7's class cost of every column for every class, without a (targets x columns x classes) tensor.

    The score is ``y = sqrt(sigmoid(cls) * sigmoid(obj))``; see :func:`class_cost_of_scores`.

    Args:
        cls_logits (Tensor[N, nc]); obj_logits (Tensor[N]).

    Returns:
        Tensor[N, nc]: entry (n, t) = class cost of column n for a target of class t.
    """
    return class_cost_of_scores(cls_logits.float().sigmoid().mul_(obj_logits.float().sigmoid()[:, None]).sqrt_())


@torch.no_grad()
def class_cost_of_scores(y: torch.Tensor) -> torch.Tensor:
    """Class cost table (N, nc) of scores ``y`` (Tensor[N, nc] float32 in [0, 1], overwritten).

    The cost for a target of class t is ``sum_c BCE(y_c, onehot_c) = sum_c BCE(y_c, 0) + [BCE(y_t, 1) -
    BCE(y_t, 0)] = -sum_c log(1 - y_c) - log(y_t) + log(1 - y_t)``: one row per column, one entry per
    class, so a (target, column) pair costs one look-up. ``y`` is kept inside (0, 1) so saturated logits
    give large finite costs (YOLOv7's ``log(y / (1 - y))`` gives inf or NaN there).
    """
    table = torch.log1p(torch.neg(y).clamp_(min=-(1.0 - 2.0 ** -24)))  # log(1 - y)
    log_1my_sum = table.sum(1, keepdim=True)
    return table.sub_(y.clamp_(min=torch.finfo(torch.float32).tiny).log_()).sub_(log_1my_sum)


@torch.no_grad()
def dynamic_k(iou: torch.Tensor, topk: int = 10) -> torch.Tensor:
    """``max(1, int(sum of the topk largest IoUs))`` per row: ``(..., C)`` -> ``(...)`` long.

    Padded columns must hold IoU 0; fewer than ``topk`` columns sum all of them, as YOLOv7's
    ``topk(min(10, n))`` does.
    """
    if iou.shape[-1] < topk:
        iou = F.pad(iou, (0, topk - iou.shape[-1]))
    return iou.topk(topk, dim=-1).values.sum(-1).int().clamp(min=1).long()


@torch.no_grad()
def _claims(cost: torch.Tensor, iou: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every column a row takes: its dynamic-k cheapest, ``(n, C)`` -> 2 x (M,).

    Row by row, so a matrix cut into row chunks gives the same pairs chunk by chunk."""
    k = dynamic_k(iou, topk)  # (n,), each <= topk
    kk = min(int(k.max()), cost.shape[1])  # one sync per call; top-k costs grow with k
    order = cheapest_first(cost, kk)  # (n, kk)
    ri, ji = (torch.arange(kk, device=cost.device) < k[:, None]).nonzero(as_tuple=True)  # selected (row, rank)
    return ri, order[ri, ji]


@torch.no_grad()
def simota_match(cost: torch.Tensor, iou: torch.Tensor, row_image: torch.Tensor, col_valid: torch.Tensor,
                 topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA's dynamic-k matching for a batch of images, one row per real target.

    Row r is a target of image ``row_image[r]`` against that image's columns (padded to the widest
    image), so no work is spent on padded targets.

    Args:
        cost (Tensor[n, C]): matching cost (>= 0) of target row r and column slot c of its image;
            must be +inf at padded columns.
        iou (Tensor[n, C]): IoU of the same pairs, for the dynamic k; must be 0 at padded columns.
        row_image (Tensor[n] long): image of each row, ascending (rows of an image are contiguous).
        col_valid (Tensor[B, C] bool): real (unpadded) column slots of each image.
        topk: how many of a target's largest IoUs are summed for its k.

    Returns:
        matched (Tensor[B, C] long): the row each column goes to (meaningful where ``fg``);
        fg (Tensor[B, C] bool): columns that became positives.
    """
    n, c = cost.shape
    b = col_valid.shape[0]
    dev = cost.device
    matched = torch.zeros((b, c), dtype=torch.long, device=dev)
    if n == 0 or c == 0:
        return matched, torch.zeros((b, c), dtype=torch.bool, device=dev)
    ri, ci = _claims(cost, iou, topk)
    bi = row_image[ri]
    ok = col_valid[bi, ci]  # an image without columns still has k = 1
    ri, bi, ci = ri[ok], bi[ok], ci[ok]
    count = torch.zeros((b, c), dtype=torch.long, device=dev).index_put_((bi, ci), torch.ones_like(ci),
                                                                          accumulate=True)
    matched[bi, ci] = ri
    # a column claimed by several targets goes to the cheapest target of the image (all targets, not
    # only the claimants, as YOLOv7 takes the minimum over the whole cost column)
    mb, mc = (count > 1).nonzero(as_tuple=True)
    if len(mb):
        rows_per_image, first = group_spans(row_image, b)
        g = torch.arange(int(rows_per_image.max()), device=dev)
        rows = first[mb, None] + g  # (M, G): the rows of each conflict's image
        costs = cost[rows.clamp(max=n - 1), mc[:, None]].masked_fill(g >= rows_per_image[mb, None], float("inf"))
        matched[mb, mc] = rows.gather(1, costs.argmin(1, keepdim=True))[:, 0]
    return matched, count > 0


@torch.no_grad()
def simota_match_rows(chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], col_valid: torch.Tensor,
                      topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``simota_match`` for one image whose matrices come in consecutive row chunks, so memory is that
    of one chunk however many targets the image holds (3,000 boxes: ~4 GB as one matrix).

    Args:
        chunks: yields (cost (Tensor[q, C]), iou (Tensor[q, C])) for rows 0..q-1, q..., as ``simota_match``
            takes them (cost +inf and IoU 0 at padded columns).
        col_valid (Tensor[C] bool): real column slots.

    Returns:
        matched (Tensor[C] long), fg (Tensor[C] bool), equal to ``simota_match`` on the whole matrix: a
        column claimed twice goes to the row of lowest cost among all rows, the first such row on ties.
    """
    c = col_valid.shape[0]
    dev = col_valid.device
    count = torch.zeros(c, dtype=torch.long, device=dev)
    matched = torch.zeros(c, dtype=torch.long, device=dev)
    best_cost = torch.full((c,), float("inf"), device=dev)
    best_row = torch.zeros(c, dtype=torch.long, device=dev)
    r0 = 0
    for cost, iou in chunks:
        ri, ci = _claims(cost, iou, topk)
        ok = col_valid[ci]
        ri, ci = ri[ok], ci[ok]
        count.index_add_(0, ci, torch.ones_like(ci))
        matched[ci] = ri + r0
        chunk_row = cost.argmin(0)  # first row of the lowest cost, as simota_match's argmin
        chunk_cost = cost.gather(0, chunk_row[None])[0]
        better = chunk_cost < best_cost  # strict: an earlier chunk wins a tie
        best_cost = torch.where(better, chunk_cost, best_cost)
        best_row = torch.where(better, chunk_row + r0, best_row)
        r0 += cost.shape[0]
    return torch.where(count > 1, best_row, matched), count > 0


@dataclasses.dataclass(frozen=True)
class SimOTAHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"anchor_t": POSITIVE, "ota_iou_weight": NON_NEGATIVE, "ota_radius": POSITIVE}

    anchor_t: float = 4.0  # anchor head: candidates are YOLOv5's (w/h ratio < anchor_t, own + 2 neighbour cells)
    ota_topk: int = 10  # IoUs summed for a target's dynamic k (YOLOv7 / YOLOX 10)
    ota_iou_weight: float = 3.0  # weight of -log(IoU) against the class cost (YOLOv7 / YOLOX 3.0)
    ota_radius: float = 2.5  # dfl head: centre region of a target, in strides (YOLOX 2.5)

    def __post_init__(self) -> None:
        if self.ota_topk < 1:
            raise ValueError(f"hyp key 'ota_topk' must be >= 1, got {self.ota_topk}")


@dataclasses.dataclass
class Columns:
    """The candidate predictions of a batch, sorted by image: the columns of every image's matrix."""

    image: torch.Tensor  # (N,) long
    prior: torch.Tensor  # (N,) long, global prior index
    boxes_xyxy_px: torch.Tensor  # (4, N) decoded predictions: x1, y1, x2, y2 rows
    scores: torch.Tensor  # (N, nc) the score y of the class cost (class_cost_of_scores)
    centre_px: torch.Tensor | None = None  # (N, 2) prior centres where the geometry enters the cost (dfl head)
    radius_px: torch.Tensor | None = None  # (N,) half side of a target's centre region at the column's level


class SimOTARule(AssignRule):
    """``assigner: simota``: SimOTA's dynamic-k matching on the current predictions.

    Candidates (columns): on the anchor head YOLOv5's rows (:func:`utils.assign.yolo_candidates.
    yolo_candidates`, YOLOv7's ``find_3_positive``; a cell offered twice is two columns, as in YOLOv7);
    on the dfl head every cell whose centre lies inside a target or within ``ota_radius`` strides of its
    centre (YOLOX), once per image. Cost = class BCE of ``y = sqrt(joint class probability)`` against
    the one-hot + ``ota_iou_weight * -log(IoU + 1e-8)`` (+ 1e5 on the dfl head where the cell centre is
    not both inside the target and in its centre region, YOLOX). Each target keeps its dynamic-k
    cheapest columns; a column claimed twice goes to the cheaper target. A column's row keeps its own
    prior and takes the matched target's class and box. On the anchor head this is YOLOv7's
    ComputeLossOTA assignment exactly (``loss: ota``); see utils/loss/ota.py for its deviations.

    ``max_pair_elems`` bounds the (targets x columns) tensors of one group of images (or one chunk of an
    image's targets); results do not depend on it.
    """

    name = "simota"
    Hyp = SimOTAHyp
    reads_predictions = True
    max_pair_elems: int = 2 ** 21

    @torch.no_grad()
    def __call__(self, priors: HeadPriors, view: PredictionView, targets: Targets) -> AssignResult:
        if priors.kind == "anchor":
            cands = yolo_candidates(targets.normalised, priors.anchors_grid.to(targets.normalised.device),
                                    priors.grid_shapes, self.hyp.anchor_t)
            if sum(len(m) for m in cands) == 0:
                return AssignResult(cands, len(targets))
            cols = self._anchor_columns(priors, view, cands)
        else:
            if len(targets) == 0:
                return self.empty(priors, targets)
            cols = self._centre_columns(priors, view, targets)
        matched_target, fg = self._match(cols, targets)
        pos = fg.nonzero()[:, 0]
        level = priors.locate(cols.prior[pos])[0]
        pos = pos[torch.sort(level, stable=True).indices]  # by level, then image and candidate order
        return AssignResult(level_rows(matched_target[pos], cols.prior[pos], targets, priors), len(targets))

    @staticmethod
    def _anchor_columns(priors: HeadPriors, view: PredictionView, cands: list[LevelCandidates]) -> Columns:
        """YOLOv5's candidate rows of every level as columns, sorted by image (stable)."""
        image = torch.cat([c.image for c in cands])
        prior = torch.cat([lv.start + (c.anchor * lv.ny + c.gj) * lv.nx + c.gi for c, lv in zip(cands, priors.levels)])
        order = torch.sort(image, stable=True).indices
        image, prior = image[order], prior[order]
        rows = view.rows(image, prior)
        return Columns(image, prior, view.boxes_xyxy_px(rows, prior).T, view.class_probs(rows).sqrt_())

    def _centre_columns(self, priors: HeadPriors, view: PredictionView, targets: Targets) -> Columns:
        """YOLOX's candidates: cells inside a target or its centre region, once per (image, cell)."""
        r = self.hyp.ota_radius
        keys = []
        for lv in priors.levels:
            box = targets.xyxy_px / lv.stride  # (n, 4) grid units
            centre = (box[:, :2] + box[:, 2:]) / 2
            hull = torch.cat((torch.minimum(box[:, :2], centre - r), torch.maximum(box[:, 2:], centre + r)), 1)
            obj, gj, gi = cells_inside_boxes(hull, (lv.ny, lv.nx))
            c = torch.stack((gi, gj), 1).float() + CELL_CENTRE  # the hull's corners are in neither region
            keep = (((c > box[obj, :2]) & (c < box[obj, 2:])).all(1) | ((c - centre[obj]).abs() < r).all(1))
            obj, gj, gi = obj[keep], gj[keep], gi[keep]
            keys.append(targets.image[obj] * priors.count + lv.start + gj * lv.nx + gi)
        key = torch.unique(torch.cat(keys))  # sorted: by image, then prior
        image, prior = key // priors.count, key % priors.count
        rows = view.rows(image, prior)
        level, _, gj, gi = priors.locate(prior)
        stride = torch.tensor(priors.strides, device=key.device)[level, None]
        centre = (torch.stack((gi, gj), 1).float() + CELL_CENTRE) * stride
        return Columns(image, prior, view.boxes_xyxy_px(rows, prior).T, view.class_probs(rows).sqrt_(), centre,
                       r * stride[:, 0])

    def _match(self, cols: Columns, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """SimOTA per image: one row per target against its image's columns, padded to the widest image.

        Returns, per column (in ``cols`` order): the row of its matched target and whether it is positive.
        """
        dev, bs, h = targets.normalised.device, targets.bs, self.hyp
        col_slot, col_counts = slots_in_groups(cols.image, bs)
        n_c, nc = int(col_counts.max()), cols.scores.shape[1]
        col_valid = torch.arange(n_c, device=dev) < col_counts[:, None]  # (B, C)
        # per image, padded column slots: boxes far outside the image (IoU 0) and +inf class cost,
        # laid out so that a target's row of either is one contiguous copy
        c_boxes = torch.tensor([[-2e4], [-2e4], [-1e4], [-1e4]], device=dev).repeat(bs, 1, n_c)
        c_boxes[cols.image, :, col_slot] = cols.boxes_xyxy_px.T  # (B, 4, C)
        c_cost = torch.full((bs, nc, n_c), float("inf"), device=dev)
        c_cost[cols.image, :, col_slot] = class_cost_of_scores(cols.scores)  # (B, nc, C)
        c_cost = c_cost.view(bs * nc, n_c)
        c_centre = c_radius = None
        if cols.centre_px is not None:  # padded slots: far outside every box
            c_centre = torch.full((bs, n_c, 2), -1e4, device=dev)
            c_centre[cols.image, col_slot] = cols.centre_px
            c_radius = torch.zeros((bs, n_c), device=dev)
            c_radius[cols.image, col_slot] = cols.radius_px

        t_order = torch.sort(targets.image, stable=True).indices  # rows of an image contiguous
        t_image = targets.image[t_order]
        t_boxes = targets.xyxy_px[t_order]  # (n, 4) px
        t_cost_row = t_image * nc + targets.cls[t_order]  # row of c_cost

        def pairs(r0: int, r1: int) -> tuple[torch.Tensor, torch.Tensor]:
            """(cost, iou) of target rows [r0, r1) against their images' columns, each (r1 - r0, C)."""
            iou = row_iou(t_boxes[r0:r1], c_boxes.index_select(0, t_image[r0:r1]))
            cost = c_cost.index_select(0, t_cost_row[r0:r1])  # class cost of each pair
            cost = cost.add_(iou.add(1e-8).log_(), alpha=-h.ota_iou_weight)
            if c_centre is not None:
                im = t_image[r0:r1]
                cost += 1e5 * ~in_box_and_centre(t_boxes[r0:r1], c_centre.index_select(0, im), c_radius.index_select(0, im))
            return cost, iou

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


def in_box_and_centre(boxes_xyxy_px: torch.Tensor, centres_px: torch.Tensor, radius_px: torch.Tensor) -> torch.Tensor:
    """(q, C) bool: column centre ``centres_px`` (q, C, 2) strictly inside box r (``boxes_xyxy_px`` (q, 4))
    and within ``radius_px`` (q, C) of the box centre on both axes (YOLOX's ``is_in_boxes_and_center``)."""
    inside = ((centres_px > boxes_xyxy_px[:, None, :2]) & (centres_px < boxes_xyxy_px[:, None, 2:])).all(-1)
    centre = (boxes_xyxy_px[:, None, :2] + boxes_xyxy_px[:, None, 2:]) / 2
    return inside & ((centres_px - centre).abs() < radius_px[..., None]).all(-1)
