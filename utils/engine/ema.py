"""Exponential moving average of model weights, as YOLOv5 keeps it (``ModelEMA``).

decay(updates) = d * (1 - exp(-updates / tau)): the average follows the model closely early on
and settles to ``d`` later. Floating-point state is averaged; integer buffers are copied.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel, else the model itself."""
    return model.module if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)) else model


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.updates = updates
        self.decay_fn = lambda x: decay * (1 - math.exp(-x / tau))
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay_fn(self.updates)
        msd = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])

    def update_attr(self, model: nn.Module, include: tuple[str, ...] = ("yaml", "nc", "names", "stride", "head_kind")) -> None:
        src = unwrap(model)
        for k in include:
            if hasattr(src, k):
                setattr(self.ema, k, getattr(src, k))
