"""What every matching rule reads and returns: the one signature of ``ASSIGNERS``.

    result = rule(priors, view, targets)      # priors -> (predictions) -> one sparse AssignResult

* ``priors`` (:class:`HeadPriors`): the head's levels for this batch's grid shapes -- kind (``anchor`` /
  ``dfl``), strides, anchors, prior numbering;
* ``view`` (:class:`utils.assign.view.PredictionView` or None): read-only access to the current head
  outputs at given (image, prior) pairs, only for rules with ``reads_predictions``;
* ``targets`` (:class:`utils.assign.targets.Targets`): built once by the strategy's ``__call__``.

Priors are numbered globally, level by level, then anchor, row, column (``start + (a * ny + gj) * nx +
gi``), the order of the head's output ``(bs, na, ny, nx, no)``; on the anchor-free head (``na = 1``) a
prior is a cell. :func:`level_rows` turns (object, prior[, weight]) pairs into the
:class:`~utils.assign.result.LevelCandidates` of every level, the one place rules build rows from priors.

A rule is a subclass of :class:`AssignRule` with a ``name``, the ``heads`` it assigns for, its frozen
``Hyp`` dataclass (fields = its hyp keys, with ``RANGES``) and ``__call__``; defining it in a module of
``utils/assign/`` registers it (:func:`utils.assign.ASSIGNERS` imports every module of the package).
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from models.geometry import cell_frame
from utils.assign.params import HypParams
from utils.assign.priors import HeadPriors
from utils.assign.result import POSITIVE_ROW, AssignResult, LevelCandidates
from utils.assign.targets import Targets

if TYPE_CHECKING:
    from utils.assign.view import PredictionView

HEADS = ("anchor", "dfl")
RULES: dict[str, type["AssignRule"]] = {}  # filled as rule modules are imported; read it as utils.assign.ASSIGNERS


@torch.no_grad()
def level_rows(obj: torch.Tensor, prior: torch.Tensor, targets: Targets, priors: HeadPriors,
               weight: torch.Tensor | None = None, anchor_wh: float | None = None) -> list[LevelCandidates]:
    """(object row, global prior) pairs -> one :class:`LevelCandidates` per level, order kept within a level.

    Args:
        obj, prior (Tensor[p] long): the assigned pairs; weight (Tensor[p] or None): a soft weight per pair.
        anchor_wh: on the dfl head, the side (grid units) written as each row's ``anchor_wh`` (a
            rule's virtual box, 0 for none); the anchor head's rows carry their anchor's w, h.
    """
    out = []
    for lv in priors.levels:
        on = (prior >= lv.start) & (prior < lv.start + lv.na * lv.ny * lv.nx)
        t, local = obj[on], prior[on] - lv.start
        a, gj, gi = local // (lv.ny * lv.nx), (local // lv.nx) % lv.ny, local % lv.nx
        if priors.kind == "anchor" or anchor_wh is None:
            wh = lv.anchors_grid.to(device=obj.device, dtype=torch.float32)[a]
        else:
            wh = torch.full((t.shape[0], 2), float(anchor_wh), device=obj.device)
        out.append(LevelCandidates(
            image=targets.image[t], anchor=a, gj=gj, gi=gi, target=t, cls=targets.cls[t],
            box_xywh_cell=cell_frame(targets.xywh_px[t] / lv.stride, gi, gj), anchor_wh=wh,
            weight=None if weight is None else weight[on]))
    return out


class AssignRule(abc.ABC):
    """Base of every matching rule of ``ASSIGNERS``: pure, no gradient, no state beyond its Hyp.

    Subclasses set ``name`` (the ``assigner:`` value), ``heads`` (head kinds it assigns for), ``Hyp``
    (their frozen dataclass: own keys, defaults, ``RANGES``), ``reads_predictions`` and ``row_kind``,
    and implement :meth:`__call__`.
    """

    name: ClassVar[str] = ""
    heads: ClassVar[tuple[str, ...]] = HEADS
    Hyp: ClassVar[type[HypParams]] = HypParams
    reads_predictions: ClassVar[bool] = False
    row_kind: ClassVar[str] = POSITIVE_ROW

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            RULES[cls.name] = cls

    def __init__(self, hyp: dict[str, Any]):
        self.hyp = self.Hyp.from_hyp(hyp)

    @abc.abstractmethod
    def __call__(self, priors: HeadPriors, view: "PredictionView | None", targets: Targets) -> AssignResult:
        """The rows of every level (see the module docstring for the arguments)."""

    def empty(self, priors: HeadPriors, targets: Targets) -> AssignResult:
        """A result without rows (no objects in the batch)."""
        device = targets.normalised.device
        return AssignResult([LevelCandidates.empty(device) for _ in priors.levels], len(targets),
                            row_kind=self.row_kind)
