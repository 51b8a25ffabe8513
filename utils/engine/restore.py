"""Put a resumed run back where its last checkpoint left it: weights, optimiser, EMA, schedule, RNG,
the best epoch so far, and what a kill at the wrong moment left half done (a best.pt lost mid-write,
an epoch whose last.pt was written but whose results row was not)."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from utils.engine.ema import unwrap
from utils.engine.rng import set_rng_state
from utils.engine.run import Run
from utils.eval.metrics import fitness
from utils.io.checkpoint import CheckpointError, save_checkpoint
from utils.io.run_log import epoch_metrics

LOGGER = logging.getLogger(__name__)


def restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Put a resumed run back where its last checkpoint left it."""
    unwrap(run.model).load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.ema is not None and ckpt.get("ema"):
        run.ema.ema.load_state_dict(ckpt["ema"])
        run.ema.updates = ckpt.get("updates") or 0
    extra = ckpt.get("extra") or {}
    run.start_epoch = ckpt["epoch"] + 1
    run.best_fitness = ckpt.get("best_fitness") or 0.0
    run.best_epoch = extra.get("best_epoch", -1)
    run.stepper.last_opt_step = extra.get("last_opt_step", -1)
    run.stepper.bad_steps = extra.get("bad_steps", 0)  # a run resumed mid-streak still stops at MAX_BAD_STEPS
    run.saved_epoch = ckpt["epoch"]
    if run.start_epoch >= run.opt.epochs:
        raise CheckpointError(f"--resume: {run.opt.resume} already trained {run.opt.epochs} epochs, nothing to resume")
    if extra.get("rng"):
        set_rng_state(extra["rng"])
    run.scheduler.last_epoch = run.start_epoch - 1
    if run.info.main:
        recover_best(run, ckpt)
        run.missing_row = missing_row(run, ckpt)


def recover_best(run: Run, ckpt: dict[str, Any]) -> None:
    """Before resuming: drop temp files of a save that was killed, and make sure best.pt exists.

    A run killed while writing best.pt has none; when last.pt is the best epoch it is re-saved as
    best.pt, otherwise the best epoch's weights are gone and best is re-derived from last.pt's epoch on.
    """
    weights = run.save_dir / "weights"
    for tmp in weights.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        LOGGER.info("removed %s, left by a save that was interrupted", tmp)
    best = weights / "best.pt"
    if best.is_file():
        return
    epoch = ckpt["epoch"]
    if run.best_epoch != epoch:
        metrics = epoch_metrics(run.save_dir / "results.csv", epoch)
        LOGGER.warning("WARNING: %s of epoch %d is missing; best.pt restarts from epoch %d (last.pt)",
                       best, run.best_epoch, epoch)
        run.best_epoch, run.best_fitness = epoch, fitness(np.array(metrics)) if metrics else 0.0
    save_checkpoint({**ckpt, "best_fitness": run.best_fitness,
                     "extra": {**(ckpt.get("extra") or {}), "best_epoch": run.best_epoch}}, best)
    LOGGER.info("re-saved last.pt (epoch %d) as the missing %s", epoch, best)


def missing_row(run: Run, ckpt: dict[str, Any]) -> tuple[int, list[float], list[float]] | None:
    """(epoch, train losses, learning rates) of the checkpoint's epoch when results.csv has no row for it:
    the run was killed between writing last.pt and the row (last.pt is written before validation). The
    trainer validates that epoch again before going on, so every epoch gets exactly one row and best.pt
    is chosen over all of them. None when the row is there, or the checkpoint cannot rebuild it."""
    epoch, row, file = ckpt["epoch"], (ckpt.get("extra") or {}).get("row"), run.save_dir / "results.csv"
    if not file.exists() or epoch_metrics(file, epoch) is not None or not isinstance(row, dict):
        return None  # (no results.csv: a last.pt resumed into a new folder, which starts its own)
    LOGGER.info("results.csv has no row for epoch %d (the run stopped between last.pt and that row): "
                "validating it again", epoch)
    return epoch, list(row["train_loss"]), list(row["lr"])
