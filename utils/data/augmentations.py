"""Image/box augmentations with YOLOv5 v7.0 semantics.

Images are ``np.ndarray (H, W, 3) uint8 BGR`` (as read by cv2). Labels are
``np.ndarray (n, 5) float`` rows ``[cls, x1, y1, x2, y2]`` in pixels of the image they belong to,
unless a function says otherwise. Randomness comes from Python's ``random`` and NumPy's global
generator, as in YOLOv5; the training dataset seeds both for each item from (seed, epoch, index).

Hyper-parameter names are those of YOLOv5's ``hyp.scratch-low.yaml`` (see ``HYP_DEFAULTS``).
``copy_paste`` is accepted but is a no-op: it needs instance segments and this project's labels
are boxes only.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import cv2
import numpy as np

HYP_DEFAULTS: dict[str, float] = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
    "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
    "copy_paste": 0.0,
}
PAD_VALUE = 114


def letterbox(im: np.ndarray, new_shape: int | Sequence[int] = (640, 640),
              color: tuple[int, int, int] = (PAD_VALUE, PAD_VALUE, PAD_VALUE), auto: bool = True,
              scaleFill: bool = False, scaleup: bool = True, stride: int = 32,
              ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize ``im`` (H, W, C) keeping its aspect ratio and pad it to ``new_shape`` = (h, w) or an int.

    ``auto`` pads only up to the next multiple of ``stride`` (minimum rectangle); ``scaleFill``
    stretches to ``new_shape`` without padding; ``scaleup=False`` never enlarges.
    Returns ``(image, (ratio_w, ratio_h), (dw, dh))`` where ``dw, dh`` is the padding on the left and
    top (half the total, possibly fractional), so ``x_new = x_old * ratio_w + dw``.
    """
    shape = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:  # only shrink: better val mAP, as YOLOv5
        r = min(r, 1.0)
    ratio = r, r
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))  # (w, h)
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    elif scaleFill:
        dw, dh = 0.0, 0.0
        new_unpad = (new_shape[1], new_shape[0])
        ratio = new_shape[1] / shape[1], new_shape[0] / shape[0]
    dw, dh = dw / 2, dh / 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, ratio, (float(dw), float(dh))


def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> None:
    """Random hue/saturation/value gains on a BGR uint8 image, in place (lookup tables, as YOLOv5)."""
    if not (hgain or sgain or vgain):
        return
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(im.dtype)
    lut_sat = np.clip(x * r[1], 0, 255).astype(im.dtype)
    lut_val = np.clip(x * r[2], 0, 255).astype(im.dtype)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Keep mask for boxes after augmentation: box1 (4, n) before, box2 (4, n) after, xyxy pixels.

    A box survives when both sides exceed ``wh_thr`` px, it keeps more than ``area_thr`` of its
    (scaled) area and its aspect ratio stays below ``ar_thr``.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def _affine_matrix(in_shape: tuple[int, int], out_wh: tuple[int, int], degrees: float,
                   translate: float, scale: float, shear: float, perspective: float,
                   ) -> tuple[np.ndarray, float]:
    """Random 3x3 warp (centre -> perspective -> rotation/scale -> shear -> translation) and its scale."""
    C = np.eye(3)
    C[0, 2], C[1, 2] = -in_shape[1] / 2, -in_shape[0] / 2
    P = np.eye(3)
    P[2, 0], P[2, 1] = random.uniform(-perspective, perspective), random.uniform(-perspective, perspective)
    R = np.eye(3)
    a = random.uniform(-degrees, degrees)
    s = random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(random.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(random.uniform(-shear, shear) * math.pi / 180)
    T = np.eye(3)
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_wh[0]
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_wh[1]
    return T @ S @ R @ P @ C, s  # order matters: right to left


def transform_boxes(boxes_xyxy: np.ndarray, M: np.ndarray, out_wh: tuple[int, int],
                    perspective: bool = False) -> np.ndarray:
    """Warp (n, 4) xyxy pixel boxes by the 3x3 ``M`` through their 4 corners; clip to ``out_wh``."""
    n = len(boxes_xyxy)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes_xyxy[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    xy = xy @ M.T
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    new = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, out_wh[0])
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, out_wh[1])
    return new


def random_perspective(im: np.ndarray, targets: np.ndarray = (), degrees: float = 10,
                       translate: float = 0.1, scale: float = 0.1, shear: float = 10,
                       perspective: float = 0.0, border: tuple[int, int] = (0, 0),
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation/perspective of ``im`` and its ``targets`` (n, 5).

    ``targets`` rows are ``[cls, x1, y1, x2, y2]`` pixels. ``border`` (negative for mosaic) shrinks
    the output: out size = in size + 2 * border. Boxes are warped by their corners, clipped, and
    filtered with ``box_candidates``.
    """
    height, width = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = _affine_matrix(im.shape[:2], (width, height), degrees, translate, scale, shear, perspective)
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=(width, height), borderValue=fill)
        else:
            im = cv2.warpAffine(im, M[:2], dsize=(width, height), borderValue=fill)
    targets = np.asarray(targets, dtype=np.float32).reshape(-1, 5)
    if len(targets):
        new = transform_boxes(targets[:, 1:5], M, (width, height), perspective=bool(perspective))
        keep = box_candidates(box1=targets[:, 1:5].T * s, box2=new.T, area_thr=0.10)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return im, targets


def mosaic4(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], s: int,
            ) -> tuple[np.ndarray, np.ndarray]:
    """Place 4 images around a random centre on a (2s, 2s) canvas filled with grey.

    ``images`` are BGR uint8 with long side ``s``; ``labels`` (n_i, 5) ``[cls, x, y, w, h]``
    normalised to their image. Returns the canvas and (n, 5) ``[cls, x1, y1, x2, y2]`` canvas pixels,
    clipped to the canvas (boxes cut to nothing are removed later by ``random_perspective``).
    """
    border = -s // 2
    yc, xc = (int(random.uniform(-border, 2 * s + border)) for _ in range(2))
    canvas = np.full((s * 2, s * 2, images[0].shape[2]), PAD_VALUE, dtype=np.uint8)
    out = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        h, w = img.shape[:2]
        if i == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        out.append(labels_to_pixels(lab, w, h, x1a - x1b, y1a - y1b))
    boxes = np.concatenate(out, 0) if out else np.zeros((0, 5), np.float32)
    np.clip(boxes[:, 1:], 0, 2 * s, out=boxes[:, 1:])
    return canvas, boxes


def labels_to_pixels(labels: np.ndarray, w: float, h: float, padw: float = 0, padh: float = 0,
                     ) -> np.ndarray:
    """(n, 5) ``[cls, x, y, w, h]`` normalised -> (n, 5) ``[cls, x1, y1, x2, y2]`` pixels + offset."""
    out = np.array(labels, dtype=np.float32).reshape(-1, 5)
    if len(out):
        xy, wh = out[:, 1:3].copy(), out[:, 3:5].copy()
        out[:, 1] = w * (xy[:, 0] - wh[:, 0] / 2) + padw
        out[:, 2] = h * (xy[:, 1] - wh[:, 1] / 2) + padh
        out[:, 3] = w * (xy[:, 0] + wh[:, 0] / 2) + padw
        out[:, 4] = h * (xy[:, 1] + wh[:, 1] / 2) + padh
    return out


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Blend two equally sized images with r ~ Beta(32, 32) and keep both label sets (YOLOv5)."""
    r = np.random.beta(32.0, 32.0)
    im = (im * r + im2 * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)
