"""The model of a run: built with the head its loss trains, --weights transferred, --freeze applied,
wrapped for DDP; and the one-line warning for a split without a single labelled object."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.yolo import Model
from utils.engine.distributed import DistInfo
from utils.engine.ema import unwrap
from utils.io.checkpoint import load_checkpoint

LOGGER = logging.getLogger(__name__)
DEFAULT_CFG = str(Path(__file__).resolve().parents[2] / "models" / "yolov5n.yaml")  # train.py's, when no --cfg nor --weights


def build_model(opt: Mapping[str, Any], head: str, nc: int, names: list[str], device: torch.device) -> Model:
    """The model of --cfg (or of --weights when no --cfg) with the ``head`` the loss strategy trains,
    with --weights' matching tensors loaded."""
    if opt["weights"]:
        src, meta = load_checkpoint(opt["weights"], "cpu")
        cfg = opt["cfg"] or meta["yaml"]
        model = Model(cfg, ch=3, nc=nc, head=head)
        # anchors come from --cfg (or AutoAnchor) when a cfg is given, as YOLOv5 does
        exclude = ("anchors",) if opt["cfg"] and not opt["resume"] else ()
        own = model.state_dict()
        csd = {k: v for k, v in src.state_dict().items()
               if k in own and v.shape == own[k].shape and not any(x in k for x in exclude)}
        model.load_state_dict(csd, strict=False)
        LOGGER.info("transferred %d/%d items from %s", len(csd), len(own), opt["weights"])
    else:
        model = Model(opt["cfg"] or DEFAULT_CFG, ch=3, nc=nc, head=head)
    model.names = list(names)
    return model.to(device)


def warn_unlabelled(dataset: Any, split: str, consequence: str) -> None:
    """One loud line when a split holds not a single labelled object (a run that looks fine and learns nothing)."""
    if not any(len(lb) for lb in dataset.labels):
        LOGGER.warning("WARNING: %snot one labelled object in the %d %s images: %s (check the labels folder "
                       "next to the images)", dataset.prefix, len(dataset.labels), split, consequence)


def freeze_layers(model: nn.Module, freeze: Sequence[int]) -> None:
    """--freeze 10 freezes layers 0-9 (the backbone); --freeze 0 1 2 freezes those layers."""
    layers = freeze if len(freeze) > 1 else list(range(freeze[0]))
    n_layers = len(unwrap(model).model)
    if any(x >= n_layers - 1 for x in layers):  # the head is the last layer: it always trains
        raise ValueError(f"--freeze {' '.join(map(str, freeze))}: the model has {n_layers} layers and the last "
                         f"({n_layers - 1}, the head) must train; freeze layers 0..{n_layers - 2} at most "
                         "(--freeze 10 freezes the yolov5 backbone)")
    prefixes = tuple(f"model.{x}." for x in layers)
    for k, v in model.named_parameters():
        v.requires_grad = True
        if prefixes and k.startswith(prefixes):
            LOGGER.info("freezing %s", k)
            v.requires_grad = False


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    """DDP wrapper (its construction broadcasts rank 0's parameters and buffers, AutoAnchor's anchors included)."""
    if info.world <= 1:
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        LOGGER.info("using SyncBatchNorm")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
