"""Hyper-parameter files: locate, load and validate once, before anything else runs.

Every key of a hyp file must be known to the trainer, the augmentations or the chosen loss
strategy; a typo is an error that names the key, the file and the closest known keys, and a key
that belongs to a different strategy says which one.
"""
from __future__ import annotations

import difflib
import logging
import math
import numbers
from pathlib import Path
from typing import Any

from utils.core.errors import UserError
from utils.core.text import short_repr
from utils.core.yaml_file import YamlFileError, load_yaml
from utils.data.augmentations import HYP_DEFAULTS
from utils.assign import ASSIGNERS
from utils.loss import LOSSES, loss_class
from utils.loss.base import BELOW_ONE, FRACTION, NON_NEGATIVE, POSITIVE

ROOT = Path(__file__).resolve().parents[1]
HYP_DIR = ROOT / "hyp"
DEFAULT_HYP = HYP_DIR / "hyp.scratch.yaml"

# Optimiser and schedule keys of YOLOv5's hyp files, with YOLOv5's scratch-low values.
TRAINER_DEFAULTS: dict[str, Any] = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005,
    "warmup_epochs": 3.0, "warmup_momentum": 0.8, "warmup_bias_lr": 0.1,
    "nbs": 64,  # nominal batch size: gradients are accumulated up to it (YOLOv5 fixes it at 64)
    "close_mosaic": 0,  # turn mosaic off for the last N epochs (YOLOv8's close_mosaic; 0 = never, as YOLOv5)
    "iou_t": 0.20,  # kept for YOLOv5 hyp-file compatibility; YOLOv5 v7.0 does not use it either
    "anchors": 3,  # anchors per level when AutoAnchor creates them (YOLOv5's optional key)
    "loss": "yolov5",
}

# Training augmentations: their keys and YOLOv5 scratch-low defaults live with the augmentations.
AUG_DEFAULTS = HYP_DEFAULTS

LOGGER = logging.getLogger(__name__)

# Allowed values of the trainer's and the augmentations' keys (interval notation of utils.loss.base);
# a strategy's keys have theirs beside its Hyp (``Hyp.RANGES``). Every other key still must be finite.
HYP_RANGES: dict[str, str] = {
    **dict.fromkeys(("nbs", "anchors"), POSITIVE),
    **dict.fromkeys(("lr0", "lrf", "weight_decay", "warmup_epochs", "warmup_bias_lr", "close_mosaic",
                     "degrees", "shear", "perspective"), NON_NEGATIVE),
    **dict.fromkeys(("hsv_h", "hsv_s", "hsv_v", "translate", "flipud", "fliplr", "mosaic", "mixup",
                     "copy_paste", "iou_t"), FRACTION),
    **dict.fromkeys(("momentum", "warmup_momentum", "scale"), BELOW_ONE),
}


class HypError(UserError):
    """A hyp file that cannot be used: missing, malformed, unknown key or wrong value type."""


def find_hyp(spec: str | Path) -> Path:
    """A hyp path as given (a relative one may also be relative to the project root, as
    ``hyp/hyp.ota.yaml``), or a bare file name (no folder part) looked up in the project's ``hyp/``.

    A path that names a folder must exist: a mistyped folder never silently falls back to the
    bundled file of the same name.
    """
    p = Path(spec)
    if p.is_file():
        return p
    available = ", ".join(sorted(x.name for x in HYP_DIR.glob("hyp.*.yaml")))
    if p.parent != Path("."):
        if not p.is_absolute() and (ROOT / p).is_file():
            return ROOT / p
        raise HypError(f"--hyp: file '{spec}' not found (only a bare file name is looked up in "
                       f"{HYP_DIR}; available there: {available})")
    if (HYP_DIR / p).is_file():
        return HYP_DIR / p
    raise HypError(f"--hyp: file '{spec}' not found (also looked in {HYP_DIR}); available: {available}")


