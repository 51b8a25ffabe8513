"""The state of one training run between steps (built by utils/engine/train_setup.py, driven by
utils/engine/trainer.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.core.precision import Precision
from utils.engine.config import TrainConfig
from utils.engine.distributed import DistInfo
from utils.engine.ema import ModelEMA
from utils.engine.step import SpeedStats, Stepper
from utils.io.paths import RunLock
from utils.io.run_log import ResultsLogger


@dataclass
class Run:
    """Everything one training run holds between steps."""

    opt: TrainConfig  # the resolved options, frozen (saved to opt.yaml and checkpoints)
    save_dir: Path
    device: torch.device
    hyp: dict[str, Any]  # as given in the hyp file (saved to hyp.yaml and checkpoints)
    data: dict[str, Any]
    model: nn.Module
    compute_loss: Any
    stepper: Stepper  # one training iteration: optimiser, LR schedule, warm-up, accumulation, AMP, EMA
    ema: ModelEMA | None  # rank 0 only
    train_loader: Any
    val_loader: Any  # rank 0 only
    results: ResultsLogger | None  # rank 0 only
    speed: SpeedStats
    precision: Precision  # the forward pass's autocast (training and the validations of the run)
    start_epoch: int = 0
    best_fitness: float = 0.0
    best_epoch: int = -1
    saved_epoch: int = -1  # the epoch last.pt holds (-1: none written yet)
    info: DistInfo = field(default_factory=DistInfo)
    lock: RunLock | None = None  # rank 0's hold on save_dir, released by the trainer at the end
    warned: set[str] = field(default_factory=set)  # warnings said once per run
    row: tuple[list[float], list[float]] | None = None  # this epoch's (train losses, lrs), saved with last.pt
    missing_row: tuple[int, list[float], list[float]] | None = None  # resumed: an epoch with last.pt but no row

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.stepper.optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        return self.stepper.scheduler
