"""The contract every loss strategy keeps: priors -> assign (no grad) -> losses.

A strategy is built from the model's head geometry (``models/geometry.py``: priors and box coder)
and its own frozen hyper-parameters; it never reads ``model.hyp`` and never mutates the hyp dict it
is given::

    compute_loss = build_loss(model, hyp)
    loss, items = compute_loss(preds, targets, imgs)
    # loss: scalar, multiplied by the batch size (YOLOv5 convention)
    # items: detached (len(compute_loss.names),) tensor

``__call__`` is the same for every strategy: it builds the batch's
:class:`~utils.assign.targets.Targets` once, runs :meth:`LossStrategy.match` under ``torch.no_grad``
(the rule the hyp key ``assigner`` names, from ``utils.assign.ASSIGNERS``, on the head's priors and,
for rules that read them, a view of the predictions) and returns ``losses(preds, assignment)``; the
assignment it trained on is kept as ``last_assignment`` (what ``tools/show_assign.py`` draws). A new
strategy sets ``name``, ``Hyp`` (with an ``assigner`` default), ``consumes`` and writes ``losses``.
"""
from __future__ import annotations

import abc
import difflib
from typing import Any, ClassVar

import torch
from torch import nn

from utils.assign import ASSIGNERS, AssignRule
from utils.assign.result import POSITIVE_ROW, AssignResult
from utils.assign.priors import HeadPriors
from utils.assign.targets import Targets
from utils.assign.view import AnchorView, PredictionView
from utils.core.text import short_repr
from utils.assign.params import BELOW_ONE, FRACTION, NON_NEGATIVE, POSITIVE, HypParams  # noqa: F401


# the base of every Hyp dataclass lives below utils/assign and utils/loss (rules have their own keys too)
StrategyHyp = HypParams
STRATEGIES: dict[str, type["LossStrategy"]] = {}  # filled as strategy modules are imported; read it as LOSSES


def head_of(model: nn.Module) -> nn.Module:
    """The detection head (last layer) of a possibly DDP/DataParallel-wrapped model."""
    if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model.model[-1]


