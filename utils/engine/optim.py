"""Optimiser and learning-rate schedule of YOLOv5's train.py.

Three parameter groups: weights with decay, normalisation weights without decay, biases without
decay (the biases get their own warm-up learning rate).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
OPTIMIZERS = ("SGD", "Adam", "AdamW")
AUTO = "auto"
AUTO_SGD_ITERATIONS = 10_000  # ultralytics: above this many optimiser steps, SGD; at or below, AdamW
MIN_STEPS_PER_EPOCH = 10
MAX_WARMUP_SHARE = 0.25


def build_optimizer(model: nn.Module, name: str = "SGD", lr: float = 0.001, momentum: float = 0.9,
                    decay: float = 1e-5) -> torch.optim.Optimizer:
    """YOLOv5's ``smart_optimizer``: groups 0 (BN weights, no decay), 1 (weights, decay), 2 (biases)."""
    g_bn, g_w, g_b = [], [], []
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias":
                g_b.append(p)
            elif pname == "weight" and isinstance(module, norm_types):
                g_bn.append(p)
            else:
                g_w.append(p)
    if name == "Adam":
        opt = torch.optim.Adam(g_bn, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        opt = torch.optim.AdamW(g_bn, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    elif name == "SGD":
        opt = torch.optim.SGD(g_bn, lr=lr, momentum=momentum, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer '{name}'; choose from {', '.join(OPTIMIZERS)}")
    opt.add_param_group({"params": g_w, "weight_decay": decay})
    opt.add_param_group({"params": g_b, "weight_decay": 0.0})
    LOGGER.info(f"optimizer: {name}(lr={lr}) with parameter groups {len(g_bn)} weight(decay=0.0), "
                f"{len(g_w)} weight(decay={decay}), {len(g_b)} bias")
    return opt


def auto_optimizer(hyp: dict[str, Any], *, n_images: int, batch_size: int, epochs: int,
                   nc: int) -> tuple[str, dict[str, Any]]:
    """``--optimizer auto`` as ultralytics defines it (``BaseTrainer.build_optimizer``, ultralytics 8.x):
    iterations = ceil(n_images / max(batch_size, nbs)) * epochs optimiser steps; above 10,000 SGD with
    lr0 0.01, otherwise AdamW with lr0 = round(0.002 * 5 / (4 + nc), 6); momentum 0.9 and
    warmup_bias_lr 0 either way (the hyp's lr0 / momentum are ignored). Returns (name, hyp with them).
    """
    iterations = math.ceil(n_images / max(batch_size, hyp["nbs"])) * epochs
    if iterations > AUTO_SGD_ITERATIONS:
        name, lr = "SGD", 0.01
    else:
        name, lr = "AdamW", round(0.002 * 5 / (4 + nc), 6)
    LOGGER.info("optimizer: auto chose %s(lr0=%g, momentum=0.9) for %d optimiser steps (SGD above %d), "
                "ignoring the hyp's lr0=%g and momentum=%g", name, lr, iterations, AUTO_SGD_ITERATIONS,
                hyp["lr0"], hyp["momentum"])
    return name, {**hyp, "lr0": lr, "momentum": 0.9, "warmup_bias_lr": 0.0}


def resolve_optimizer(name: str, hyp: dict[str, Any], **run_size: int) -> tuple[str, dict[str, Any]]:
    """(optimizer name, hyp) to train with: ``auto`` resolved by :func:`auto_optimizer` (``run_size``:
    n_images, batch_size, epochs, nc), any other name as given."""
    return auto_optimizer(hyp, **run_size) if name == AUTO else (name, hyp)


def schedule_warnings(*, epochs: int, batches_per_epoch: int, warmup_iters: int, accumulate: int,
                      nbs: float = 64, batch_size: int = 16) -> list[str]:
    """What makes a short run from scratch learn next to nothing: a warm-up that takes more than a
    quarter of the run, or fewer than ~10 optimiser steps per epoch (few images, a large nominal batch);
    fewer than one step per epoch (``accumulate`` = nbs / batch size beyond the epoch) is said as such."""
    total = epochs * batches_per_epoch
    steps = batches_per_epoch / accumulate
    fixes = "try --optimizer auto, a smaller --batch-size or hyp nbs, or more --epochs"
    out = []
    if warmup_iters > MAX_WARMUP_SHARE * total:
        out.append(f"warm-up takes {min(warmup_iters, total)} of the run's {total} iterations "
                   f"({min(warmup_iters / batches_per_epoch, epochs):.1f} of {epochs} epochs; at least 100 "
                   f"iterations, as YOLOv5): {fixes}")
    if accumulate > batches_per_epoch:  # gradients of several epochs per step: the run barely moves
        out.append(f"hyp nbs {nbs:g} / --batch-size {batch_size}: one optimizer step per {accumulate} batches "
                   f"after warm-up, but an epoch has {batches_per_epoch} batches: fewer than one step per epoch; "
                   "lower nbs")
    elif steps < MIN_STEPS_PER_EPOCH:
        out.append(f"{steps:.1f} optimiser steps per epoch ({batches_per_epoch} batches, one step per "
                   f"{accumulate} for the nominal batch hyp nbs): {fixes}")
    return out


def lr_lambda(epochs: int, lrf: float, cos: bool = False) -> Callable[[float], float]:
    """Learning-rate factor of epoch x: linear from 1 to ``lrf``, or a one-cycle cosine."""
    if cos:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf
