"""The contract every loss strategy keeps: priors -> assign (no grad) -> losses.

A strategy is built from the model's head geometry (``models/geometry.py``: priors and box coder)
and its own frozen hyper-parameters; it never reads ``model.hyp`` and never mutates the hyp dict it
is given::

    compute_loss = build_loss(model, hyp)
    loss, items = compute_loss(preds, targets, imgs)
    # loss: scalar, multiplied by the batch size (YOLOv5 convention)
    # items: detached (len(compute_loss.names),) tensor

``__call__`` is the same for every strategy: ``losses(preds, assign(preds, targets, imgs))``, with
``assign`` run under ``torch.no_grad``; the assignment it trained on is kept as ``last_assignment``
(what ``tools/show_assign.py`` draws). A new strategy writes ``assign`` (usually a rule from
``utils/assign/`` plus the strategy's hyper-parameters) and ``losses``.
"""
from __future__ import annotations

import abc
import dataclasses
import numbers
from typing import Any, ClassVar

import torch
from torch import nn

from utils.assign.result import POSITIVE_ROW, AssignResult
from utils.core.text import short_repr


# Allowed values of a hyp key as interval notation: zero is refused where the code divides by the value,
# a negative where it has no meaning, 1 where a momentum would never forget.
POSITIVE, NON_NEGATIVE, FRACTION, BELOW_ONE = "(0, inf)", "[0, inf)", "[0, 1]", "[0, 1)"


@dataclasses.dataclass(frozen=True)
class StrategyHyp:
    """Base of the per-strategy hyper-parameter dataclasses; fields are hyp-YAML keys.

    ``RANGES`` (key -> interval) sits beside the fields it bounds and is merged down the class
    hierarchy (:meth:`ranges`); ``utils.hyp`` checks it once for the whole file. Rules that
    an interval cannot say go in ``__post_init__``.
    """

    RANGES: ClassVar[dict[str, str]] = {}

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def ranges(cls) -> dict[str, str]:
        """Every key's interval, a subclass's entries over its bases'."""
        out: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("RANGES", {}))
        return out

    @classmethod
    def from_hyp(cls, hyp: dict[str, Any]) -> "StrategyHyp":
        """Pick this strategy's keys out of a hyp dict (absent keys take the defaults).

        A value of the wrong type is a ``ValueError`` naming the key.
        """
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in hyp:
                continue
            v = hyp[f.name]
            if isinstance(f.default, bool):
                if not isinstance(v, bool) and "str" not in str(f.type):  # ``bool | str`` keys check in __post_init__
                    raise ValueError(f"hyp key '{f.name}' must be true or false, got {short_repr(v)}")
            elif isinstance(f.default, int):
                if isinstance(v, bool) or not (isinstance(v, numbers.Integral)
                                               or (isinstance(v, float) and v.is_integer())):
                    raise ValueError(f"hyp key '{f.name}' must be a whole number, got {short_repr(v)}")
                v = int(v)
            elif isinstance(f.default, numbers.Real) and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise ValueError(f"hyp key '{f.name}' must be a number, got {short_repr(v)}")
            values[f.name] = type(f.default)(v) if isinstance(f.default, float) else v
        return cls(**values)


def head_of(model: nn.Module) -> nn.Module:
    """The detection head (last layer) of a possibly DDP/DataParallel-wrapped model."""
    if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model.model[-1]


class LossStrategy(abc.ABC):
    """Base class of the strategies in ``utils.loss.LOSSES``.

    Subclasses set ``head`` (the head kind the model must be built with), ``names`` (the loss
    components reported in ``items``), ``Hyp`` (their :class:`StrategyHyp` dataclass) and ``hyp_file``
    (their bundled file in ``hyp/``), and implement :meth:`assign` and :meth:`losses`.
    """

    head: ClassVar[str] = "anchor"
    names: ClassVar[tuple[str, ...]] = ()
    Hyp: ClassVar[type[StrategyHyp]] = StrategyHyp
    hyp_file: ClassVar[str] = ""  # its bundled hyp file in hyp/ (compare.py and show_assign train with it)
    row_kind: ClassVar[str] = POSITIVE_ROW  # what its assignment rows are (utils.assign.result.ROW_KINDS)

    def __init__(self, model: nn.Module, hyp: dict[str, Any]):
        det = head_of(model)
        kind = getattr(model, "head_kind", getattr(getattr(model, "module", None), "head_kind", "anchor"))
        if kind != self.head:
            raise ValueError(f"loss '{type(self).__name__}' trains a '{self.head}' head, but the model "
                             f"has a '{kind}' head; build the model with head='{self.head}'")
        self.hyp = self.Hyp.from_hyp(hyp)
        self.nc: int = det.nc
        self.nl: int = det.nl
        self.stride: torch.Tensor = det.stride.detach().clone()  # (nl,) pixels per cell
        self.priors = det.prior_generator()  # models/geometry.py: the head's cells, strides, anchors
        self.box_coder = det.box_coder  # the head's own decode
        self.last_assignment: AssignResult | None = None

    @classmethod
    def train_hyp(cls, hyp: dict[str, Any], *, nl: int, nc: int, imgsz: int,
                  label_smoothing: float = 0.0) -> dict[str, Any]:
        """The hyp values to build this strategy with for ``nc`` classes on ``nl`` levels at ``imgsz`` px.

        The trainer calls this once, before :func:`utils.loss.build_loss` (which takes values as
        given): how a strategy's gains scale with levels, image size and class count is the
        strategy's own rule. Default: gains unchanged; ``label_smoothing`` (train.py's flag) set
        where the strategy has that key. Returns a new dict.
        """
        out = dict(hyp)
        if "label_smoothing" in cls.Hyp.keys():
            out["label_smoothing"] = label_smoothing
        return out

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor,
                 imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss * bs, items)`` = :meth:`losses` of the head outputs under :meth:`assign`."""
        with torch.no_grad():
            self.last_assignment = self.assign(preds, targets, imgs)
        return self.losses(preds, self.last_assignment)

    @abc.abstractmethod
    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor, imgs: torch.Tensor) -> AssignResult:
        """The rows each level trains (no gradient).

        Args:
            preds: per level the head's raw ``(bs, na, ny, nx, no)`` outputs (read, never trained here).
            targets (Tensor[n, 6]): ``[image, class, x, y, w, h]``, xywh normalised 0..1.
            imgs (Tensor[bs, 3, H, W]): the batch (its shape gives the pixel scale).
        """

    @abc.abstractmethod
    def losses(self, preds: list[torch.Tensor], assignment: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss * bs, items)`` of the head outputs given an assignment of the same batch."""


class AnchorLossStrategy(LossStrategy):
    """A strategy on the YOLOv5 anchor head: also keeps the head's anchors (``na`` per level)."""

    head: ClassVar[str] = "anchor"

    def __init__(self, model: nn.Module, hyp: dict[str, Any]):
        super().__init__(model, hyp)
        self.na: int = self.priors.na
        self.anchors: torch.Tensor = self.priors.anchors_grid  # (nl, na, 2) grid units
