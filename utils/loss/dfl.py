"""The base of every strategy on the anchor-free ``dfl`` head (models/dfl_head.py): ``gfl``, ``tal``.

What such a strategy shares, written once: the check that its ``reg_max`` hyp key equals the head's,
the layout of a head row (``4 * (reg_max + 1)`` distance logits, then ``nc`` class logits), gathering
the rows an assignment names, decoding a row's distances into a box and encoding a target box into the
four side distances the Distribution Focal Loss pulls towards. Boxes are compared in grid units of
their level with the cell corner as origin (``box_grid`` of :class:`utils.assign.result.LevelCandidates`),
so positives of all levels are processed in one pass.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from utils.assign.result import AssignResult, LevelCandidates
from utils.boxes import xywh2xyxy
from utils.loss.base import LossStrategy, StrategyHyp, head_of
from utils.loss.functional import distribution_focal_loss


@dataclasses.dataclass(frozen=True)
class DFLHyp(StrategyHyp):
    """Keys every dfl-head strategy has."""

    reg_max: int = 16  # must equal the dfl head's reg_max (bins 0..reg_max per side)


class DFLLossStrategy(LossStrategy):
    """A strategy on the ``dfl`` head.

    preds: per level ``(bs, 1, ny, nx, n_dist + nc)`` raw logits, ``n_dist = 4 * (reg_max + 1)``
    (see :class:`models.dfl_head.DFLDetect`).
    """

    head: ClassVar[str] = "dfl"
    Hyp: ClassVar[type[StrategyHyp]] = DFLHyp

    def __init__(self, model: nn.Module, hyp: dict[str, Any]):
        super().__init__(model, hyp)
        det = head_of(model)
        if self.hyp.reg_max != det.reg_max:
            raise ValueError(f"hyp reg_max {self.hyp.reg_max} differs from the dfl head's reg_max {det.reg_max}")
        self.reg_max: int = det.reg_max
        self.n_dist: int = 4 * (det.reg_max + 1)

    @staticmethod
    def concat_levels(assignment: AssignResult | list[LevelCandidates]) -> LevelCandidates:
        """The rows of every level as one :class:`LevelCandidates` (level order kept)."""
        levels = list(assignment)
        if not levels:
            return LevelCandidates.empty()
        names = [f.name for f in dataclasses.fields(LevelCandidates)]
        return LevelCandidates(*(None if any(getattr(m, n) is None for m in levels)
                                 else torch.cat([getattr(m, n) for m in levels]) for n in names))

    @staticmethod
    def gather_rows(preds: list[torch.Tensor], assignment: AssignResult) -> torch.Tensor:
        """The head rows ``(n, no)`` of every assigned cell, levels concatenated in level order."""
        rows = [p.reshape(-1, p.shape[-1])[m.flat_rows(p)] for p, m in zip(preds, assignment)]
        return torch.cat(rows) if rows else preds[0].new_zeros((0, preds[0].shape[-1]))

    def boxes(self, dist: torch.Tensor, box_grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) xyxy ``(n, 4)`` in grid units, cell corner origin.

        dist (n, n_dist): distance logits of the rows; box_grid (n, 4): their objects' xywh in grid
        units relative to the cell corner (:func:`models.geometry.cell_frame`).
        """
        return self.box_coder.decode(dist), xywh2xyxy(box_grid.float())

    def dfl_per_row(self, dist: torch.Tensor, target_xyxy: torch.Tensor, eps: float) -> torch.Tensor:
        """Distribution Focal Loss of each row ``(n,)``, the mean over its four sides.

        The target distances (strides from the cell centre) are clamped to ``[0, reg_max - eps]`` so
        that both bins around them exist.
        """
        target_ltrb = self.box_coder.encode(target_xyxy, eps=eps)
        dfl = distribution_focal_loss(dist.reshape(-1, self.reg_max + 1), target_ltrb.reshape(-1))
        return dfl.view(-1, 4).mean(1)
