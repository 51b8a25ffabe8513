"""Loss strategies, picked by the hyp key ``loss`` (absent = ``yolov5``).

    compute_loss = build_loss(model, hyp)        # unknown name -> ValueError listing the choices
    loss, items = compute_loss(preds, targets, imgs)
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any

from torch import nn

from utils.assign import ASSIGNERS
from utils.core.text import short_repr
from utils.loss.base import STRATEGIES, LossStrategy

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

from utils.loss.yolov5 import ComputeLoss  # noqa: E402  (YOLOv5's name, importable from here)

# name -> strategy class: every module of this package that defines a LossStrategy with a ``name`` is
# registered (adding a loss is one file); the project's own first, in a fixed order, then any added
LOSSES: dict[str, type[LossStrategy]] = {n: STRATEGIES[n] for n in (
    "yolov5", "ota", "ssd", "freeanchor", "gfl", "dw", "tal") if n in STRATEGIES} | dict(sorted(STRATEGIES.items()))

DEFAULT_LOSS = "yolov5"


def loss_class(name: str | None) -> type[LossStrategy]:
    """The strategy class registered under ``name`` (``None`` = the default)."""
    name = DEFAULT_LOSS if name is None else name
    if not isinstance(name, str) or name not in LOSSES:
        close = difflib.get_close_matches(name if isinstance(name, str) else '', LOSSES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown loss {short_repr(name)}{hint}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]


def split_strategy(name: str) -> tuple[str, str | None]:
    """A strategy as compare.py and show_assign name it, ``loss`` or ``loss+assigner`` (``yolov5+simota``),
    -> ``(loss, assigner or None)``; an unknown loss, or a rule the loss cannot consume -> ValueError."""
    loss, _, assigner = name.partition("+")
    strategy = loss_class(loss)
    if assigner:
        strategy.rule_class(assigner)
    return loss, assigner or None


def with_assigner(hyp: dict[str, Any], assigner: str) -> dict[str, Any]:
    """A copy of a loss's hyp dict with ``assigner`` set and the keys of its other rules left out, so a
    bundled file (``hyp.gfl.yaml`` lists ATSS's keys) trains with another rule it takes."""
    strategy = loss_class(hyp.get("loss"))
    strategy.rule_class(assigner)
    others = set().union(*(ASSIGNERS[r].Hyp.keys() for r in strategy.assigners())) - strategy.hyp_keys(assigner)
    return {**{k: v for k, v in hyp.items() if k not in others}, "assigner": assigner}


def strategy_label(loss: str, assigner: str | None = None) -> str:
    """``loss``, or ``loss+assigner`` when the assigner is not the loss's own: one row of compare's tables."""
    default = LOSSES[loss].default_assigner() if loss in LOSSES else None
    return loss if assigner is None or assigner == default else f"{loss}+{assigner}"


def canonical_strategies(names: list[str]) -> list[str]:
    """Strategy names as their runs read back (``gfl+atss`` -> ``gfl``), order kept; bad names -> ValueError."""
    return [strategy_label(*split_strategy(n)) for n in names]


def build_loss(model: nn.Module, hyp: dict[str, Any]) -> LossStrategy:
    """The strategy named by ``hyp['loss']``, built from the model's head and the hyp values as given."""
    return loss_class(hyp.get("loss"))(model, hyp)


__all__ = ["LOSSES", "build_loss", "loss_class", "split_strategy", "strategy_label", "canonical_strategies",
           "with_assigner", "LossStrategy", "ComputeLoss"]
