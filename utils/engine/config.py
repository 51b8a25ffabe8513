"""The options of a training run, resolved once into a frozen :class:`TrainConfig`.

The command line (train.py) gives a Namespace; ``--resume`` brings the checkpoint's options
(utils/engine/resume.py); the dataset YAML's ``train_defaults`` fill what neither set (epochs, batch
size, image size, optimizer, and hyp overrides); the model's stride rounds the image size. Each of
these is read here, in that order, and the result is never changed afterwards: every later step
reads ``run.opt`` (a TrainConfig), and opt.yaml and the checkpoints store it as plain data.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from utils.core.argtypes import MAX_IMGSZ
from utils.core.errors import UserError
from utils.core.text import short_repr
from utils.core.yaml_file import YamlFileError, load_yaml
from utils.data.verify import DEFAULT_MAX_IMAGE_PIXELS
from utils.engine.optim import AUTO, OPTIMIZERS
from utils.hyp import validate_hyp

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROJECT = ROOT / "runs" / "train"  # train.py --project (None = this)
# YOLOv5's defaults, used where neither the command line nor the dataset YAML's train_defaults set a value
FALLBACK = {"epochs": 100, "batch_size": 16, "imgsz": 640, "optimizer": "SGD"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of a run, as train.py's flags name them, after resume, train_defaults and rounding.

    The defaults are train.py's (a test holds them equal); ``save_dir`` is the run folder and
    ``train_defaults`` the dataset YAML's block as this run read it (a resume compares it with the file).
    """

    weights: str = ""
    cfg: str = ""
    data: str = str(ROOT / "data/shapes.yaml")
    hyp: str = str(ROOT / "hyp/hyp.scratch.yaml")
    epochs: int | None = None
    batch_size: int | None = None
    imgsz: int | None = None
    rect: bool = False
    resume: bool | str = False
    nosave: bool = False
    noval: bool = False
    noautoanchor: bool = False
    noplots: bool = False
    cache: str | None = None
    device: str = ""
    single_cls: bool = False
    optimizer: str | None = None
    workers: int = 8
    project: str | None = None
    name: str | None = None
    exist_ok: bool = False
    cos_lr: bool = False
    label_smoothing: float = 0.0
    patience: int = 100
    freeze: tuple[int, ...] = (0,)
    save_period: int = -1
    seed: int = 0
    sync_bn: bool = False
    quiet: bool = False
    precision: str = "auto"
    track: str | None = None
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    save_dir: str | None = None
    train_defaults: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for opt.yaml and checkpoints (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
DEFAULTS = TrainConfig()


def options_of(opt: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields of a Namespace or mapping, a default for each one it lacks (a caller that
    builds its own Namespace need not know every flag); other attributes are left out."""
    given = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    return {k: given.get(k, getattr(DEFAULTS, k)) for k in FIELDS}


def read_train_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """The dataset YAML's ``train_defaults`` block, checked for shape and values: a mapping of
    epochs / batch_size / imgsz / optimizer and ``hyp`` (a mapping of hyp keys, none given twice).
    A block of another shape is a UserError naming the file and the key."""
    file = data["yaml_file"]
    block = data.get("train_defaults")
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise UserError(f"{file}: 'train_defaults' must be a mapping of {sorted(FALLBACK) + ['hyp']}, "
                        f"got {short_repr(block)}")
    unknown = sorted(set(map(str, block)) - set(FALLBACK) - {"hyp"})
    if unknown:
        raise UserError(f"{file}: unknown train_defaults keys {unknown}; choose from {sorted(FALLBACK) + ['hyp']}")
    for key in ("epochs", "batch_size", "imgsz"):
        value = block.get(key)
        if key in block and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{file}: train_defaults key '{key}' must be a positive integer, got {short_repr(value)}")
    if block.get("imgsz", 0) > MAX_IMGSZ:
        raise UserError(f"{file}: train_defaults key 'imgsz' must be at most {MAX_IMGSZ} pixels, got {block['imgsz']}")
    if "optimizer" in block and block["optimizer"] not in (AUTO, *OPTIMIZERS):
        raise UserError(f"{file}: train_defaults key 'optimizer': unknown optimizer {short_repr(block['optimizer'])}; "
                        f"choose from {', '.join((AUTO, *OPTIMIZERS))}")
    hyp = block.get("hyp")
    if "hyp" in block and not isinstance(hyp, dict):
        raise UserError(f"{file}: train_defaults key 'hyp' must be a mapping of hyp keys (lr0: 0.01, ...), "
                        f"got {short_repr(hyp)}")
    if hyp:
        try:  # plain YAML keeps the last of a key given twice; a hyp file refuses it, and so does this block
            load_yaml(file, unique_keys="key")
        except YamlFileError as e:
            raise UserError(str(e)) from None
    return block


def resolve_defaults(options: Mapping[str, Any], data: dict[str, Any],
                     hyp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(epochs / batch_size / imgsz / optimizer, hyp to train with): the command line (``options``) wins,
    then the dataset YAML's ``train_defaults``, then YOLOv5's. ``train_defaults: {hyp: {...}}``
    overrides hyp values for this dataset (every strategy alike).

    The built-in dataset uses it to learn in minutes on a CPU: its 400 images give a nominal batch
    of 64 only ~6 optimiser steps per epoch, too few for SGD from scratch in 20 epochs.
    """
    block = read_train_defaults(data)
    source = Path(data["yaml_file"]).name
    values = {}
    for key, fallback in FALLBACK.items():
        values[key] = options.get(key)
        if values[key] is None:
            values[key] = block.get(key, fallback)
            if key in block:
                LOGGER.info("%s=%s from %s train_defaults", key, block[key], source)
    overrides = block.get("hyp") or {}
    if not overrides:
        return values, hyp
    LOGGER.info("hyp overrides from %s train_defaults: %s", source, ", ".join(f"{k}={v}" for k, v in overrides.items()))
    return values, validate_hyp({**hyp, **overrides}, f"{source} train_defaults")


def round_imgsz(imgsz: int, gs: int) -> int:
    """The image size rounded up to a multiple of the model's largest stride ``gs`` (YOLOv5's check_img_size)."""
    rounded = math.ceil(imgsz / gs) * gs
    if rounded != imgsz:
        LOGGER.warning("--img-size %d must be a multiple of max stride %d, updating to %d", imgsz, gs, rounded)
    return rounded


def resolve_config(options: Mapping[str, Any], values: Mapping[str, Any], *, gs: int, save_dir: Path,
                   train_defaults: Mapping[str, Any] | None) -> TrainConfig:
    """The frozen config: ``options`` (command line, or a resumed run's) with the defaults ``values``
    filled in, the image size rounded to the stride ``gs``, and the run folder."""
    merged = {**options, **values, "freeze": tuple(options["freeze"]), "save_dir": str(save_dir),
              "project": options.get("project") or str(DEFAULT_PROJECT), "name": options.get("name") or "exp",
              "train_defaults": train_defaults if options.get("train_defaults") is None else options["train_defaults"]}
    merged["imgsz"] = round_imgsz(merged["imgsz"], gs)
    return TrainConfig(**merged)
