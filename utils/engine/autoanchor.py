"""AutoAnchor as YOLOv5 does it: check the best possible recall (BPR) of the model's anchors on the
training labels, and when it is below 0.98 fit new ones (k-means, then a genetic evolution of the
anchor-fit fitness) and keep them only if they recall more.

Metric (YOLOv5): for label w/h and anchor w/h, ``r = min(w/aw, aw/w, h/ah, ah/h)``; a label is
recallable by an anchor when ``r > 1/anchor_t``. BPR = share of labels recallable by their best
anchor; fitness = mean over labels of the best ``r`` counted only above ``1/anchor_t``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

LOGGER = logging.getLogger(__name__)
PREFIX = "AutoAnchor: "


def _ratio_metric(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """wh (Tensor[n, 2]), anchors (Tensor[k, 2]) in pixels -> (Tensor[n, k]) worst-side ratio."""
    r = wh[:, None] / anchors[None]
    return torch.min(r, 1 / r).min(2)[0]


def anchor_fitness(wh: torch.Tensor, anchors: torch.Tensor, thr: float) -> tuple[float, float]:
    """(best possible recall, anchors above threshold per label) of ``anchors`` on label ``wh``."""
    x = _ratio_metric(wh, anchors)
    best = x.max(1)[0]
    return float((best > thr).float().mean()), float((x > thr).float().sum(1).mean())


def label_wh(shapes: np.ndarray, labels: list[np.ndarray], imgsz: int, jitter: bool = True,
             seed: int = 0) -> np.ndarray:
    """Label w, h in pixels of the training image size. shapes (N, 2) image w, h; labels (n, 5) xywhn.

    With ``jitter`` every image gets a random 0.9-1.1 scale, as YOLOv5 checks anchors.
    """
    shapes = imgsz * np.asarray(shapes, dtype=np.float64) / np.asarray(shapes).max(1, keepdims=True)
    scale = np.random.default_rng(seed).uniform(0.9, 1.1, size=(len(shapes), 1)) if jitter else np.ones((len(shapes), 1))
    parts = [l[:, 3:5] * s for s, l in zip(shapes * scale, labels) if len(l)]
    return np.concatenate(parts, 0) if parts else np.zeros((0, 2))


def kmean_anchors(wh: np.ndarray, n: int, imgsz: int, anchor_t: float, gen: int = 1000,
                  seed: int = 0) -> np.ndarray:
    """n anchors (n, 2) in pixels, sorted by area: k-means on whitened w/h, then evolution."""
    thr = 1 / anchor_t
    rng = np.random.default_rng(seed)
    small = (wh < 3.0).any(1).sum()
    if small:
        LOGGER.warning(f"{PREFIX}{small} of {len(wh)} labels are smaller than 3 pixels")
    wh = wh[(wh >= 2.0).any(1)].astype(np.float32)
    if len(wh) < n:
        raise ValueError(f"{PREFIX}only {len(wh)} labels of at least 2 pixels, need {n} for {n} anchors")
    sigma = wh.std(0) + 1e-9
    k = _kmeans(wh / sigma, n, rng) * sigma
    wh_t = torch.tensor(wh)

    def fitness(anchors: np.ndarray) -> float:
        x = _ratio_metric(wh_t, torch.tensor(anchors, dtype=torch.float32)).max(1)[0]
        return float((x * (x > thr).float()).mean())

    f = fitness(k)
    mp, s = 0.9, 0.1  # mutation probability and sigma
    for _ in range(gen):
        v = np.ones(k.shape)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(k.shape) < mp) * rng.random() * rng.standard_normal(k.shape) * s + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = fitness(kg)
        if fg > f:
            f, k = fg, kg
    return k[np.argsort(k.prod(1))]


def _kmeans(x: np.ndarray, n: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; x (m, d) -> centres (n, d)."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n):
        d = ((x[:, None] - np.array(centres)[None]) ** 2).sum(-1).min(1)
        centres.append(x[rng.choice(len(x), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(x))])
    c = np.array(centres)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(n)])
        if np.allclose(new, c):
            break
        c = new
    return c


def check_anchors(dataset, model: torch.nn.Module, anchor_t: float = 4.0, imgsz: int = 640) -> bool:
    """Replace the model's anchors in place when their BPR on ``dataset`` is below 0.98 and the
    evolved anchors recall more. Returns whether the anchors changed.

    dataset: anything with ``shapes`` (N, 2) image w, h and ``labels`` (list of (n, 5) cls xywhn).
    """
    det = model.model[-1]
    stride = det.stride.view(-1, 1, 1).to(det.anchors.device)
    anchors_px = (det.anchors.detach() * stride).view(-1, 2).cpu()
    wh = torch.tensor(label_wh(dataset.shapes, dataset.labels, imgsz), dtype=torch.float32)
    if not len(wh):
        LOGGER.warning(f"{PREFIX}no labels to check the anchors against, keeping them")
        return False
    bpr, aat = anchor_fitness(wh, anchors_px, 1 / anchor_t)
    msg = f"{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr > 0.98:
        LOGGER.info(msg + "Current anchors are a good fit to dataset")
        return False
    LOGGER.info(msg + "Anchors are a poor fit to dataset, attempting to improve...")
    wh_fit = label_wh(dataset.shapes, dataset.labels, imgsz, jitter=False)
    new = torch.tensor(kmean_anchors(wh_fit, det.anchors.shape[0] * det.anchors.shape[1], imgsz, anchor_t),
                       dtype=torch.float32)
    new_bpr = anchor_fitness(wh, new, 1 / anchor_t)[0]
    if new_bpr <= bpr:
        LOGGER.info(f"{PREFIX}evolved anchors (BPR {new_bpr:.3f}) are no better, keeping the original anchors")
        return False
    grid = new.view_as(det.anchors).to(det.anchors.device) / stride
    # anchors must grow with stride, as the levels do
    if (grid * stride).prod(-1).mean(-1).diff().lt(0).any():
        grid = grid.flip(0)
    det.anchors[:] = grid.to(det.anchors.dtype)
    LOGGER.info(f"{PREFIX}new anchors saved to model (BPR {new_bpr:.3f}); "
                f"update the model *.yaml to use them in the future: {np.round(new.numpy()).astype(int).tolist()}")
    return True
