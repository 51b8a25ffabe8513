"""Where SSD matching and hard-negative mining put their weight, per class (the ``ssd`` seed-collapse study).

For every object: how many positives SSD matching gives it, whether only the forced best-anchor
rule matched it (no anchor box at IoU >= ``ssd_iou_thr``), and the objectness target its positives
get under ``ssd_obj_iou`` (the CIoU of the decoded prediction, clamped at 0). For every image: the
hard negatives the loss mines from the given predictions, and how many of them lie at IoU >= ``near``
with some object (anchors one cell or one scale away from a positive), counted for that object's class.
And the objectness the model gives its positives, the mined negatives and all other anchors: when an
image holds at least ``ratio`` times as many negatives that look like its positives (crowded scenes,
unlabelled objects), mining keeps finding them and the loss is minimised by one value for all of them,
``target / (1 + ratio)`` — a model stuck there ranks positives no higher than background.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import torch

from utils.assign.targets import Targets
from utils.boxes import bbox_iou, box_iou
from utils.loss.functional import bce_with_logits, hard_negative_mask


@torch.no_grad()
def ssd_batch_stats(loss, raw: list[torch.Tensor], targets: torch.Tensor, imgs: torch.Tensor,
                    names: list[str], near: float = 0.3) -> dict[str, Counter]:
    """Per-class counters for one batch.

    Args:
        loss: a ``ComputeLossSSD`` on its own matching (``assigner: max_iou``, whose ``ssd_iou_thr``
            says which objects were forced onto their best anchor); raw: its head's outputs, one (bs, na, ny, nx, 5 + nc) per level;
        targets (Tensor[n, 6]): ``[image, class, x, y, w, h]`` normalised; imgs (Tensor[bs, 3, H, W]).

    Returns:
        class name -> Counter with ``objects``, ``positives``, ``forced_only``, ``target_sum`` (sum of
        the IoU objectness targets at its positives), ``obj_sum`` (sum of sigmoid(obj) at its positives),
        ``near_hard_negatives``; key ``"all"`` holds ``hard_negatives``, ``positives``, ``mined_obj_sum``
        (sigmoid(obj) summed over the mined negatives), ``others`` and ``others_obj_sum`` (the anchors
        neither positive nor mined) of the batch.
    """
    iou_thr = getattr(loss.rule.hyp, "ssd_iou_thr", None)
    if iou_thr is None:
        raise ValueError(f"ssd_stats reads SSD's own matching (assigner: max_iou); this loss uses "
                         f"'{loss.hyp.assigner}'")
    res = loss.assign(raw, targets, imgs)
    bs = imgs.shape[0]
    pri = loss.anchor_boxes([(p.shape[2], p.shape[3]) for p in raw], imgs.device)
    t = Targets.build(targets, imgs)  # the objects in pixels, as every rule reads them
    gt, image_of, cls = t.xyxy_px, t.image, t.cls
    n_pos, t_sum, o_sum = torch.zeros(len(targets)), torch.zeros(len(targets)), torch.zeros(len(targets))
    positive = torch.zeros(bs, len(pri), dtype=torch.bool)  # prior order = each level's (a, gj, gi), levels in turn
    offset = 0
    for p, lv in zip(raw, res):
        na, ny, nx = p.shape[1:4]
        if len(lv):
            pbox = loss.box_coder.decode(p[lv.image, lv.anchor, lv.gj, lv.gi][:, :4].float(), lv.anchor_wh)
            iou = bbox_iou(pbox, lv.box_xywh_cell, CIoU=True).squeeze(-1).clamp(0)
            n_pos.index_add_(0, lv.target, torch.ones(len(lv)))
            t_sum.index_add_(0, lv.target, iou)
            o_sum.index_add_(0, lv.target, p[lv.image, lv.anchor, lv.gj, lv.gi][:, 4].float().sigmoid())
            positive[lv.image, offset + (lv.anchor * ny + lv.gj) * nx + lv.gi] = True
        offset += na * ny * nx
    obj = torch.cat([p[..., 4].reshape(bs, -1).float() for p in raw], 1)  # (bs, m)
    ranking = bce_with_logits(obj, torch.zeros_like(obj), 1.0, reduction="none")  # a negative's loss
    negative = hard_negative_mask(ranking, positive, loss.hyp.ssd_neg_pos_ratio, loss.hyp.ssd_min_neg,
                                  res.extras.get("ignore"))
    out: dict[str, Counter] = defaultdict(Counter)
    others, score = ~(positive | negative), obj.sigmoid()
    out["all"].update(hard_negatives=int(negative.sum()), positives=int(positive.sum()),
                      mined_obj_sum=float(score[negative].sum()), others=int(others.sum()),
                      others_obj_sum=float(score[others].sum()))
    for b in range(bs):
        rows = (image_of == b).nonzero().squeeze(1)
        if not len(rows):
            continue
        iou = box_iou(gt[rows], pri.xyxy_px)  # (n_b, m)
        best_iou, best_obj = iou.max(0)
        for r, forced in zip(rows.tolist(), (iou.max(1).values < iou_thr).tolist()):
            out[names[cls[r]]].update(objects=1, positives=int(n_pos[r]), forced_only=int(forced),
                                      target_sum=float(t_sum[r]), obj_sum=float(o_sum[r]))
        near_neg = negative[b] & (best_iou >= near)
        for r in rows[best_obj[near_neg]].tolist():
            out[names[cls[r]]]["near_hard_negatives"] += 1
    return out


def stats_table(stats: dict[str, Counter], names: list[str], *, ratio: float, obj_iou: bool) -> str:
    """The Markdown table of summed ``ssd_batch_stats`` counters; ``ratio`` and ``obj_iou`` are the loss's
    ``ssd_neg_pos_ratio`` and ``ssd_obj_iou`` (the positives' objectness target: their IoU, or 1)."""
    lines = ["| class | objects | positives per object | forced match only | mean IoU objectness target "
             "| mean objectness at positives | near hard negatives per object |", "|---|---|---|---|---|---|---|"]
    for c in names:
        s = stats[c]
        if s["objects"]:
            lines.append(f"| {c} | {s['objects']} | {s['positives'] / s['objects']:.2f} | "
                         f"{s['forced_only'] / s['objects']:.0%} | {s['target_sum'] / max(s['positives'], 1):.3f} | "
                         f"{s['obj_sum'] / max(s['positives'], 1):.3f} | {s['near_hard_negatives'] / s['objects']:.2f} |")
    a = stats["all"]
    near = sum(stats[c]["near_hard_negatives"] for c in names)
    targets = sum(stats[c]["target_sum"] for c in names) / max(a["positives"], 1) if obj_iou else 1.0
    lines.append(f"\nhard negatives: {a['hard_negatives']}, of them near an object: {near} "
                 f"({near / max(a['hard_negatives'], 1):.0%}); positives: {a['positives']}")
    lines.append(f"mean objectness: mined negatives {a['mined_obj_sum'] / max(a['hard_negatives'], 1):.3f}, "
                 f"other anchors {a['others_obj_sum'] / max(a['others'], 1):.3f}; one value for positives and mined "
                 f"negatives alike would be target / (1 + ratio) = {targets:.3f} / {1 + ratio:g} = "
                 f"{targets / (1 + ratio):.3f}")
    return "\n".join(lines)


__all__ = ["ssd_batch_stats", "stats_table"]