class LossStrategy(abc.ABC):
    """Base class of the strategies in ``utils.loss.LOSSES``.

    Subclasses set ``head`` (the head kind the model must be built with), ``names`` (the loss
    components reported in ``items``), ``Hyp`` (their :class:`StrategyHyp` dataclass, with an
    ``assigner`` field whose default is the loss's own rule), ``consumes`` (the row kinds
    :meth:`losses` can train on: it takes every rule of ``utils.assign.ASSIGNERS`` for its head whose
    ``row_kind`` is one of them, so a new rule file feeds the existing losses) or ``only_rules`` (a
    closed list) and ``hyp_file`` (their bundled file in ``hyp/``), and implement :meth:`losses`. The
    rule is built from the hyp (its own keys) and run by :meth:`match`; a strategy whose rule needs the
    loss's own state overrides :meth:`match`.
    """

    name: ClassVar[str] = ""  # the ``loss:`` value; a class that sets it is registered in utils.loss.LOSSES
    head: ClassVar[str] = "anchor"
    names: ClassVar[tuple[str, ...]] = ()
    Hyp: ClassVar[type[StrategyHyp]] = StrategyHyp
    consumes: ClassVar[tuple[str, ...]] = (POSITIVE_ROW,)  # row kinds it trains on, from any rule for its head
    only_rules: ClassVar[tuple[str, ...]] = ()  # else a closed list: a loss that needs its own rule's extras
    hyp_file: ClassVar[str] = ""  # its bundled hyp file in hyp/ (compare.py and show_assign train with it)
    row_kind: ClassVar[str] = POSITIVE_ROW  # what its assignment rows are (utils.assign.result.ROW_KINDS)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if vars(cls).get("name"):
            STRATEGIES[cls.name] = cls

    def __init__(self, model: nn.Module, hyp: dict[str, Any]):
        det = head_of(model)
        kind = getattr(model, "head_kind", getattr(getattr(model, "module", None), "head_kind", "anchor"))
        if kind != self.head:
            raise ValueError(f"loss '{type(self).__name__}' trains a '{self.head}' head, but the model "
                             f"has a '{kind}' head; build the model with head='{self.head}'")
        self.hyp = self.Hyp.from_hyp(hyp)
        self.rule: AssignRule = self.rule_class(self.hyp.assigner)(hyp)
        self.nc: int = det.nc
        self.nl: int = det.nl
        self.stride: torch.Tensor = det.stride.detach().clone()  # (nl,) pixels per cell
        self.priors = det.prior_generator()  # models/geometry.py: the head's cells, strides, anchors
        self.box_coder = det.box_coder  # the head's own decode
        self.last_assignment: AssignResult | None = None

    @classmethod
    def default_assigner(cls) -> str:
        """The loss's own rule (its Hyp's ``assigner`` default)."""
        return cls.Hyp().assigner

    @classmethod
    def assigners(cls) -> tuple[str, ...]:
        """Every rule of ``ASSIGNERS`` this loss can train on, in registry order."""
        if cls.only_rules:
            return cls.only_rules
        return tuple(n for n, r in ASSIGNERS.items() if cls.head in r.heads and r.row_kind in cls.consumes)

    @classmethod
    def rule_class(cls, name: Any) -> type[AssignRule]:
        """The rule ``name`` when this loss can consume it, else ValueError in one line naming the rules it takes."""
        loss = cls.name or cls.__name__
        takes = ", ".join(cls.assigners())
        if not isinstance(name, str) or name not in ASSIGNERS:
            close = difflib.get_close_matches(str(name), list(ASSIGNERS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"hyp key 'assigner': unknown rule {short_repr(name)}{hint}; loss '{loss}' takes {takes}")
        rule = ASSIGNERS[name]
        if name not in cls.assigners():
            why = (f"rule '{name}' matches for the {'/'.join(rule.heads)} head, loss '{loss}' trains the {cls.head} head"
                   if cls.head not in rule.heads else f"loss '{loss}' cannot consume rule '{name}' (docs/strategy_api.md)")
            raise ValueError(f"hyp key 'assigner': {why}; it takes {takes}")
        return rule

    @classmethod
    def _rule_hyp(cls, assigner: Any) -> type[StrategyHyp]:
        """The Hyp of rule ``assigner`` (None: the loss's own), the empty base where the loss cannot take it."""
        name = cls.default_assigner() if assigner is None else assigner
        return ASSIGNERS[name].Hyp if isinstance(name, str) and name in cls.assigners() else StrategyHyp

    @classmethod
    def hyp_keys(cls, assigner: Any = None) -> set[str]:
        """Every hyp key this loss reads with rule ``assigner`` (None: its own): its Hyp's and the rule's."""
        return cls.Hyp.keys() | cls._rule_hyp(assigner).keys()

    @classmethod
    def hyp_ranges(cls, assigner: Any = None) -> dict[str, str]:
        """The intervals of :meth:`hyp_keys`."""
        return {**cls._rule_hyp(assigner).ranges(), **cls.Hyp.ranges()}

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
        """``(loss * bs, items)`` = :meth:`losses` of the head outputs under :meth:`match`.

        ``targets`` (Tensor[n, 6]) ``[image, class, x, y, w, h]`` normalised and ``imgs`` (Tensor[bs, 3,
        H, W]) become one :class:`~utils.assign.targets.Targets` here, the only place they are scaled.
        """
        with torch.no_grad():
            self.last_assignment = self.match(preds, Targets.build(targets.to(preds[0].device), imgs))
        return self.losses(preds, self.last_assignment)

    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor, imgs: torch.Tensor) -> AssignResult:
        """The rows each level trains for the loader's ``targets`` (n, 6) and ``imgs`` (bs, 3, H, W):
        :meth:`match` of the same call :meth:`__call__` makes (for tools and tests)."""
        with torch.no_grad():
            return self.match(preds, Targets.build(targets.to(preds[0].device), imgs))

    def match(self, preds: list[torch.Tensor], targets: Targets) -> AssignResult:
        """The rows each level trains (no gradient): the rule on the head's priors and, for rules that
        read them, a view of ``preds`` (per level the raw ``(bs, na, ny, nx, no)`` outputs)."""
        priors = HeadPriors.of(self.head, self.priors, preds)
        return self.rule(priors, self.view(preds, priors) if self.rule.reads_predictions else None, targets)

    @abc.abstractmethod
    def view(self, preds: list[torch.Tensor], priors: HeadPriors) -> PredictionView:
        """A read-only view of the head outputs for the rules that weigh predictions."""

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

    def view(self, preds: list[torch.Tensor], priors: HeadPriors) -> PredictionView:
        return AnchorView(preds, priors, self.box_coder)
