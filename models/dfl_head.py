"""The ``dfl`` head: anchor-free joint class-quality scores and a distance distribution (GFL).

Used by the ``gfl`` loss strategy (utils/loss/gfl.py). It replaces the ``Detect`` row of a YOLOv5
model YAML; backbone and neck, and their parameter names, stay YOLOv5's. The row's ``anchors``
argument only gives the number of levels (one prediction per grid cell, no anchor boxes).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.geometry import CELL_CENTRE, DFLBoxCoder, PriorGenerator, cell_grid, float_under_autocast, head_conv
from utils.boxes import xyxy2xywh

REG_MAX = 16  # bins 0..16 per side, in units of the level's stride (GFL's default)
CLS_PRIOR = 0.01  # initial class probability, as GFL / RetinaNet


class DFLDetect(nn.Module):
    """GFL-style head: one 1x1 conv per level predicting ``4 * (reg_max + 1) + nc`` channels per cell.

    Training output, per level: ``(B, 1, ny, nx, no)`` raw logits, ``no = 4 * (reg_max + 1) + nc``;
    the singleton second axis keeps the ``(B, na, ny, nx, no)`` layout of the anchor head so that
    ``LevelCandidates`` rows (image, anchor=0, gj, gi) index it directly. Channels:
        ``[0, 4 * (reg_max + 1))``   distance logits, side-major: left, top, right, bottom, each
                                     ``reg_max + 1`` bins; the distance from the cell centre to that
                                     side is the softmax expectation over bins 0..reg_max, in strides;
        ``[4 * (reg_max + 1), no)``  ``nc`` joint class-quality logits (sigmoid = class score x IoU).
    The cell centre is ``((gi + 0.5) * stride, (gj + 0.5) * stride)`` pixels (GFL / mmdetection).

    Eval output: ``(decoded (B, N, 5 + nc), raw list)`` as the anchor head, with the objectness
    column fixed to 1.0 so that NMS's ``obj * p(cls)`` is the class-quality score itself.
    """

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list[int] = (), reg_max: int = REG_MAX) -> None:
        super().__init__()
        self.nc = nc
        self.reg_max = reg_max
        self.nl = len(anchors)  # the YAML's anchors only give the number of levels
        self.na = 1
        self.n_dist = 4 * (reg_max + 1)
        self.no = self.n_dist + nc
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no, 1) for x in ch)
        self.box_coder = DFLBoxCoder(reg_max)
        self._grids: dict[tuple, torch.Tensor] = {}

    def prior_generator(self) -> PriorGenerator:
        """The priors of this head: one point per cell (no anchor sizes)."""
        return PriorGenerator(self.stride)

    @torch.no_grad()
    def initialize(self, stride: torch.Tensor) -> None:
        """Set the strides; GFL's init: weights N(0, 0.01), class bias at prior 0.01, distance bias 0
        (a uniform distribution, i.e. every side starts at reg_max / 2 strides)."""
        self.stride = stride.to(self.m[0].weight.device, torch.float32)
        for conv in self.m:
            nn.init.normal_(conv.weight, std=0.01)
            conv.bias.zero_()
            conv.bias[self.n_dist:] = -math.log((1 - CLS_PRIOR) / CLS_PRIOR)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """x: list of nl feature maps (B, C_i, ny, nx) -> list of (B, 1, ny, nx, no) logits,
        plus, in eval mode, the decoded (B, N, 5 + nc) in front (see ``decode``)."""
        raw = []
        for i, xi in enumerate(x):
            y = head_conv(self.m[i], xi)
            bs, _, ny, nx = y.shape
            raw.append(y.view(bs, 1, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        raw = float_under_autocast(raw)
        return self.decode(raw), raw

    def _centres(self, nx: int, ny: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Cell centres (1, ny * nx, 2) as (x, y) in grid units, cached per size, device and dtype."""
        key = (nx, ny, device, dtype)
        if key not in self._grids:
            self._grids[key] = cell_grid(ny, nx, device, dtype).view(1, ny * nx, 2) + CELL_CENTRE
        return self._grids[key]

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """raw: list of (B, 1, ny, nx, no) logits -> (B, N, 5 + nc), N = sum ny * nx.

        Columns: x, y, w, h in input-image pixels of the box (:class:`models.geometry.DFLBoxCoder`
        around the cell centre), then 1.0 (no objectness), then the class-quality sigmoids. Rows are
        ordered level, y, x.
        """
        out = []
        for i, r in enumerate(raw):
            bs, _, ny, nx, _ = r.shape
            r = r.view(bs, ny * nx, self.no)
            centre = self._centres(nx, ny, r.device, torch.float32)
            xywh = xyxy2xywh(self.box_coder.decode(r[..., :self.n_dist], centre)) * self.stride[i]
            obj = xywh.new_ones(1).expand_as(xywh[..., :1])  # not ones_like: ONNX traces would fix its shape
            out.append(torch.cat((xywh, obj, r[..., self.n_dist:].float().sigmoid()), -1).to(r.dtype))
        return torch.cat(out, 1)
