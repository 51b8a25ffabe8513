"""Head geometry: where the priors sit (per level: cell centres, stride, anchor sizes) and the box coders.

The heads own these and use them at inference; every loss strategy uses the same objects in training
(``head.prior_generator()``, ``head.box_coder``), so the YOLOv5 decode and the DFL expectation are
written once, here.

Conventions. A level of stride ``s`` has ``ny x nx`` cells; cell ``(gi, gj)`` (column, row) has its
top-left corner at ``(gi, gj)`` and its centre at ``(gi + 0.5, gj + 0.5)`` in grid units, i.e.
``((gi + 0.5) * s, (gj + 0.5) * s)`` pixels. Anchor sizes are kept in grid units of their level
(the anchor head's ``anchors`` buffer). Priors are numbered level by level, each level in
(anchor, row, column) order: the row order of ``torch.cat([p.reshape(bs, -1, no) for p in preds], 1)``
for the heads' ``(bs, na, ny, nx, no)`` outputs.

Worked example: one level of stride 8 with a 2x2 grid and one anchor of 2x1 cells gives 4 anchor
boxes, row-major, (cx, cy, w, h) px = (4, 4, 16, 8), (12, 4, 16, 8), (4, 12, 16, 8), (12, 12, 16, 8).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.boxes import xywh2xyxy

CELL_CENTRE = 0.5  # a cell's centre, in cells from its top-left corner


def head_conv(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A head's output conv on ``x``, in float32 under bfloat16 autocast.

    bfloat16 keeps 8 significant bits: run in it, the raw box, objectness and class logits the losses
    and the decode start from (and their gradients back into the head) are rounded to ~0.4 %, which
    float16 autocast (11 bits, YOLOv5's CUDA AMP, left as it is) does not do. The 1x1 output convs
    are ~1 % of the network's FLOPs, so keeping them float32 costs little."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16:
        with torch.autocast(kind, enabled=False):
            return conv(x.float())
    return conv(x)


def float_under_autocast(raw: list[torch.Tensor]) -> list[torch.Tensor]:
    """The heads' raw outputs as their decode takes them: float32 under autocast (bfloat16 keeps 8
    significant bits, so pixel boxes at 320-640 px would be off by 2-4 px), else as they are (a
    ``model.half()`` decodes in float16, as YOLOv5 does)."""
    if raw and torch.is_autocast_enabled(raw[0].device.type):
        return [r.float() for r in raw]
    return raw


@dataclass
class LevelPriors:
    """Geometry of one head level; its priors are flat rows ``start .. start + na * ny * nx``."""

    start: int
    ny: int
    nx: int
    stride: float  # pixels per cell
    anchors_grid: torch.Tensor  # (na, 2) anchor w, h in grid units (anchor-free head: (1, 2) zeros)

    @property
    def na(self) -> int:
        return self.anchors_grid.shape[0]

    @property
    def anchor_wh_px(self) -> torch.Tensor:
        """(na, 2) anchor w, h in pixels (float32)."""
        return self.anchors_grid.float() * self.stride

    def centres_px(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell-centre x of every column (nx,) and y of every row (ny,), pixels, float32."""
        return ((torch.arange(self.nx, device=device, dtype=torch.float32) + CELL_CENTRE) * self.stride,
                (torch.arange(self.ny, device=device, dtype=torch.float32) + CELL_CENTRE) * self.stride)


