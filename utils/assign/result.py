"""The one assignment result every strategy's ``assign()`` returns and its ``losses()`` consumes.

An assignment is a set of rows per head level; a row pairs one prediction (image, anchor, cell) with
one target, and may carry a soft weight. What a row means depends on the rule, and the result says it
(``AssignResult.row_kind``): a positive (``yolov5``, ``ota``, ``ssd``, ``gfl``, ``tal``: ``tal``'s soft
target in ``weight``), a bag member (``freeanchor``) or a weighted candidate (``dw``). ``tools/show_assign.py`` draws exactly these rows. Rule-specific by-products that the
losses need and that are computed without gradient (FreeAnchor's matched class probabilities, DW's
negative IoU factors) travel in ``extras``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import torch


@dataclass
class LevelCandidates:
    """The assigned (target, anchor, cell) rows of one level; all tensors have length n.

    image (long): batch index; anchor (long): anchor index at this level (0 on the anchor-free
    head); gj, gi (long): cell row and column; target (long): row of the target in the loader's
    ``targets``; cls (long): its class; box_xywh_cell (float (n, 4)): the target's xywh in the
    cell frame: grid units of the level, xy relative to the cell's top-left corner
    (:func:`models.geometry.cell_frame`; ``box_grid`` before, still readable); anchor_wh (float (n, 2)):
    the anchor's w, h in grid units; weight (float (n,) or None): a soft weight where the rule has one
    (``dw``, ``freeanchor``; ``tal``'s soft targets), else None.
    """

    image: torch.Tensor
    anchor: torch.Tensor
    gj: torch.Tensor
    gi: torch.Tensor
    target: torch.Tensor
    cls: torch.Tensor
    box_xywh_cell: torch.Tensor
    anchor_wh: torch.Tensor
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    @property
    def box_grid(self) -> torch.Tensor:
        """The former name of :attr:`box_xywh_cell`, kept for code written against it."""
        return self.box_xywh_cell

    def flat_rows(self, pred: torch.Tensor) -> torch.Tensor:
        """Row of each candidate in ``pred.reshape(-1, no)`` for this level's ``(bs, na, ny, nx, no)``
        head output (one index instead of four)."""
        _, na, ny, nx, _ = pred.shape
        return self.image.mul(na).add_(self.anchor).mul_(ny).add_(self.gj).mul_(nx).add_(self.gi)

    def select(self, keep: torch.Tensor) -> "LevelCandidates":
        """Rows picked by a bool mask or an index tensor."""
        return LevelCandidates(*(None if getattr(self, f.name) is None else getattr(self, f.name)[keep]
                                 for f in fields(self)))

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> "LevelCandidates":
        """A level with no rows."""
        z = torch.zeros(0, dtype=torch.long, device=device)
        return LevelCandidates(z, z, z, z, z, z, torch.zeros((0, 4), device=device), torch.zeros((0, 2), device=device))


POSITIVE_ROW, BAG_MEMBER_ROW, WEIGHTED_CANDIDATE_ROW = "positive", "bag member", "weighted candidate"
ROW_KINDS = (POSITIVE_ROW, BAG_MEMBER_ROW, WEIGHTED_CANDIDATE_ROW)


@dataclass
class AssignResult:
    """One batch's assignment: rows per level plus the rule's no-grad by-products.

    Iterating, indexing and ``len`` go over the levels, so ``for m in result`` reads like the list
    of :class:`LevelCandidates` it holds.
    """

    levels: list[LevelCandidates]
    num_targets: int  # objects in the batch (candidates or not), for normalisers
    extras: dict[str, Any] = field(default_factory=dict)
    row_kind: str = POSITIVE_ROW  # what every row is: one of ROW_KINDS

    def __post_init__(self) -> None:
        if self.row_kind not in ROW_KINDS:
            raise ValueError(f"row_kind {self.row_kind!r}; choose from {', '.join(ROW_KINDS)}")

    def __iter__(self) -> Iterator[LevelCandidates]:
        return iter(self.levels)

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, i: int) -> LevelCandidates:
        return self.levels[i]

    @property
    def num_rows(self) -> int:
        """Rows over all levels."""
        return sum(len(m) for m in self.levels)
