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


# Sizes relative to the image's mean side, so a 256 px and a 4000 px picture look alike: YOLOv5 draws
# 0.3 % lines and ~2.5 % text at 640 px. Text never drops below MIN_TEXT_PX, where Hershey stays legible.
LINE_FRACTION = 0.003
TEXT_FRACTION = 0.025
MIN_TEXT_PX = 9
_TEXT_PX_PER_SCALE = 27  # cv2.getTextSize height of FONT_HERSHEY_SIMPLEX at fontScale 1


def line_width_for(shape_hw: Sequence[int]) -> int:
    """Box line width in pixels for an image (or tile) of ``shape_hw`` = (h, w): 0.3 % of the mean side, >= 1."""
    return max(round((shape_hw[0] + shape_hw[1]) / 2 * LINE_FRACTION), 1)


def font_scale_for(shape_hw: Sequence[int]) -> float:
    """OpenCV fontScale giving text ~2.5 % of the mean side of ``shape_hw`` (h, w) tall, at least MIN_TEXT_PX."""
    return max((shape_hw[0] + shape_hw[1]) / 2 * TEXT_FRACTION, MIN_TEXT_PX) / _TEXT_PX_PER_SCALE


def label_box(corner: Sequence[int], text_wh: Sequence[int], bounds: Sequence[int]) -> tuple[int, int, int, int]:
    """Where a label tag of ``text_wh`` (w, h) pixels goes: (x1, y1, x2, y2), inside ``bounds`` (x1, y1, x2, y2).

    The tag sits above the box's top-left ``corner`` (x, y) when there is room, else just inside the box
    top; it is shifted left / up where it would cross the right / bottom bound. A tag wider or taller
    than the bounds starts at their left / top edge.
    """
    w, h = int(text_wh[0]), int(text_wh[1])
    x1 = max(min(int(corner[0]), bounds[2] - w), bounds[0])
    y1 = int(corner[1]) - h if int(corner[1]) - h >= bounds[1] else int(corner[1])
    y1 = max(min(y1, bounds[3] - h), bounds[1])
    return x1, y1, x1 + w, y1 + h


def text_color_on(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tag colours, white on dark ones (Rec. 601 luma of the BGR ``color``)."""
    luma = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    return (0, 0, 0) if luma > 150 else (255, 255, 255)


def draw_box_label(im: np.ndarray, xyxy: Sequence[float], label: str, color: tuple[int, int, int],
                   line_width: int, font_scale: float, bounds: Sequence[int] | None = None,
                   txt_color: tuple[int, int, int] | None = None) -> None:
    """Draw one box (x1, y1, x2, y2 pixels) on the BGR image ``im`` in place, with a filled label tag.

    The tag stays inside ``bounds`` (x1, y1, x2, y2; default the whole image), see :func:`label_box`;
    its text is black or white, whichever reads on ``color``, unless ``txt_color`` is given.
    """
    p1, p2 = (int(xyxy[0]), int(xyxy[1])), (int(xyxy[2]), int(xyxy[3]))
    cv2.rectangle(im, p1, p2, color, thickness=line_width, lineType=cv2.LINE_AA)
    if not label:
        return
    bounds = bounds or (0, 0, im.shape[1], im.shape[0])
    thickness = max(round(font_scale * 2), 1)
    (w, h), baseline = cv2.getTextSize(label, 0, fontScale=font_scale, thickness=thickness)
    pad = max(round(h * 0.2), 1)
    x1, y1, x2, y2 = label_box(p1, (w + 2 * pad, h + baseline + pad), bounds)
    cv2.rectangle(im, (x1, y1), (x2 - 1, y2 - 1), color, -1, cv2.LINE_AA)
    cv2.putText(im, label, (x1 + pad, y2 - baseline), 0, font_scale, txt_color or text_color_on(color),
                thickness=thickness, lineType=cv2.LINE_AA)


class Annotator:
    """Draws boxes and labels in place on a contiguous BGR uint8 image (H, W, 3).

    Line width and font size follow the image size (:func:`line_width_for`, :func:`font_scale_for`)
    unless ``line_width`` is given; labels always stay inside the image.
    """

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        self.im = np.ascontiguousarray(im)
        self.lw = line_width or line_width_for(im.shape[:2])
        self.font_scale = font_scale_for(im.shape[:2])

    def box_label(self, xyxy: Sequence[float], label: str = "", color: tuple[int, int, int] = (128, 128, 128),
                  txt_color: tuple[int, int, int] | None = None) -> None:
        """One box (x1, y1, x2, y2 pixels) and, if ``label``, a filled tag above it (inside when at the top edge)."""
        draw_box_label(self.im, xyxy, label, color, self.lw, self.font_scale, txt_color=txt_color)

    def result(self) -> np.ndarray:
        """The annotated BGR image."""
        return self.im


def draw_detections(im: np.ndarray, det: torch.Tensor | np.ndarray, names: Sequence[str],
                    line_width: int | None = None, hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
    """Draw detections (n, 6) x1, y1, x2, y2, conf, cls (pixels of ``im``) on a copy of the BGR image,
    lowest confidence first, so that where tags overlap the most confident one is drawn on top.

    ``line_width`` None: from the image size, like the label font.
    """
    annotator = Annotator(im.copy(), line_width=line_width)
    for *xyxy, conf, cls in sorted(det.tolist(), key=lambda row: row[4]):  # the highest confidence on top
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
