"""Where a detector's false positives come from: duplicates, stray boxes and the head outputs behind them.

mAP folds two different failures into one number: missing objects and ranking wrong boxes above
right ones. A loss strategy with weak negatives (freeanchor, dw on crowded data) usually finds the
objects but also scores many wrong boxes highly. These statistics separate the two, per class:

- ``labels``: labelled objects of the class;
- ``dets``: detections of the class with score >= ``conf`` after NMS;
- ``dets_per_label``: ``dets / labels`` (1.0 for a perfect detector on fully labelled data);
- ``stray``: fraction of those detections whose IoU with every label of their class is < ``stray_iou``
  (not a duplicate of a labelled object: a wrong box, or an object the labels miss);
- ``recall``: fraction of labels with a detection of their class at IoU >= ``match_iou`` and score >= ``conf``;
- ``best_score``: median over the labels of the highest score of a detection of their class at
  IoU >= ``match_iou`` (any score, 0 when there is none): how confidently the right box is ranked;
- ``stray_score``: median score of the stray detections. Stray boxes cost AP only when they
  outrank right ones, so compare it with ``best_score``.

:func:`stray_sources` counts, before NMS, the head outputs (level, anchor) whose score for a class is
>= ``conf`` and whose decoded box is stray for that class: which outputs a strategy failed to push down.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from utils.boxes import box_iou

FIELDS = ("labels", "dets", "dets_per_label", "stray", "recall", "best_score", "stray_score")


class DetectionStats:
    """Accumulates per-class statistics over images; see the module docstring for the fields."""

    def __init__(self, nc: int, conf: float = 0.25, match_iou: float = 0.5, stray_iou: float = 0.3):
        if not 0 <= conf <= 1 or not 0 < match_iou <= 1 or not 0 < stray_iou <= 1:
            raise ValueError(f"conf {conf}, match_iou {match_iou} and stray_iou {stray_iou} must lie in (0, 1]")
        self.nc, self.conf, self.match_iou, self.stray_iou = nc, conf, match_iou, stray_iou
        self.labels = torch.zeros(nc, dtype=torch.long)
        self.dets = torch.zeros(nc, dtype=torch.long)
        self.stray = torch.zeros(nc, dtype=torch.long)
        self.found = torch.zeros(nc, dtype=torch.long)
        self.best: list[list[float]] = [[] for _ in range(nc)]
        self.stray_scores: list[list[float]] = [[] for _ in range(nc)]

    def update(self, dets: torch.Tensor, labels: torch.Tensor) -> None:
        """One image: ``dets`` (n, 6) x1y1x2y2, score, class after NMS (any threshold below ``conf``);
        ``labels`` (m, 5) class, x1y1x2y2 in the same pixels."""
        dets, labels = dets.detach().float().cpu(), labels.detach().float().cpu()
        for c in range(self.nc):
            d, g = dets[dets[:, 5] == c], labels[labels[:, 0] == c, 1:5]
            iou = box_iou(d[:, :4], g) if len(d) and len(g) else torch.zeros(len(d), len(g))
            high = d[:, 4] >= self.conf
            self.labels[c] += len(g)
            self.dets[c] += int(high.sum())
            best_iou = iou.max(1).values if len(g) else torch.zeros(len(d))
            stray = high & (best_iou < self.stray_iou)
            self.stray[c] += int(stray.sum())
            self.stray_scores[c] += d[stray, 4].tolist()
            hit = iou >= self.match_iou  # (n, m)
            self.found[c] += int((hit & high[:, None]).any(0).sum())
            scores = torch.where(hit, d[:, 4:5], torch.zeros(())).amax(0) if len(d) else torch.zeros(len(g))
            self.best[c] += scores.tolist()

    def table(self) -> list[dict]:
        """One dict per class with :data:`FIELDS` (ratios are ``nan`` where their denominator is 0)."""
        rows = []
        for c in range(self.nc):
            n, k = int(self.labels[c]), int(self.dets[c])
            rows.append({
                "labels": n, "dets": k,
                "dets_per_label": k / n if n else float("nan"),
                "stray": int(self.stray[c]) / k if k else float("nan"),
                "recall": int(self.found[c]) / n if n else float("nan"),
                "best_score": _median(self.best[c]),
                "stray_score": _median(self.stray_scores[c]),
            })
        return rows


def _median(values: list[float]) -> float:
    """Median (mean of the two middle values for an even count), ``nan`` for none."""
    return float(torch.tensor(values, dtype=torch.float64).quantile(0.5)) if values else float("nan")


def output_index(raw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(level, anchor) of every row of the eval-mode output ``(bs, sum na*ny*nx, no)``, from the raw
    per-level outputs ``(bs, na, ny, nx, no)`` (rows are level by level, then anchor, row, column)."""
    level, anchor = [], []
    for i, r in enumerate(raw):
        na, ny, nx = r.shape[1:4]
        anchor.append(torch.arange(na).repeat_interleave(ny * nx))
        level.append(torch.full((na * ny * nx,), i))
    return torch.cat(level), torch.cat(anchor)


def stray_sources(pred: torch.Tensor, raw: Sequence[torch.Tensor], labels: torch.Tensor, conf: float,
                  stray_iou: float) -> torch.Tensor:
    """Before NMS: per (level, anchor), how many (output, class) pairs of one image score >= ``conf``
    and have a decoded box with IoU < ``stray_iou`` to every label of that class.

    Args:
        pred: (m, 5 + nc) one image's eval-mode output: xywh pixels, objectness, class probabilities.
        raw: the model's raw per-level outputs of the batch (for the layout only).
        labels: (k, 5) class, x1y1x2y2 pixels.
    Returns:
        LongTensor (levels, max anchors per level).
    """
    level, anchor = output_index(raw)
    pred, labels = pred.detach().float().cpu(), labels.detach().float().cpu()
    xyxy = torch.cat((pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2), 1)
    score = pred[:, 4:5] * pred[:, 5:]  # (m, nc)
    out = torch.zeros(len(raw), max(r.shape[1] for r in raw), dtype=torch.long)
    for c in range(score.shape[1]):
        g = labels[labels[:, 0] == c, 1:5]
        best = box_iou(xyxy, g).max(1).values if len(g) else torch.zeros(len(xyxy))
        sel = (score[:, c] >= conf) & (best < stray_iou)
        out.index_put_((level[sel], anchor[sel]), torch.ones(int(sel.sum()), dtype=torch.long), accumulate=True)
    return out
