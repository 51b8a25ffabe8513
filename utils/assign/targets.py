"""The targets of one batch in every form the matching rules and losses read, built once per call.

The loader hands ``targets`` (Tensor[n, 6] ``[image, class, x, y, w, h]``, xywh normalised 0..1 of the
letterboxed image) and ``imgs`` (Tensor[bs, 3, H, W]); :meth:`Targets.build` reads the image size from
``imgs`` in this one place (the YOLOv5/YOLOv7 contract of passing ``imgs`` to the loss is kept) and
scales the boxes once, so no rule or strategy rescales targets itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.boxes import xywh2xyxy


@dataclass(frozen=True)
class Targets:
    """One batch's objects; every tensor has n rows, in the loader's order (row r is target r).

    normalised (Tensor[n, 6] float32): the loader's ``[image, class, x, y, w, h]``, xywh 0..1.
    image, cls (Tensor[n] long): batch index and class of each object.
    xywh_px, xyxy_px (Tensor[n, 4] float32): the boxes in pixels of the input image.
    img_hw: (height, width) of the input image in pixels; bs: images in the batch.
    """

    normalised: torch.Tensor
    image: torch.Tensor
    cls: torch.Tensor
    xywh_px: torch.Tensor
    xyxy_px: torch.Tensor
    img_hw: tuple[int, int]
    bs: int

    @staticmethod
    def build(targets: torch.Tensor, imgs: torch.Tensor) -> "Targets":
        """The loader's ``targets`` (n, 6) and the batch ``imgs`` (bs, 3, H, W) -> :class:`Targets`."""
        return Targets.of_size(targets, (int(imgs.shape[-2]), int(imgs.shape[-1])), int(imgs.shape[0]))

    @staticmethod
    def of_size(targets: torch.Tensor, img_hw: tuple[int, int], bs: int) -> "Targets":
        """The loader's ``targets`` (n, 6) for ``bs`` images of ``img_hw`` (height, width) pixels."""
        t = targets.float()
        h, w = img_hw
        xywh = t[:, 2:6] * torch.tensor([w, h, w, h], device=t.device, dtype=torch.float32)
        return Targets(t, t[:, 0].long(), t[:, 1].long(), xywh, xywh2xyxy(xywh), (int(h), int(w)), int(bs))

    def __len__(self) -> int:
        return self.normalised.shape[0]

    def xywh_grid(self, ny: int, nx: int, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """The boxes (of ``rows``) as xywh in grid units of a level with ``ny x nx`` cells (k, 4).

        Formed as ``normalised * (nx, ny)`` (YOLOv5's gain), which equals ``pixels / stride`` bit for
        bit when the stride is a power of two (scaling by one is exact in floating point).
        """
        t = self.normalised[rows, 2:6]
        return t * torch.tensor([nx, ny, nx, ny], device=t.device, dtype=t.dtype)
