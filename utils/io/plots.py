"""Plots: class colours, training-batch mosaics (``train_batch0.jpg``) and label statistics
(``labels.jpg``), in YOLOv5's style. matplotlib is imported inside the functions that need it,
with the Agg backend, so importing this module has no side effects.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from utils.boxes import xywh2xyxy


class Colors:
    """Class palette: ``colors(i)`` -> (R, G, B), ``colors(i, bgr=True)`` -> (B, G, R); cycles over 20."""

    HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
           "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")

    def __init__(self) -> None:
        self.palette = [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in self.HEX]
        self.n = len(self.palette)

    def __call__(self, i: int, bgr: bool = False) -> tuple[int, int, int]:
        c = self.palette[int(i) % self.n]
        return (c[2], c[1], c[0]) if bgr else c


colors = Colors()


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_images(imgs: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                paths: Sequence[str] | None = None, fname: str | Path = "images.jpg",
                names: Sequence[str] | dict | None = None, max_subplots: int = 16,
                max_size: int = 1920, conf_thres: float = 0.25) -> np.ndarray:
    """Save a grid of a batch with its boxes; returns the grid (H, W, 3) BGR uint8.

    ``imgs`` (bs, 3, H, W) RGB, uint8 or float 0..1. ``targets`` (n, 6) ``[img_idx, cls, x, y, w, h]``
    (normalised, or pixels when any value > 1.01) or (n, 7) with a confidence last; predictions
    below ``conf_thres`` are not drawn and carry their confidence in the tag.
    """
    imgs, targets = _to_numpy(imgs), _to_numpy(targets).reshape(-1, _to_numpy(targets).shape[-1] or 6)
    if imgs.dtype != np.uint8:
        imgs = (imgs * (255 if imgs.max() <= 1.0 else 1)).clip(0, 255).astype(np.uint8)
    bs, _, h, w = imgs.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs ** 0.5)  # grid side
    scale = min(1.0, max_size / max(h, w) / ns)
    hs, ws = math.ceil(scale * h), math.ceil(scale * w)
    grid = np.full((ns * hs, ns * ws, 3), 255, dtype=np.uint8)
    lw = max(1, round(0.002 * (ns * (hs + ws)) / 2))
    for i in range(bs):
        x0, y0 = ws * (i % ns), hs * (i // ns)
        tile = np.ascontiguousarray(imgs[i].transpose(1, 2, 0)[..., ::-1])
        if scale < 1:
            tile = cv2.resize(tile, (ws, hs))
        grid[y0:y0 + hs, x0:x0 + ws] = tile
        cv2.rectangle(grid, (x0, y0), (x0 + ws - 1, y0 + hs - 1), (255, 255, 255), lw)
        if paths is not None and i < len(paths):
            cv2.putText(grid, Path(paths[i]).name[:40], (x0 + 5, y0 + 15), 0, 0.4 * max(lw, 1),
                        (220, 220, 220), max(lw - 1, 1), cv2.LINE_AA)
        _draw_boxes(grid, targets[targets[:, 0] == i], (x0, y0), (ws, hs), scale, names, lw, conf_thres)
    cv2.imwrite(str(fname), grid)
    return grid


def _draw_boxes(grid: np.ndarray, t: np.ndarray, offset: tuple[int, int], size: tuple[int, int],
                scale: float, names, lw: int, conf_thres: float) -> None:
    if not len(t):
        return
    boxes = xywh2xyxy(t[:, 2:6].astype(np.float64))
    if boxes.max() <= 1.01:  # normalised
        boxes[:, [0, 2]] *= size[0]
        boxes[:, [1, 3]] *= size[1]
    else:
        boxes *= scale
    boxes[:, [0, 2]] += offset[0]
    boxes[:, [1, 3]] += offset[1]
    for j, b in enumerate(boxes):
        cls = int(t[j, 1])
        conf = float(t[j, 6]) if t.shape[1] > 6 else None
        if conf is not None and conf < conf_thres:
            continue
        c = colors(cls, bgr=True)
        p1, p2 = (int(b[0]), int(b[1])), (int(b[2]), int(b[3]))
        cv2.rectangle(grid, p1, p2, c, lw, cv2.LINE_AA)
        name = names[cls] if names is not None and cls in (names if isinstance(names, dict) else
                                                           range(len(names))) else str(cls)
        tag = name if conf is None else f"{name} {conf:.1f}"
        cv2.putText(grid, tag, (p1[0], max(p1[1] - 2, 10)), 0, 0.35 * lw, c, max(lw - 1, 1), cv2.LINE_AA)


def plot_labels(labels: np.ndarray, names: Sequence[str] | dict = (), save_dir: str | Path = ".",
                ) -> Path:
    """Save ``<save_dir>/labels.jpg``: class counts, centre x/y and width/height histograms, box shapes.

    ``labels`` (n, 5) ``[cls, x, y, w, h]`` normalised (e.g. ``np.concatenate(dataset.labels)``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    nc = max(len(names), int(labels[:, 0].max()) + 1 if len(labels) else 0, 1)
    cls, b = labels[:, 0].astype(int), labels[:, 1:]
    fig, ax = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    ax = ax.ravel()
    counts = np.bincount(cls, minlength=nc)
    ax[0].bar(range(nc), counts, color=[np.array(colors(i)) / 255 for i in range(nc)])
    ax[0].set_ylabel("instances")
    if names and nc <= 30:
        ax[0].set_xticks(range(nc), names[:nc], rotation=90)
    else:
        ax[0].set_xlabel("classes")
    bins = 50
    ax[1].hist2d(b[:, 0], b[:, 1], bins=bins, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[1].set_xlabel("x")
    ax[1].set_ylabel("y")
    ax[2].hist2d(b[:, 2], b[:, 3], bins=bins, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set_xlabel("width")
    ax[2].set_ylabel("height")
    canvas = np.full((1000, 1000, 3), 255, dtype=np.uint8)  # up to 1000 boxes centred, true shape
    for c, (_, _, w, h) in zip(cls[:1000], b[:1000]):
        x1, y1, x2, y2 = (np.array([0.5 - w / 2, 0.5 - h / 2, 0.5 + w / 2, 0.5 + h / 2]) * 1000).astype(int)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colors(c), 1)
    ax[3].imshow(canvas)
    ax[3].axis("off")
    for a in ax[:3]:
        for s in ("top", "right"):
            a.spines[s].set_visible(False)
    f = Path(save_dir) / "labels.jpg"
    fig.savefig(f, dpi=200)
    plt.close(fig)
    return f
