"""Optimiser and learning-rate schedule of YOLOv5's train.py.

Three parameter groups: weights with decay, normalisation weights without decay, biases without
decay (the biases get their own warm-up learning rate).
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
OPTIMIZERS = ("SGD", "Adam", "AdamW")


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


def lr_lambda(epochs: int, lrf: float, cos: bool = False) -> Callable[[float], float]:
    """Learning-rate factor of epoch x: linear from 1 to ``lrf``, or a one-cycle cosine."""
    if cos:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf
