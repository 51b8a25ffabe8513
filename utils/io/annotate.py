"""Drawing detections on BGR uint8 images with OpenCV, and saving box crops."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from utils.boxes import clip_boxes, xywh2xyxy, xyxy2xywh
from utils.io.paths import increment_path

# 20 well-separated colours, RGB hex; class i uses entry i mod 20
_PALETTE_HEX = ("E6194B", "3CB44B", "FFB000", "4363D8", "F58231", "911EB4", "42D4F4", "F032E6", "BFEF45", "FABED4",
                "469990", "DCBEFF", "9A6324", "800000", "AAFFC3", "808000", "FFD8B1", "000075", "A9A9A9", "00A86B")


def class_color(index: int, bgr: bool = True) -> tuple[int, int, int]:
    """Palette colour of class ``index`` as a (B, G, R) tuple (or (R, G, B) when ``bgr`` is False)."""
    h = _PALETTE_HEX[int(index) % len(_PALETTE_HEX)]
    rgb = tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
    return rgb[::-1] if bgr else rgb


class Annotator:
    """Draws boxes and labels in place on a contiguous BGR uint8 image (H, W, 3).

    ``line_width`` defaults to 0.3 % of the mean image side (at least 2 px), as YOLOv5.
    """

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        self.im = np.ascontiguousarray(im)
        self.lw = line_width or max(round(sum(im.shape[:2]) / 2 * 0.003), 2)

    def box_label(self, xyxy: Sequence[float], label: str = "", color: tuple[int, int, int] = (128, 128, 128),
                  txt_color: tuple[int, int, int] = (255, 255, 255)) -> None:
        """One box (x1, y1, x2, y2 pixels) and, if ``label``, a filled tag above it (inside when at the top edge)."""
        p1, p2 = (int(xyxy[0]), int(xyxy[1])), (int(xyxy[2]), int(xyxy[3]))
        cv2.rectangle(self.im, p1, p2, color, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        thickness = max(self.lw - 1, 1)
        scale = self.lw / 3
        (w, h), _ = cv2.getTextSize(label, 0, fontScale=scale, thickness=thickness)
        outside = p1[1] - h - 3 >= 0
        corner = (p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3)
        cv2.rectangle(self.im, p1, corner, color, -1, cv2.LINE_AA)
        text_y = p1[1] - 2 if outside else p1[1] + h + 2
        cv2.putText(self.im, label, (p1[0], text_y), 0, scale, txt_color, thickness=thickness, lineType=cv2.LINE_AA)

    def result(self) -> np.ndarray:
        """The annotated BGR image."""
        return self.im


def draw_detections(im: np.ndarray, det: torch.Tensor | np.ndarray, names: Sequence[str], line_width: int = 3,
                    hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
    """Draw detections (n, 6) x1, y1, x2, y2, conf, cls (pixels of ``im``) on a copy of the BGR image."""
    annotator = Annotator(im.copy(), line_width=line_width)
    for *xyxy, conf, cls in det.tolist():
        c = int(cls)
        name = names[c] if c < len(names) else str(c)
        label = None if hide_labels else (name if hide_conf else f"{name} {conf:.2f}")
        annotator.box_label(xyxy, label or "", color=class_color(c))
    return annotator.result()


def save_one_box(xyxy: Sequence[float] | torch.Tensor, im: np.ndarray, file: str | Path = "im.jpg",
                 gain: float = 1.02, pad: int = 10, square: bool = False, save: bool = True) -> np.ndarray:
    """Crop ``im`` (BGR, H x W x 3) around one xyxy box grown by ``gain`` and ``pad`` pixels; optionally save it.

    The crop is written to ``file`` as .jpg, numbered (``name2.jpg`` ...) if the name is taken, with
    parent folders created. Returns the crop (a view-free copy).
    """
    box = torch.as_tensor(xyxy, dtype=torch.float32).view(-1, 4)
    b = xyxy2xywh(box)
    if square:
        b[:, 2:] = b[:, 2:].max(1, keepdim=True).values
    b[:, 2:] = b[:, 2:] * gain + pad
    box = clip_boxes(xywh2xyxy(b), im.shape[:2]).long()[0].tolist()
    crop = np.ascontiguousarray(im[box[1]:box[3], box[0]:box[2]])
    if save:
        path = increment_path(Path(file).with_suffix(".jpg"))
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), crop)
    return crop