def cell_grid(ny: int, nx: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Top-left corners (ny, nx, 2) of every cell as (x, y) grid units, rows in raster order."""
    yv, xv = torch.meshgrid(torch.arange(ny, device=device, dtype=dtype),
                            torch.arange(nx, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xv, yv), 2)


def cell_frame(box_xywh_grid: torch.Tensor, gi: torch.Tensor, gj: torch.Tensor) -> torch.Tensor:
    """Target boxes ``(n, 4)`` xywh in grid units -> the same with xy relative to the top-left corner
    of cell ``(gi, gj)`` (n each): the frame every strategy compares a cell's prediction in."""
    out = box_xywh_grid.clone()
    out[:, 0] -= gi
    out[:, 1] -= gj
    return out


def cell_centres(ny: int, nx: int, stride: float, device: torch.device | str) -> torch.Tensor:
    """Cell centres (ny * nx, 2) as (x, y) pixels, float32, rows in raster order (y major)."""
    return (cell_grid(ny, nx, device).view(-1, 2) + CELL_CENTRE) * stride


@dataclass
class AnchorPriors:
    """Every anchor box of one input shape; every tensor has length m (all levels together)."""

    xyxy_px: torch.Tensor  # (m, 4) corners, pixels
    xywh_px: torch.Tensor  # (m, 4) centre and size, pixels
    stride_px: torch.Tensor  # (m,) pixels per cell of the prior's level
    level: torch.Tensor  # (m,) long
    anchor: torch.Tensor  # (m,) long, anchor index within the level
    gj: torch.Tensor  # (m,) long, cell row
    gi: torch.Tensor  # (m,) long, cell column
    cell_xy: torch.Tensor  # (m, 2) float, the cell's top-left corner (gi, gj) in grid units

    def __len__(self) -> int:
        return self.level.shape[0]


class PriorGenerator:
    """The priors of a head: per level the cells, the stride and the anchor sizes.

    Args:
        stride (Tensor[nl]): pixels per cell of each level.
        anchors_grid (Tensor[nl, na, 2] or None): anchor w, h in grid units of each level; None for
            an anchor-free head (one point prior per cell, ``na = 1``).

    The tensors are copied, so later in-place changes to the head (AutoAnchor) do not leak in.
    """

    def __init__(self, stride: torch.Tensor, anchors_grid: torch.Tensor | None = None):
        self.stride = stride.detach().float().cpu().clone()
        nl = self.stride.shape[0]
        self.anchors_grid = (torch.zeros(nl, 1, 2) if anchors_grid is None
                             else anchors_grid.detach().float().cpu().clone())  # (nl, na, 2)
        self._key: tuple | None = None
        self._boxes: AnchorPriors | None = None

    @property
    def nl(self) -> int:
        return self.stride.shape[0]

    @property
    def na(self) -> int:
        return self.anchors_grid.shape[1]

    def levels(self, grid_shapes: list[tuple[int, int]], device: torch.device | str = "cpu") -> list[LevelPriors]:
        """The geometry of every level for these ``(ny, nx)`` grid shapes."""
        out, start = [], 0
        for i, (ny, nx) in enumerate(grid_shapes):
            out.append(LevelPriors(start, ny, nx, float(self.stride[i]), self.anchors_grid[i].to(device)))
            start += self.na * ny * nx
        return out

    def anchors_on(self, ref: torch.Tensor) -> torch.Tensor:
        """The anchors (nl, na, 2) grid units on ``ref``'s device and dtype."""
        return self.anchors_grid.to(device=ref.device, dtype=ref.dtype)

    @torch.no_grad()
    def anchor_boxes(self, grid_shapes: list[tuple[int, int]], device: torch.device | str = "cpu") -> AnchorPriors:
        """Every anchor box (cell centre + anchor w, h) of every level, flat in prior order.

        The result of the last (grid shapes, device) asked for is kept: training batches rarely
        change shape.
        """
        key = (tuple(tuple(s) for s in grid_shapes), str(device))
        if key == self._key:
            return self._boxes
        parts = []
        for i, lv in enumerate(self.levels(grid_shapes, device)):
            a, gj, gi = torch.meshgrid(torch.arange(lv.na, device=device), torch.arange(lv.ny, device=device),
                                       torch.arange(lv.nx, device=device), indexing="ij")
            a, gj, gi = a.reshape(-1), gj.reshape(-1), gi.reshape(-1)  # (na * ny * nx,)
            centre = (torch.stack((gi, gj), 1).float() + CELL_CENTRE) * lv.stride
            xywh = torch.cat((centre, lv.anchor_wh_px[a]), 1)
            stride = torch.full((len(a),), lv.stride, device=device)
            parts.append((xywh2xyxy(xywh), xywh, stride, torch.full_like(a, i), a, gj, gi,
                          torch.stack((gi, gj), 1).float()))
        self._boxes = AnchorPriors(*(torch.cat(t) for t in zip(*parts)))
        self._key = key
        return self._boxes


class YOLOBoxCoder:
    """YOLOv5 v6/v7 box coding of the anchor head (the one place the decode is written).

    decode: ``xy = (2 sigmoid(t_xy) - 0.5 + cell) * stride``, ``wh = (2 sigmoid(t_wh))^2 * anchor``:
    a prediction's centre stays within 1.5 cells of its cell's corner (one cell of its centre) and its
    size within (0, 4) anchors. encode: a target box in grid units relative to the corner of the cell
    that predicts it, the frame the training losses compare decoded boxes in (stride 1, cell 0).
    """

    @staticmethod
    def decode_xy(xy_logits: torch.Tensor, cell_xy: torch.Tensor | None = None,
                  stride: torch.Tensor | float | None = None) -> torch.Tensor:
        """Box centres from ``(..., 2)`` logits (elementwise, so any layout that broadcasts): in cells
        from the cell's corner, or from the grid origin given ``cell_xy``, times ``stride`` if given."""
        xy = xy_logits.sigmoid() * 2 - 0.5
        if cell_xy is not None:
            xy = xy + cell_xy
        return xy if stride is None else xy * stride

    @staticmethod
    def decode_wh(wh_logits: torch.Tensor, anchor_wh: torch.Tensor) -> torch.Tensor:
        """Box sizes from ``(..., 2)`` logits, in the unit of ``anchor_wh``."""
        return (wh_logits.sigmoid() * 2) ** 2 * anchor_wh

    @staticmethod
    def log_wh_gain(wh_logits: torch.Tensor) -> torch.Tensor:
        """``log(wh / anchor) = 2 log(2 sigmoid(t))``, exact where ``sigmoid`` underflows."""
        return 2 * (torch.nn.functional.logsigmoid(wh_logits) + 0.6931471805599453)

    @classmethod
    def decode(cls, box_logits: torch.Tensor, anchor_wh: torch.Tensor, cell_xy: torch.Tensor | None = None,
               stride: torch.Tensor | float | None = None) -> torch.Tensor:
        """``(..., 4)`` logits -> ``(..., 4)`` xywh: xy as :meth:`decode_xy`, wh in the unit of
        ``anchor_wh`` (grid units for the cell frame, pixels with ``stride``)."""
        return torch.cat((cls.decode_xy(box_logits[..., :2], cell_xy, stride),
                          cls.decode_wh(box_logits[..., 2:4], anchor_wh)), -1)

    encode = staticmethod(cell_frame)


class DFLBoxCoder:
    """Distance coding of the anchor-free ``dfl`` head (GFL): four side distances from the cell centre.

    Each side is a distribution over the bins ``0 .. reg_max`` (strides); its expectation is the
    distance. decode: ``xyxy = (cx - l, cy - t, cx + r, cy + b)``; encode: the inverse, clamped to
    ``[0, reg_max - eps]`` so the two DFL bins around it exist.
    """

    def __init__(self, reg_max: int):
        self.reg_max = reg_max
        self._project = torch.arange(reg_max + 1, dtype=torch.float32)

    def expectation(self, dist_logits: torch.Tensor) -> torch.Tensor:
        """``(..., 4 * (reg_max + 1))`` logits -> ``(..., 4)`` expected left, top, right, bottom (float32)."""
        if self._project.device != dist_logits.device:
            self._project = self._project.to(dist_logits.device)
        prob = dist_logits.float().unflatten(-1, (4, self.reg_max + 1)).softmax(-1)
        return prob @ self._project

    @staticmethod
    def decode_distances(ltrb: torch.Tensor, centre_xy: torch.Tensor | float = CELL_CENTRE) -> torch.Tensor:
        """``(..., 4)`` side distances -> ``(..., 4)`` xyxy around ``centre_xy`` (same unit)."""
        return torch.cat((centre_xy - ltrb[..., :2], centre_xy + ltrb[..., 2:]), -1)

    def decode(self, dist_logits: torch.Tensor, centre_xy: torch.Tensor | float = CELL_CENTRE) -> torch.Tensor:
        """Distance logits -> ``(..., 4)`` xyxy in strides; the default centre is the cell's (0.5, 0.5)
        with the cell corner as origin."""
        return self.decode_distances(self.expectation(dist_logits), centre_xy)

    def encode(self, box_xyxy: torch.Tensor, centre_xy: torch.Tensor | float = CELL_CENTRE,
               eps: float = 0.1) -> torch.Tensor:
        """``(n, 4)`` xyxy in strides -> ``(n, 4)`` left, top, right, bottom distances from ``centre_xy``,
        clamped to ``[0, reg_max - eps]`` (GFocal / mmdetection's ``bbox2distance``)."""
        ltrb = torch.cat((centre_xy - box_xyxy[..., :2], box_xyxy[..., 2:] - centre_xy), -1)
        return ltrb.clamp(0, self.reg_max - eps)
