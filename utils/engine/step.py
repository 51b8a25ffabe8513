"""One iteration of YOLOv5's training loop, as an object that can be fed given batches.

``Stepper.step(imgs, targets, ni, epoch)`` is exactly what the epoch loop of utils/engine/trainer.py
runs for each batch: linear warm-up of learning rates, momentum and the accumulation count; the
forward pass (autocast per ``utils.core.precision``: fp16 + GradScaler on CUDA, bf16 where asked
for) and the loss on float32 outputs; backward; and, once gradients of a nominal batch (hyp ``nbs``,
64 images) have accumulated, unscale, clip to norm 10, optimiser step and EMA update.
tests/test_official_trace.py feeds it the batches recorded from the official YOLOv5 train.py and
checks that it reproduces that run's schedule, steps and losses.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import torch
from torch import nn

from utils.engine.ema import ModelEMA, unwrap
from utils.engine.optim import build_optimizer, lr_lambda, schedule_warnings
from utils.core.precision import Precision, resolve_precision
from utils.core.torch_utils import synced_time

LOGGER = logging.getLogger(__name__)
MAX_BAD_STEPS = 10  # consecutive non-finite losses before training stops
BIAS_GROUP = 2  # build_optimizer's group order: BN weights, weights with decay, biases


@dataclass
class SpeedStats:
    """Throughput of this process's training epochs (for compare.py and benchmarks)."""

    images: int = 0
    train_seconds: float = 0.0
    loss_seconds: float = 0.0
    loss_calls: int = 0

    def summary(self, device: torch.device) -> dict[str, float]:
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return {"train_images_per_s": self.images / max(self.train_seconds, 1e-9),
                "loss_step_ms": 1e3 * self.loss_seconds / max(self.loss_calls, 1),
                "peak_memory_mib": peak}


@dataclass(frozen=True)
class StepResult:
    """What one iteration did."""

    loss: torch.Tensor  # scalar: the strategy's loss (x batch size, x world size under DDP) as backpropagated
    items: torch.Tensor  # (len(compute_loss.names),) detached loss components
    finite: bool  # False: the loss was not finite and the batch was skipped
    stepped: bool  # the optimiser stepped (a nominal batch of gradients had accumulated)


