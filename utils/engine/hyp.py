"""Hyper-parameter files: locate, load and validate once, before anything else runs.

Every key of a hyp file must be known to the trainer, the augmentations or the chosen loss
strategy; a typo is an error that names the key, the file and the closest known keys, and a key
that belongs to a different strategy says which one.
"""
from __future__ import annotations

import difflib
import numbers
from pathlib import Path
from typing import Any

import yaml

from utils.data.augmentations import HYP_DEFAULTS
from utils.loss import LOSSES, loss_class

ROOT = Path(__file__).resolve().parents[2]
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


class HypError(ValueError):
    """A hyp file that cannot be used: missing, malformed, unknown key or wrong value type."""


def find_hyp(spec: str | Path) -> Path:
    """A hyp path as given, or a bare file name looked up in the project's ``hyp/`` folder."""
    p = Path(spec)
    if p.is_file():
        return p
    for candidate in (HYP_DIR / p, HYP_DIR / p.name):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(x.name for x in HYP_DIR.glob("hyp.*.yaml")))
    raise HypError(f"hyp file '{spec}' not found (also looked in {HYP_DIR}); available: {available}")


def _owner_of(key: str) -> str | None:
    for name, cls in LOSSES.items():
        if key in cls.Hyp.keys():
            return name
    return None


def validate_hyp(hyp: dict[str, Any], source: str = "hyp") -> dict[str, Any]:
    """Check every key and value type; return a new dict with defaults filled in.

    The strategy's own defaults are not filled in here: its dataclass holds them.
    """
    if not isinstance(hyp, dict):
        raise HypError(f"{source}: expected a mapping of hyp keys, got {type(hyp).__name__}")
    try:
        strategy = loss_class(hyp.get("loss"))
    except ValueError as e:
        raise HypError(f"{source}: {e}") from None
    known = set(TRAINER_DEFAULTS) | set(AUG_DEFAULTS) | strategy.Hyp.keys()
    for key, value in hyp.items():
        if key not in known:
            owner = _owner_of(key)
            if owner:
                raise HypError(f"{source}: key '{key}' belongs to loss '{owner}', but this file trains "
                               f"loss '{hyp.get('loss', 'yolov5')}'; remove it or set loss: {owner}")
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise HypError(f"{source}: unknown hyp key '{key}'{hint}")
        generic = key in TRAINER_DEFAULTS or key in AUG_DEFAULTS
        if generic and key != "loss" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise HypError(f"{source}: hyp key '{key}' must be a number, got {value!r}")
    out = {**TRAINER_DEFAULTS, **AUG_DEFAULTS, **hyp}
    try:
        strategy.Hyp.from_hyp(out)
    except ValueError as e:
        raise HypError(f"{source}: {e}") from None
    return out


def load_hyp(spec: str | Path | dict) -> dict[str, Any]:
    """Load and validate a hyp file (path, bare name in ``hyp/``) or an in-memory dict."""
    if isinstance(spec, dict):
        return validate_hyp(dict(spec))
    path = find_hyp(spec)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise HypError(f"{path}: not valid YAML ({e})") from None
    return validate_hyp(data or {}, str(path))