def _check_value(key: str, value: Any, source: str, ranges: dict[str, str]) -> None:
    """Numbers must be finite and inside their interval in ``ranges``; the error names the key and the file."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return
    if not math.isfinite(value):
        raise HypError(f"{source}: hyp key '{key}' must be a finite number, got {value!r}")
    interval = ranges.get(key)
    if interval is None:
        return
    low, high = (float(x) for x in interval[1:-1].split(","))
    inside = (low <= value if interval[0] == "[" else low < value) and (value <= high if interval[-1] == "]" else value < high)
    if not inside:
        raise HypError(f"{source}: hyp key '{key}' must be in {interval}, got {value!r}")


def _owners_of(key: str) -> list[str]:
    """Every strategy whose hyp keys include ``key`` (a key may be shared, e.g. the dfl-head keys)."""
    return [name for name, cls in LOSSES.items() if key in cls.Hyp.keys()]


def _foreign_key_error(key: str, hyp: dict[str, Any], strategy: type, source: str) -> str | None:
    """The one line for a key that belongs to another loss or to another matching rule, else None."""
    loss, assigner = hyp.get("loss", "yolov5"), hyp.get("assigner", strategy.default_assigner())
    owners = _owners_of(key)
    if owners:
        also = ", ".join(f"'{o}'" for o in owners[1:])
        names = f"'{owners[0]}'" + (f" (also {also})" if also else "")
        return (f"{source}: key '{key}' belongs to loss {names}, but this file trains "
                f"loss '{loss}'; remove it or set loss: {' | '.join(owners)}")
    rules = [name for name, rule in ASSIGNERS.items() if key in rule.Hyp.keys()]
    if not rules:
        return None
    rule = rules[0]
    own = [n for n, cls in LOSSES.items() if cls.default_assigner() == rule]
    takers = ", ".join(f"'{n}'" for n, cls in LOSSES.items() if rule in cls.assigners() and n not in own)
    whose = f"loss '{own[0]}' (its rule '{rule}'" if own else f"rule '{rule}' ("
    return (f"{source}: key '{key}' belongs to {whose}{', also taken by ' + takers if takers else ''}), but this "
            f"file trains loss '{loss}' with assigner '{assigner}'; remove it or set assigner: {rule}")


def validate_hyp(hyp: dict[str, Any], source: str = "hyp") -> dict[str, Any]:
    """Check every key and value type; return a new dict with defaults filled in.

    The keys are the trainer's, the augmentations' and those of the chosen strategy: the loss's own
    and its matching rule's (``assigner``, the loss's default when absent, is filled in so that a run
    records both). The strategy's other defaults are not filled in here: its dataclasses hold them.
    """
    if not isinstance(hyp, dict):
        raise HypError(f"{source}: expected a mapping of hyp keys, got {type(hyp).__name__}")
    try:
        strategy = loss_class(hyp.get("loss"))
        if "assigner" in hyp:
            strategy.rule_class(hyp["assigner"])
    except ValueError as e:
        raise HypError(f"{source}: {e}") from None
    assigner = hyp.get("assigner", strategy.default_assigner())
    known = set(TRAINER_DEFAULTS) | set(AUG_DEFAULTS) | strategy.hyp_keys(assigner)
    ranges = {**HYP_RANGES, **strategy.hyp_ranges(assigner)}
    for key, value in hyp.items():
        if not isinstance(key, str):
            raise HypError(f"{source}: hyp key {key!r} is a {type(key).__name__}; hyp keys are names such as 'lr0'")
        if key not in known:
            foreign = _foreign_key_error(key, hyp, strategy, source)
            if foreign:
                raise HypError(foreign)
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise HypError(f"{source}: unknown hyp key '{key}'{hint}")
        generic = key in TRAINER_DEFAULTS or key in AUG_DEFAULTS
        if generic and key != "loss" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise HypError(f"{source}: hyp key '{key}' must be a number, got {short_repr(value)}")
        _check_value(key, value, source, ranges)
    out = {**TRAINER_DEFAULTS, **AUG_DEFAULTS, **hyp, "assigner": assigner}
    try:
        strategy.Hyp.from_hyp(out)
        strategy.rule_class(assigner).Hyp.from_hyp(out)
    except ValueError as e:
        raise HypError(f"{source}: {e}") from None
    return out


def run_hyp(hyp: dict[str, Any], source: str) -> dict[str, Any]:
    """A run's recorded hyp (a checkpoint's, on ``--resume``), validated like a file. Runs made before a
    rule's keys were accepted only with that rule recorded the keys of the loss's other rules too
    (``gfl`` + ``assigner: tal`` with ATSS's ``atss_topk``, which that run never read): those are left
    out, with one warning naming them, so the run resumes as it trained."""
    if isinstance(hyp, dict) and isinstance(hyp.get("loss", "yolov5"), str) and hyp.get("loss", "yolov5") in LOSSES:
        strategy = LOSSES[hyp.get("loss", "yolov5")]
        assigner = hyp.get("assigner", strategy.default_assigner())
        if assigner in strategy.assigners():
            others = set().union(*(ASSIGNERS[r].Hyp.keys() for r in strategy.assigners()))
            stale = sorted(k for k in hyp if k in others - strategy.hyp_keys(assigner))
            if stale:
                LOGGER.warning("WARNING: %s: left out %s, key%s of another matching rule that this run "
                               "(assigner '%s') never read", source, ", ".join(stale),
                               "s" * (len(stale) > 1), assigner)
                hyp = {k: v for k, v in hyp.items() if k not in stale}
    return validate_hyp(dict(hyp) if isinstance(hyp, dict) else hyp, source)


def load_hyp(spec: str | Path | dict) -> dict[str, Any]:
    """Load and validate a hyp file (path, bare name in ``hyp/``) or an in-memory dict."""
    if isinstance(spec, dict):
        return validate_hyp(dict(spec))
    path = find_hyp(spec)
    try:
        data = load_yaml(path, unique_keys="hyp key")
    except YamlFileError as e:
        raise HypError(str(e)) from None
    if not data:
        LOGGER.warning("WARNING: hyp file %s is empty; training with the defaults of every key", path)
    return validate_hyp(data or {}, str(path))
