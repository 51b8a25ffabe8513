"""Anchor boxes of the YOLOv5 head for strategies that match in box space (``ssd``, ``freeanchor``).

One prior per (level, anchor, cell): centred on the cell centre, with the level's anchor w/h, in
pixels of the input image. Priors are flattened level by level, each level in (anchor, row, column)
order, i.e. the order of ``torch.cat([p.reshape(bs, -1, no) for p in preds], 1)`` for the head's
``(bs, na, ny, nx, no)`` outputs, so a prior's index is also the row of the flattened predictions.

Worked example: one level of stride 8 with a 2x2 grid and one anchor of 2x1 cells gives 4 priors,
row-major: (cx, cy, w, h) = (4, 4, 16, 8), (12, 4, 16, 8), (4, 12, 16, 8), (12, 12, 16, 8).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.boxes import xywh2xyxy


@dataclass
class AnchorPriors:
    """All anchor boxes of one input shape; every tensor has length m (all levels together)."""

    xyxy_px: torch.Tensor  # (m, 4) corners, pixels
    xywh_px: torch.Tensor  # (m, 4) centre and size, pixels
    stride_px: torch.Tensor  # (m,) pixels per cell of the prior's level
    level: torch.Tensor  # (m,) long
    anchor: torch.Tensor  # (m,) long, anchor index within the level
    gj: torch.Tensor  # (m,) long, cell row
    gi: torch.Tensor  # (m,) long, cell column

    def __len__(self) -> int:
        return self.level.shape[0]


@torch.no_grad()
def anchor_priors(anchors_grid: torch.Tensor, stride: torch.Tensor, grid_shapes: list[tuple[int, int]],
                  device: torch.device | str = "cpu") -> AnchorPriors:
    """The anchor boxes of every level.

    Args:
        anchors_grid (Tensor[nl, na, 2]): anchor w, h in grid units of each level (the head's
            ``anchors``).
        stride (Tensor[nl]): pixels per cell of each level.
        grid_shapes: ``(ny, nx)`` of each level.
        device: where the priors are made.
    """
    stride = stride.to(device=device, dtype=torch.float32)
    anchors_px = anchors_grid.to(device=device, dtype=torch.float32) * stride.view(-1, 1, 1)  # (nl, na, 2)
    na = anchors_grid.shape[1]
    parts = []
    for i, (ny, nx) in enumerate(grid_shapes):
        a, gj, gi = torch.meshgrid(torch.arange(na, device=device), torch.arange(ny, device=device),
                                   torch.arange(nx, device=device), indexing="ij")
        a, gj, gi = a.reshape(-1), gj.reshape(-1), gi.reshape(-1)  # (na * ny * nx,)
        centre = (torch.stack((gi, gj), 1).float() + 0.5) * stride[i]
        xywh = torch.cat((centre, anchors_px[i, a]), 1)
        parts.append((xywh2xyxy(xywh), xywh, stride[i].expand(len(a)), torch.full_like(a, i), a, gj, gi))
    return AnchorPriors(*(torch.cat(t) for t in zip(*parts)))


class PriorCache:
    """Keeps the priors of the last (grid shapes, device) seen; training batches rarely change shape."""

    def __init__(self, anchors_grid: torch.Tensor, stride: torch.Tensor):
        self.anchors_grid = anchors_grid
        self.stride = stride
        self._key: tuple | None = None
        self._priors: AnchorPriors | None = None

    def __call__(self, grid_shapes: list[tuple[int, int]], device: torch.device) -> AnchorPriors:
        key = (tuple(tuple(s) for s in grid_shapes), str(device))
        if key != self._key:
            self._priors = anchor_priors(self.anchors_grid, self.stride, grid_shapes, device)
            self._key = key
        return self._priors
