"""Read-only views of the current head outputs, for the rules that weigh predictions (SimOTA, TAL).

A view answers at given (image, prior) pairs only, never densely: the raw rows, the decoded boxes in
pixels and the joint class probabilities. It is built by the strategy from the head's own box coder, so
a rule reads the anchor head and the dfl head the same way:

* anchor head (YOLOv5 Detect): box = the YOLOv5 decode of ``x, y, w, h``; class probability
  ``sigmoid(cls) * sigmoid(obj)`` (objectness is part of the score, as in YOLOv7's OTA and DW);
* dfl head: box = the DFL expectation around the cell centre; class probability ``sigmoid(cls)``.

Everything is float32 and detached.
"""
from __future__ import annotations

import abc

import torch

from models.geometry import CELL_CENTRE
from utils.assign.priors import HeadPriors
from utils.boxes import xywh2xyxy


class PredictionView(abc.ABC):
    """The head outputs ``preds`` (per level ``(bs, na, ny, nx, no)``) seen through ``priors``."""

    def __init__(self, preds: list[torch.Tensor], priors: HeadPriors, box_coder: object):
        self.preds = [p.detach() for p in preds]
        self.priors = priors
        self.box_coder = box_coder

    def rows(self, image: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Raw output rows (k, no) float32 of the (image (k,), global prior (k,)) pairs."""
        no = self.preds[0].shape[-1]
        out = torch.empty((prior.shape[0], no), device=prior.device)
        for p, lv in zip(self.preds, self.priors.levels):
            on = ((prior >= lv.start) & (prior < lv.start + p[0].numel() // no)).nonzero().squeeze(1)
            flat = image[on] * (p[0].numel() // no) + prior[on] - lv.start
            out[on] = p.reshape(-1, no).index_select(0, flat).float()
        return out

    @abc.abstractmethod
    def boxes_xyxy_px(self, rows: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Decoded boxes (k, 4) x1y1x2y2 pixels of ``rows`` (k, no) at their priors (k,)."""

    @abc.abstractmethod
    def class_probs(self, rows: torch.Tensor) -> torch.Tensor:
        """Joint class probabilities (k, nc) of ``rows`` (k, no)."""

    def pair(self, image: torch.Tensor, prior: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probability (k,) of class ``cls`` (k,), box (k, 4) xyxy px) at each (image, prior)."""
        rows = self.rows(image, prior)
        return self.class_probs(rows).gather(1, cls[:, None]).squeeze(1), self.boxes_xyxy_px(rows, prior)


class AnchorView(PredictionView):
    """The YOLOv5 Detect head: rows ``[x, y, w, h, obj, cls...]``."""

    def boxes_xyxy_px(self, rows: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        level, anchor, gj, gi = self.priors.locate(prior)
        stride = torch.tensor(self.priors.strides, device=rows.device, dtype=torch.float32)[level, None]  # (k, 1)
        anchor_wh = self.priors.anchors_grid.to(rows.device)[level, anchor]  # (k, 2) grid units
        cell = torch.stack((gi, gj), 1)
        return xywh2xyxy(self.box_coder.decode(rows[:, :4], anchor_wh * stride, cell, stride))

    def class_probs(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, 5:].sigmoid().mul_(rows[:, 4:5].sigmoid())


class DFLView(PredictionView):
    """The anchor-free dfl head: rows ``[4 * (reg_max + 1) distance logits, cls...]``."""

    def __init__(self, preds: list[torch.Tensor], priors: HeadPriors, box_coder: object, n_dist: int):
        super().__init__(preds, priors, box_coder)
        self.n_dist = n_dist

    def boxes_xyxy_px(self, rows: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        level, _, gj, gi = self.priors.locate(prior)
        stride = torch.tensor(self.priors.strides, device=rows.device, dtype=torch.float32)[level, None]
        centre = torch.stack((gi, gj), 1).float() + CELL_CENTRE  # grid units
        return self.box_coder.decode(rows[:, :self.n_dist], centre) * stride

    def class_probs(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, self.n_dist:].sigmoid()
