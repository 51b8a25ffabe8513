"""Loss strategies, picked by the hyp key ``loss`` (absent = ``yolov5``).

    compute_loss = build_loss(model, hyp)        # unknown name -> ValueError listing the choices
    loss, items = compute_loss(preds, targets, imgs)
"""
from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from utils.core.text import short_repr
from utils.loss.base import LossStrategy
from utils.loss.yolov5 import ComputeLoss
from utils.loss.ota import ComputeLossOTA
from utils.loss.ssd import ComputeLossSSD
from utils.loss.freeanchor import ComputeLossFreeAnchor
from utils.loss.gfl import ComputeLossGFL
from utils.loss.dw import ComputeLossDW
from utils.loss.tal import ComputeLossTAL

LOSSES: dict[str, type[LossStrategy]] = {
    "yolov5": ComputeLoss,
    "ota": ComputeLossOTA,
    "ssd": ComputeLossSSD,
    "freeanchor": ComputeLossFreeAnchor,
    "gfl": ComputeLossGFL,
    "dw": ComputeLossDW,
    "tal": ComputeLossTAL,
}

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
    """A strategy as compare.py and show_assign name it, ``loss`` or ``loss+assigner`` (``gfl+tal``), ->
    ``(loss, assigner or None)``; an unknown loss, or an assigner the loss cannot use -> ValueError."""
    loss, _, assigner = name.partition("+")
    strategy = loss_class(loss)
    if assigner:
        if "assigner" not in strategy.Hyp.keys():
            raise ValueError(f"loss '{loss}' has one matching rule (no 'assigner' key): use '{loss}'")
        strategy.Hyp.from_hyp({"assigner": assigner})
    return loss, assigner or None


def strategy_label(loss: str, assigner: str | None = None) -> str:
    """``loss``, or ``loss+assigner`` when the assigner is not the loss's own: one row of compare's tables."""
    default = getattr(LOSSES[loss].Hyp(), "assigner", None) if loss in LOSSES else None
    return loss if assigner is None or assigner == default else f"{loss}+{assigner}"


def canonical_strategies(names: list[str]) -> list[str]:
    """Strategy names as their runs read back (``gfl+atss`` -> ``gfl``), order kept; bad names -> ValueError."""
    return [strategy_label(*split_strategy(n)) for n in names]


def build_loss(model: nn.Module, hyp: dict[str, Any]) -> LossStrategy:
    """The strategy named by ``hyp['loss']``, built from the model's head and the hyp values as given."""
    return loss_class(hyp.get("loss"))(model, hyp)


__all__ = ["LOSSES", "build_loss", "loss_class", "split_strategy", "strategy_label", "canonical_strategies", "LossStrategy", "ComputeLoss"]