class PhaseClock:
    """Wall seconds spent in each named part of the step (``with clock("forward"): ...``), the device
    synchronised at both ends; benchmarks/step_profile.py sets one as ``Stepper.clock``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = synced_time(self.device)
        try:
            yield
        finally:
            self.seconds[name] += synced_time(self.device) - t0


class Stepper:
    """Model, loss, optimiser, LR schedule, precision (autocast, GradScaler) and EMA of a run, and the
    accumulation state.

    ``accumulate`` (batches per optimiser step), ``last_opt_step`` (the iteration of the last step,
    -1 before the first) and ``bad_steps`` (consecutive non-finite losses) are the loop's state;
    a resumed run sets ``last_opt_step`` from its checkpoint. ``precision`` None: fp16 AMP on CUDA,
    plain fp32 in the standard layout elsewhere (the official step; the official-trace parity test).
    """

    def __init__(self, model: nn.Module, compute_loss: Any, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LambdaLR, hyp: dict[str, Any], batch_size: int,
                 warmup_iters: int, ema: ModelEMA | None = None, world: int = 1,
                 speed: SpeedStats | None = None, save_dir: Path | None = None, precision: Precision | None = None):
        self.model, self.compute_loss, self.optimizer, self.scheduler = model, compute_loss, optimizer, scheduler
        self.hyp, self.batch_size, self.warmup_iters = hyp, batch_size, warmup_iters
        self.ema, self.world, self.speed, self.save_dir = ema, world, speed, save_dir
        self.device = next(model.parameters()).device
        # no precision given: fp16 AMP on CUDA, plain fp32 (standard layout) elsewhere, the official YOLOv5's step
        self.precision = precision or (resolve_precision("auto", self.device) if self.device.type == "cuda"
                                       else Precision("fp32", self.device.type, "default"))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.grad_scaler)
        self.clock: PhaseClock | None = None  # per-phase timing, for profiling
        self.accumulate = max(round(hyp["nbs"] / batch_size), 1)
        self.last_opt_step = -1
        self.bad_steps = 0

    @property
    def lf(self) -> Callable[[float], float]:
        """Learning-rate factor of an epoch (the scheduler's lambda)."""
        return self.scheduler.lr_lambdas[0]

    def start_epoch(self) -> None:
        """Drop gradients left over from the previous epoch's unfinished accumulation, as YOLOv5 does."""
        self.optimizer.zero_grad()

    def end_epoch(self) -> list[float]:
        """Advance the LR schedule by an epoch; returns the learning rates the epoch ended with."""
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scheduler.step()
        return lrs

    def warmup(self, ni: int, epoch: int) -> None:
        """Linear warm-up over the first ``warmup_iters`` iterations: the bias learning rate from
        ``warmup_bias_lr`` down, the others from 0 up, to the epoch's scheduled value; momentum from
        ``warmup_momentum`` up; the accumulation count from 1 up to nominal batch / batch size."""
        h, xi = self.hyp, [0, self.warmup_iters]
        self.accumulate = max(1, int(np.interp(ni, xi, [1, h["nbs"] / self.batch_size]).round()))
        for j, group in enumerate(self.optimizer.param_groups):
            start = h["warmup_bias_lr"] if j == BIAS_GROUP else 0.0
            group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * self.lf(epoch)]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, xi, [h["warmup_momentum"], h["momentum"]]))

    def phase(self, name: str) -> ContextManager:
        """Times ``name`` on ``clock`` when one is set."""
        return self.clock(name) if self.clock is not None else contextlib.nullcontext()

    def step(self, imgs: torch.Tensor, targets: torch.Tensor, ni: int, epoch: int) -> StepResult:
        """One iteration on a batch from the loader.

        imgs (Tensor[B, 3, H, W]) uint8 RGB as the loader gives them; targets (Tensor[n, 6])
        ``[image, class, x, y, w, h]`` normalised; ni: the iteration counted from the start of
        training (``i + batches_per_epoch * epoch``).
        """
        imgs = self.precision.batch(imgs.to(self.device, non_blocking=True).float() / 255)
        if ni <= self.warmup_iters:
            self.warmup(ni, epoch)
        with self.phase("forward"), self.precision.autocast():
            preds = self.model(imgs)
        with self.phase("loss"):
            t_loss = synced_time(self.device)
            # float32 outputs, outside autocast: the loss is computed in float32 whatever the forward ran in
            loss, items = self.compute_loss([p.float() for p in preds], targets.to(self.device), imgs)
            if self.world > 1:
                loss = loss * self.world  # DDP averages gradients over processes; YOLOv5 sums them
            if self.speed is not None:
                self.speed.loss_seconds += synced_time(self.device) - t_loss
                self.speed.loss_calls += 1
        if not self.check_finite(loss, items):
            return StepResult(loss.detach(), items, finite=False, stepped=False)
        with self.phase("backward"):
            self.scaler.scale(loss).backward()
        stepped = ni - self.last_opt_step >= self.accumulate
        if stepped:
            self.optimizer_step()
            self.last_opt_step = ni
        return StepResult(loss.detach(), items, finite=True, stepped=stepped)

    def optimizer_step(self) -> None:
        """Unscale (fp16), clip to norm 10, step, zero the gradients, update the EMA."""
        with self.phase("optimizer"):
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
        if self.ema is not None:
            with self.phase("ema"):
                self.ema.update(self.model)

    def check_finite(self, loss: torch.Tensor, items: torch.Tensor) -> bool:
        """False (skip the step) for a non-finite loss; stop the run after MAX_BAD_STEPS in a row."""
        if torch.isfinite(loss).all():
            self.bad_steps = 0
            return True
        bad = [n for n, v in zip(self.compute_loss.names, items.tolist()) if not math.isfinite(v)]
        self.bad_steps += 1
        LOGGER.warning("non-finite loss of strategy '%s' (components: %s); step skipped",
                       self.hyp.get("loss", "yolov5"), ", ".join(bad) or "total")
        self.optimizer.zero_grad()
        if self.bad_steps >= MAX_BAD_STEPS:
            last = self.save_dir / "weights" / "last.pt" if self.save_dir else "none"
            raise FloatingPointError(f"{MAX_BAD_STEPS} consecutive non-finite losses; stopping without saving "
                                     f"NaN weights (last good checkpoint: {last})")
        return False


def make_stepper(model: nn.Module, compute_loss: Any, hyp: dict[str, Any], *, optimizer: str, batch_size: int,
                 epochs: int, batches_per_epoch: int, cos_lr: bool = False, ema: ModelEMA | None = None,
                 warn: bool = True, **kwargs: Any) -> Stepper:
    """The optimiser (weight decay scaled to the nominal batch), LR schedule and warm-up length of
    YOLOv5's train.py (warm-up: ``warmup_epochs`` epochs, at least 100 iterations) around ``model``;
    ``kwargs`` go to Stepper (world, speed, save_dir). ``warn``: say the schedule's warnings (rank 0
    only under torchrun, so that they are said once)."""
    accumulate = max(round(hyp["nbs"] / batch_size), 1)
    decay = hyp["weight_decay"] * batch_size * accumulate / hyp["nbs"]
    opt = build_optimizer(unwrap(model), optimizer, hyp["lr0"], hyp["momentum"], decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lr_lambda(epochs, hyp["lrf"], cos_lr))
    warmup_iters = max(round(hyp["warmup_epochs"] * batches_per_epoch), 100)
    for message in schedule_warnings(epochs=epochs, batches_per_epoch=batches_per_epoch, warmup_iters=warmup_iters,
                                     accumulate=accumulate, nbs=hyp["nbs"], batch_size=batch_size) if warn else ():
        LOGGER.warning("WARNING: %s", message)
    return Stepper(model, compute_loss, opt, scheduler, hyp, batch_size, warmup_iters, ema=ema, **kwargs)
