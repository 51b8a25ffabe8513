"""Detection metrics as YOLOv5 v7.0 reports them: per-class AP at IoU 0.50:0.05:0.95, P/R/F1, confusion matrix.

Conventions:
  detections  (Tensor[n, 6]) x1, y1, x2, y2 pixels, conf, class
  labels      (Tensor[m, 5]) class, x1, y1, x2, y2 pixels (same image space as the detections)
  correct     (n, 10) bool: detection i is a true positive at IoU threshold j

Plots are drawn on plain ``matplotlib.figure.Figure`` objects (Agg canvas) so importing this
module never touches the global pyplot backend.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from utils.boxes import box_iou

LOGGER = logging.getLogger(__name__)

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # COCO mAP@0.5:0.95


def fitness(x: np.ndarray | Sequence[float]) -> np.ndarray | float:
    """0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 of ``[P, R, mAP50, mAP50-95, ...]`` (1-D -> float, (n, >=4) -> (n,))."""
    x = np.asarray(x, dtype=float)
    w = np.array([0.0, 0.0, 0.1, 0.9])
    if x.ndim == 1:
        return float((x[:4] * w).sum())
    return (x[:, :4] * w).sum(1)


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter over a fraction ``f`` of the curve length (odd width), edges padded with the end values."""
    nf = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(nf // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(padded, np.ones(nf) / nf, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Area under one PR curve, COCO 101-point interpolation (YOLOv5 'interp' method).

    Args:
        recall, precision: (n,) curves ordered by decreasing confidence.
    Returns:
        ap, mpre (n + 2,) precision envelope with sentinels, mrec (n + 2,) recall with sentinels 0 and 1.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: best precision at any higher recall
    x = np.linspace(0, 1, 101)
    ap = float(np.trapezoid(np.interp(x, mrec, mpre), x))
    return ap, mpre, mrec


def _names_of(names: Sequence[str] | Mapping[int, str], classes: np.ndarray) -> dict[int, str]:
    """Names of the classes present (in ``classes`` order), re-indexed 0.. as the plots expect."""
    lookup = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    return {i: lookup.get(int(c), str(int(c))) for i, c in enumerate(classes)} if lookup else {}


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 plot: bool = False, save_dir: str | Path = ".", names: Sequence[str] | Mapping[int, str] = (),
                 eps: float = 1e-16, prefix: str = ""):
    """Per-class AP and P/R/F1 at the confidence maximising the smoothed mean F1 (YOLOv5 v7.0).

    Args:
        tp: (n, k) bool, true positive at each of k IoU thresholds; conf, pred_cls: (n,); target_cls: (m,).
        plot: write ``{prefix}PR_curve.png``, ``F1_curve``, ``P_curve``, ``R_curve`` into ``save_dir``.
    Returns:
        tp (nc,), fp (nc,), p (nc,), r (nc,), f1 (nc,), ap (nc, k), unique_classes (nc,) int,
        over the nc classes that appear in ``target_cls``.
    """
    tp = np.asarray(tp, dtype=float)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    unique_classes, nt = np.unique(target_cls, return_counts=True)
    nc = unique_classes.shape[0]

    px, py = np.linspace(0, 1, 1000), []  # confidence axis for the P/R/F1 curves; precision at mAP@0.5
    ap, p, r = np.zeros((nc, tp.shape[1])), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        if i.sum() == 0:
            continue
        tpc = tp[i].cumsum(0)
        fpc = (1 - tp[i]).cumsum(0)
        recall = tpc / (nt[ci] + eps)
        precision = tpc / (tpc + fpc)
        r[ci] = np.interp(-px, -conf[i], recall[:, 0], left=0)  # negated: np.interp needs increasing x
        p[ci] = np.interp(-px, -conf[i], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if plot and j == 0:
                py.append(np.interp(px, mrec, mpre))

    f1 = 2 * p * r / (p + r + eps)
    if plot:
        shown = _names_of(names, unique_classes)
        save_dir = Path(save_dir)
        if py:
            plot_pr_curve(px, np.stack(py, 1), ap, save_dir / f"{prefix}PR_curve.png", shown)
        plot_mc_curve(px, f1, save_dir / f"{prefix}F1_curve.png", shown, ylabel="F1")
        plot_mc_curve(px, p, save_dir / f"{prefix}P_curve.png", shown, ylabel="Precision")
        plot_mc_curve(px, r, save_dir / f"{prefix}R_curve.png", shown, ylabel="Recall")

    best = smooth(f1.mean(0), 0.1).argmax() if nc else 0
    p, r, f1 = p[:, best], r[:, best], f1[:, best]
    tp_count = (r * nt).round()
    fp_count = (tp_count / (p + eps) - tp_count).round()
    return tp_count, fp_count, p, r, f1, ap, unique_classes.astype(int)


def _one_to_one(label_idx: np.ndarray, det_idx: np.ndarray, iou: np.ndarray,
                resort: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reduce candidate (label, detection) pairs to at most one pair per detection and per label.

    Each detection keeps its highest-IoU label. Among the detections left on one label, the winner is
    the highest-IoU one when ``resort`` (YOLOv5 ConfusionMatrix), otherwise the lowest detection index,
    i.e. the most confident detection after NMS (YOLOv5 v7.0 ``process_batch``, whose second sort is
    commented out).
    """
    order = np.argsort(-iou, kind="stable")
    label_idx, det_idx, iou = label_idx[order], det_idx[order], iou[order]
    _, first = np.unique(det_idx, return_index=True)  # rows now ordered by detection index
    label_idx, det_idx, iou = label_idx[first], det_idx[first], iou[first]
    if resort:
        order = np.argsort(-iou, kind="stable")
        label_idx, det_idx = label_idx[order], det_idx[order]
    _, first = np.unique(label_idx, return_index=True)
    return label_idx[first], det_idx[first]


def match_predictions(detections: torch.Tensor, labels: torch.Tensor,
                      iouv: torch.Tensor = IOU_THRESHOLDS) -> torch.Tensor:
    """Mark true positives for each IoU threshold (YOLOv5 v7.0 ``process_batch``).

    Args:
        detections: Tensor[n, 6] x1, y1, x2, y2, conf, class (sorted by conf, as NMS returns them).
        labels: Tensor[m, 5] class, x1, y1, x2, y2, same pixel space.
        iouv: Tensor[k] IoU thresholds.
    Returns:
        correct: Tensor[n, k] bool on ``iouv.device``; a pair matches when IoU >= threshold and classes agree,
        and each label and each detection is used at most once per threshold.
    """
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    if detections.shape[0] and labels.shape[0]:
        iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())  # (m, n)
        same_class = labels[:, 0:1] == detections[:, 5]
        iou_np, same_np, thresholds = iou.cpu().numpy(), same_class.cpu().numpy(), iouv.cpu().numpy()
        for k, t in enumerate(thresholds):
            li, di = np.nonzero((iou_np >= t) & same_np)
            if li.size:
                _, di = _one_to_one(li, di, iou_np[li, di], resort=False)
                correct[di, k] = True
    return torch.from_numpy(correct).to(iouv.device)


class ConfusionMatrix:
    """(nc + 1) x (nc + 1) counts, rows = predicted class, columns = true class; index nc is background.

    Matching is class-agnostic at ``iou_thres`` with one-to-one pairs (highest IoU first); detections
    below ``conf`` are ignored. Unlike YOLOv5 v7.0, unmatched detections count as background false
    positives even when no pair matched at all, and on images without labels (the later Ultralytics fix).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Add one image: detections Tensor[n, 6] xyxy/conf/cls or None, labels Tensor[m, 5] cls/xyxy."""
        gt_classes = labels[:, 0].int().tolist()
        if detections is None:
            detections = torch.zeros((0, 6))
        detections = detections[detections[:, 4] > self.conf]
        det_classes = detections[:, 5].int().tolist()
        matched_label, matched_det = np.zeros(0, int), np.zeros(0, int)
        if len(gt_classes) and len(det_classes):
            iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float()).cpu().numpy()
            li, di = np.nonzero(iou > self.iou_thres)
            if li.size:
                matched_label, matched_det = _one_to_one(li, di, iou[li, di], resort=True)
        det_of_label = dict(zip(matched_label.tolist(), matched_det.tolist()))
        for i, gc in enumerate(gt_classes):
            row = det_classes[det_of_label[i]] if i in det_of_label else self.nc  # missed -> background
            self.matrix[row, gc] += 1
        matched = set(matched_det.tolist())
        for j, dc in enumerate(det_classes):
            if j not in matched:
                self.matrix[dc, self.nc] += 1  # predicted on background

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class true and false positives (nc,), background excluded."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(self, normalize: bool = True, save_dir: str | Path = "", names: Sequence[str] = ()) -> Path | None:
        """Write ``confusion_matrix.png`` into ``save_dir`` (columns normalised to 1 when ``normalize``)."""
        from matplotlib.figure import Figure

        array = self.matrix / ((self.matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
        array[array < 0.005] = np.nan  # blank cells instead of 0.00
        ticks = list(names) + ["background"] if 0 < len(names) < 99 and len(names) == self.nc else None
        fig = Figure(figsize=(12, 9), tight_layout=True)
        ax = fig.subplots()
        image = ax.imshow(array, cmap="Blues", vmin=0.0)
        fig.colorbar(image, ax=ax)
        if self.nc < 30:
            for (i, j), v in np.ndenumerate(array):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8)
        if ticks:
            ax.set_xticks(range(self.nc + 1), ticks, rotation=90)
            ax.set_yticks(range(self.nc + 1), ticks)
        ax.set_xlabel("True")
        ax.set_ylabel("Predicted")
        ax.set_title("Confusion Matrix")
        path = Path(save_dir) / "confusion_matrix.png"
        try:
            fig.savefig(path, dpi=250)
        except OSError as e:
            LOGGER.warning("confusion matrix plot failed: %s", e)
            return None
        return path


def plot_pr_curve(px: np.ndarray, py: np.ndarray, ap: np.ndarray, save_path: str | Path = "pr_curve.png",
                  names: Mapping[int, str] = {}) -> None:
    """Precision-recall curves: px (1000,) recall axis, py (1000, nc) precision, ap (nc, k) (column 0 = AP@0.5)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    if 0 < len(names) < 21:
        for i, y in enumerate(py.T):
            ax.plot(px, y, linewidth=1, label=f"{names[i]} {ap[i, 0]:.3f}")
    else:
        ax.plot(px, py, linewidth=1, color="grey")
    ax.plot(px, py.mean(1), linewidth=3, color="blue", label=f"all classes {ap[:, 0].mean():.3f} mAP@0.5")
    _finish(ax, "Recall", "Precision", "Precision-Recall Curve")
    fig.savefig(save_path, dpi=250)


def plot_mc_curve(px: np.ndarray, py: np.ndarray, save_path: str | Path = "mc_curve.png",
                  names: Mapping[int, str] = {}, xlabel: str = "Confidence", ylabel: str = "Metric") -> None:
    """Metric-confidence curves: px (1000,) confidence axis, py (nc, 1000) metric per class."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    if 0 < len(names) < 21:
        for i, y in enumerate(py):
            ax.plot(px, y, linewidth=1, label=f"{names[i]}")
    else:
        ax.plot(px, py.T, linewidth=1, color="grey")
    y = smooth(py.mean(0), 0.05) if len(py) else np.zeros_like(px)
    ax.plot(px, y, linewidth=3, color="blue", label=f"all classes {y.max():.2f} at {px[y.argmax()]:.3f}")
    _finish(ax, xlabel, ylabel, f"{ylabel}-Confidence Curve")
    fig.savefig(save_path, dpi=250)


def _finish(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title(title)


class DetMetrics:
    """Accumulates per-image matches over a dataset and reduces them to YOLOv5's validation numbers.

    Usage::

        metrics = DetMetrics(nc=len(names))
        metrics.update(preds, labels)      # per batch, boxes in the same (original-image) pixel space
        results = metrics.compute(plot=True, save_dir=run_dir, names=names)
    """

    def __init__(self, nc: int, iouv: torch.Tensor = IOU_THRESHOLDS, conf: float = 0.25, iou_thres: float = 0.45):
        self.nc, self.iouv = nc, iouv
        self.confusion = ConfusionMatrix(nc, conf=conf, iou_thres=iou_thres)
        self.stats: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # correct, conf, pcls, tcls
        self.seen = 0

    def update(self, preds: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> None:
        """preds: per image Tensor[n, 6] x1, y1, x2, y2, conf, cls; labels: per image Tensor[m, 5] cls, x1, y1, x2, y2."""
        for det, lab in zip(preds, labels):
            self.seen += 1
            det, lab = det.detach().cpu().float(), lab.detach().cpu().float()
            correct = match_predictions(det, lab, self.iouv.cpu())
            self.stats.append((correct.numpy(), det[:, 4].numpy(), det[:, 5].numpy(), lab[:, 0].numpy()))
            if len(lab) or len(det):
                self.confusion.process_batch(det, lab)

    def compute(self, plot: bool = False, save_dir: str | Path = ".",
                names: Sequence[str] | Mapping[int, str] = ()) -> dict:
        """Reduce everything seen so far.

        Returns a dict: ``p``, ``r``, ``map50``, ``map`` (floats, means over classes with labels),
        ``ap_class`` (c,) class ids, ``class_p``, ``class_r``, ``class_ap50``, ``class_ap`` (c,) aligned with
        ``ap_class``, ``nt`` (nc,) labels per class, ``seen`` images, ``fitness``.
        """
        niou = len(self.iouv)
        if self.stats:
            correct, conf, pcls, tcls = (np.concatenate(x, 0) for x in zip(*self.stats))
        else:
            correct, conf, pcls, tcls = np.zeros((0, niou), bool), np.zeros(0), np.zeros(0), np.zeros(0)
        nt = np.bincount(tcls.astype(int), minlength=self.nc)
        out = {"p": 0.0, "r": 0.0, "map50": 0.0, "map": 0.0, "ap_class": np.zeros(0, int),
               "class_p": np.zeros(0), "class_r": np.zeros(0), "class_ap50": np.zeros(0), "class_ap": np.zeros(0),
               "nt": nt, "seen": self.seen}
        if correct.any():
            _, _, p, r, _, ap, ap_class = ap_per_class(correct, conf, pcls, tcls, plot=plot,
                                                       save_dir=save_dir, names=names)
            ap50, ap = ap[:, 0], ap.mean(1)
            out.update(p=float(p.mean()), r=float(r.mean()), map50=float(ap50.mean()), map=float(ap.mean()),
                       ap_class=ap_class, class_p=p, class_r=r, class_ap50=ap50, class_ap=ap)
        if plot:
            shown = list(names.values()) if isinstance(names, Mapping) else list(names)
            self.confusion.plot(save_dir=save_dir, names=shown)
        out["fitness"] = fitness([out["p"], out["r"], out["map50"], out["map"]])
        return out
