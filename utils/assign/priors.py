"""The priors of a detection head for one batch's grid shapes: what every matching rule reads about the
head (kind, levels, strides, anchors) and the mapping from a global prior index to (level, anchor, cell)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.geometry import AnchorPriors, LevelPriors, PriorGenerator


@dataclass
class HeadPriors:
    """The priors of a head for one batch's grid shapes.

    kind: ``anchor`` (YOLOv5 Detect, ``na`` anchors per cell) or ``dfl`` (one point per cell);
    levels: per level start / ny / nx / stride / anchors_grid (:class:`models.geometry.LevelPriors`).
    """

    kind: str
    levels: list[LevelPriors]
    generator: PriorGenerator

    @staticmethod
    def of(kind: str, generator: PriorGenerator, preds: list[torch.Tensor]) -> "HeadPriors":
        """The priors for the grid shapes of ``preds`` (per level ``(bs, na, ny, nx, no)``)."""
        device = preds[0].device
        return HeadPriors(kind, generator.levels([(p.shape[2], p.shape[3]) for p in preds], device), generator)

    @property
    def grid_shapes(self) -> list[tuple[int, int]]:
        return [(lv.ny, lv.nx) for lv in self.levels]

    @property
    def strides(self) -> list[float]:
        return [lv.stride for lv in self.levels]

    @property
    def anchors_grid(self) -> torch.Tensor:
        """(nl, na, 2) anchor w, h in grid units (zeros on the dfl head), float32."""
        return torch.stack([lv.anchors_grid.float() for lv in self.levels])

    @property
    def na(self) -> int:
        return self.levels[0].na

    @property
    def count(self) -> int:
        """Priors of one image, all levels."""
        return sum(lv.na * lv.ny * lv.nx for lv in self.levels)

    def anchor_boxes(self, device: torch.device | str) -> AnchorPriors:
        """Every prior's anchor box (cell centre + anchor w, h; zero size on the dfl head), prior order."""
        return self.generator.anchor_boxes(self.grid_shapes, device)

    def locate(self, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global prior indices (k,) -> (level, anchor, gj, gi), each (k,) long."""
        level, anchor, gj, gi = (torch.zeros_like(prior) for _ in range(4))
        for i, lv in enumerate(self.levels):
            on = (prior >= lv.start) & (prior < lv.start + lv.na * lv.ny * lv.nx)
            local = prior[on] - lv.start
            level[on], anchor[on] = i, local // (lv.ny * lv.nx)
            gj[on], gi[on] = (local // lv.nx) % lv.ny, local % lv.nx
        return level, anchor, gj, gi
