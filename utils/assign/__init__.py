"""The matching rules, one module each, registered by name in ``ASSIGNERS``, and what they share.

    from utils.assign import ASSIGNERS
    rule = ASSIGNERS["simota"](hyp)                 # its own frozen Hyp from the hyp dict
    result = rule(priors, view, targets)            # -> one sparse AssignResult (utils/assign/rule.py)

Every module of this package is imported here, so a rule defined in a new file (a subclass of
:class:`utils.assign.rule.AssignRule` with a ``name``) is registered without another edit.
Everything is pure: tensors in, tensors out, no state, no gradients (``@torch.no_grad``).
"""
from __future__ import annotations

import importlib
import pkgutil

from utils.assign.rule import RULES, AssignRule

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

# name -> rule class, in a fixed order: the rules that came with the project first, then any added
ASSIGNERS: dict[str, type[AssignRule]] = {n: RULES[n] for n in (
    "yolov5", "simota", "atss", "tal", "max_iou", "dw", "freeanchor") if n in RULES} | dict(sorted(RULES.items()))

__all__ = ["ASSIGNERS", "AssignRule"]
