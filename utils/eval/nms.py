"""Non-maximum suppression with YOLOv5 v7.0 semantics.

Input rows are ``(x, y, w, h, obj, cls_0 .. cls_{nc-1})`` with the box in pixels and the scores
already passed through a sigmoid, exactly what ``Model`` returns in eval mode. Output rows are
``(x1, y1, x2, y2, conf, cls)`` with ``conf = obj * p(cls)``.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torchvision

from utils.boxes import xywh2xyxy

LOGGER = logging.getLogger(__name__)

MAX_WH = 7680  # class offset in pixels: larger than any image side, so classes never overlap


def _candidates(x: torch.Tensor, conf_thres: float, multi_label: bool) -> torch.Tensor:
    """One image's (n, 5 + nc) rows above the objectness threshold -> (k, 6) xyxy/conf/cls rows."""
    scores = x[:, 5:] * x[:, 4:5]  # (n, nc) conf = obj * p(cls)
    box = xywh2xyxy(x[:, :4])  # (n, 4)
    if multi_label:
        i, j = (scores > conf_thres).nonzero(as_tuple=False).T
        return torch.cat((box[i], scores[i, j, None], j[:, None].float()), 1)
    conf, j = scores.max(1, keepdim=True)
    return torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]


def _greedy_nms_first(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, max_det: int) -> torch.Tensor:
    """The first ``max_det`` boxes greedy NMS keeps, for boxes sorted by descending score.

    Whether greedy NMS keeps a box depends only on the higher-scoring boxes, so NMS of the
    ``m`` best boxes keeps exactly the full run's kept boxes among them: once that prefix yields
    ``max_det`` of them they are the answer. Starting from a few times ``max_det`` and growing the
    prefix x4 costs at most ~4/3 of one full run, and saves the quadratic cost of NMS over
    thousands of low-scoring candidates (a model early in training, or a strategy such as ``ssd``
    whose hard-negative mining leaves most background scores above ``conf_thres = 0.001``).
    """
    n = boxes.shape[0]
    m = min(n, max(1024, 4 * max_det))
    while True:
        keep = torchvision.ops.nms(boxes[:m], scores[:m], iou_thres)
        if len(keep) >= max_det or m == n:
            return keep[:max_det]
        m = min(n, 4 * m)


def non_max_suppression(prediction: torch.Tensor | Sequence, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        classes: Sequence[int] | None = None, agnostic: bool = False, multi_label: bool = False,
                        max_det: int = 300, max_nms: int = 30000) -> list[torch.Tensor]:
    """Per-image, per-class NMS.

    Args:
        prediction: Tensor[bs, N, 5 + nc] of (x, y, w, h) pixels, objectness and class probabilities,
            or the ``(pred, raw)`` tuple an eval-mode model returns (only ``pred`` is used).
        conf_thres: a box is a candidate when obj > conf_thres, and is kept when obj * p(cls) > conf_thres.
        iou_thres: boxes of one class overlapping a higher-scoring one by IoU > iou_thres are dropped.
        classes: keep only these class ids (None keeps all).
        agnostic: suppress across classes as if all boxes had one class.
        multi_label: one row per (box, class) pair above the threshold instead of the best class only;
            has no effect when nc == 1.
        max_det: at most this many boxes per image after NMS.
        max_nms: at most this many highest-scoring candidates enter torchvision's NMS.

    Returns:
        list of length bs of Tensor[n, 6] (x1, y1, x2, y2, conf, cls), sorted by conf, on the input's device.
    """
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres {conf_thres} and iou_thres {iou_thres} must lie in [0, 1]")
    bs, nc = prediction.shape[0], prediction.shape[2] - 5
    multi_label &= nc > 1
    wanted = None if classes is None else torch.tensor(list(classes), device=prediction.device).float()
    output = [torch.zeros((0, 6), device=prediction.device)] * bs
    for xi, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres]  # (n, 5 + nc)
        if not x.shape[0]:
            continue
        x = _candidates(x, conf_thres, multi_label)  # (k, 6)
        if wanted is not None:
            x = x[(x[:, 5:6] == wanted).any(1)]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        offsets = x[:, 5:6] * (0 if agnostic else MAX_WH)  # shifts each class into its own region
        output[xi] = x[_greedy_nms_first(x[:, :4] + offsets, x[:, 4], iou_thres, max_det)]
    return output
