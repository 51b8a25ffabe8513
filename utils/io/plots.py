"""Plots: training-batch mosaics (``train_batch0.jpg``) and label statistics
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
from utils.io.annotate import class_color, draw_box_label, font_scale_for, line_width_for


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_images(imgs: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                paths: Sequence[str] | None = None, fname: str | Path = "images.jpg",
                names: Sequence[str] | dict | None = None, max_subplots: int = 16,
                max_size: int = 1920, conf_thres: float = 0.25) -> np.ndarray:
    """Save a grid of a batch with its boxes; returns the grid (H, W, 3) BGR uint8.

    ``imgs`` (bs, 3, H, W) RGB, uint8 or float 0..1. ``targets`` (n, 6) ``[img_idx, cls, x, y, w, h]``
    (normalised, or pixels when any value > 1.01) or (n, 7) with a confidence last; predictions
    below ``conf_thres`` are not drawn and carry their confidence in the tag. Lines and text are
    sized by the tile (see ``utils.io.annotate``), and each tag stays inside its tile.
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
    lw, font_scale = line_width_for((hs, ws)), font_scale_for((hs, ws))
    for i in range(bs):
        x0, y0 = ws * (i % ns), hs * (i // ns)
        tile = np.ascontiguousarray(imgs[i].transpose(1, 2, 0)[..., ::-1])
        if scale < 1:
            tile = cv2.resize(tile, (ws, hs))
        grid[y0:y0 + hs, x0:x0 + ws] = tile
        cv2.rectangle(grid, (x0, y0), (x0 + ws - 1, y0 + hs - 1), (255, 255, 255), lw)
        if paths is not None and i < len(paths):
            text_h = cv2.getTextSize("Hg", 0, font_scale, 1)[0][1]
            cv2.putText(grid, Path(paths[i]).name[:40], (x0 + lw + 2, y0 + lw + 2 + text_h), 0, font_scale,
                        (220, 220, 220), 1, cv2.LINE_AA)
        tile_xyxy = (x0, y0, x0 + ws, y0 + hs)
        _draw_boxes(grid, targets[targets[:, 0] == i], tile_xyxy, scale, names, (lw, font_scale), conf_thres)
    cv2.imwrite(str(fname), grid)
    return grid


def _class_name(names: Sequence[str] | dict | None, cls: int) -> str:
    if isinstance(names, dict):
        return str(names.get(cls, cls))
    return str(names[cls]) if names is not None and 0 <= cls < len(names) else str(cls)


def _draw_boxes(grid: np.ndarray, t: np.ndarray, tile_xyxy: tuple[int, int, int, int], scale: float, names,
                sizes: tuple[int, float], conf_thres: float) -> None:
    """Draw the rows ``t`` (n, 6|7) of one image into its tile ``tile_xyxy`` of the grid; ``sizes`` = (lw, font)."""
    if not len(t):
        return
    x0, y0, x1, y1 = tile_xyxy
    boxes = xywh2xyxy(t[:, 2:6].astype(np.float64))
    if boxes.max() <= 1.01:  # normalised
        boxes[:, [0, 2]] *= x1 - x0
        boxes[:, [1, 3]] *= y1 - y0
    else:
        boxes *= scale
    boxes[:, [0, 2]] += x0
    boxes[:, [1, 3]] += y0
    order = np.argsort(t[:, 6], kind="stable") if t.shape[1] > 6 else range(len(t))  # highest confidence on top
    for j in order:
        b, cls = boxes[j], int(t[j, 1])
        conf = float(t[j, 6]) if t.shape[1] > 6 else None
        if conf is not None and conf < conf_thres:
            continue
        name = _class_name(names, cls)
        tag = name if conf is None else f"{name} {conf:.1f}"
        draw_box_label(grid, b, tag, class_color(cls), sizes[0], sizes[1], bounds=tile_xyxy)


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
    ax[0].bar(range(nc), counts, color=[np.array(class_color(i, bgr=False)) / 255 for i in range(nc)])
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
        cv2.rectangle(canvas, (x1, y1), (x2, y2), class_color(c, bgr=False), 1)
    ax[3].imshow(canvas)
    ax[3].axis("off")
    for a in ax[:3]:
        for s in ("top", "right"):
            a.spines[s].set_visible(False)
    f = Path(save_dir) / "labels.jpg"
    fig.savefig(f, dpi=200)
    plt.close(fig)
    return f
