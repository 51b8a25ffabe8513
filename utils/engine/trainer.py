"""Training as YOLOv5's train.py does it, split into steps that can be run and tested alone:

    setup(opt) -> Run          (utils/engine/train_setup.py) run folder, hyp, data, model, loss, optimiser, EMA, loaders, resume
    train_epoch(run, epoch)    one pass over the loader; each batch is run.stepper.step (utils/engine/step.py):
                               warm-up, gradient accumulation to a nominal batch (hyp ``nbs``, 64), autocast
                               (--precision), clipping, EMA; non-finite losses skipped
    end_epoch(run, epoch)      validation of the EMA model, results.csv, last.pt / best.pt
    finish(run)                validation of best.pt with per-class rows and plots

The loss strategy is the hyp file's ``loss`` key; the model is built with the head it trains.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.data.loader import set_epoch
from utils.eval import validator
from utils.io.checkpoint import (NonFiniteCheckpoint, load_checkpoint, make_checkpoint, nonfinite_tensors,
                                 read_checkpoint, save_checkpoint, strip_checkpoint)
from utils.engine.distributed import broadcast, cleanup, replicas_identical
from utils.engine.ema import unwrap
from utils.eval.metrics import fitness
from utils.io.paths import RunDirError, write_atomic
from utils.io.run_log import plot_results
from utils.core.torch_utils import numerics_environment, repeatable_kernels
from utils.engine.rng import rng_state
from utils.engine.run import Run
from utils.engine.train_setup import setup

LOGGER = logging.getLogger(__name__)


def close_mosaic(run: Run, epoch: int) -> None:
    """Turn mosaic off for the last hyp ``close_mosaic`` epochs; warn when that is every epoch of the run."""
    n, epochs, dataset = run.hyp["close_mosaic"], run.opt.epochs, run.train_loader.dataset
    if not (n and dataset.mosaic and epoch >= epochs - n):
        return
    dataset.mosaic = False
    if not run.info.main:  # said once under torchrun
        return
    if n >= epochs:
        LOGGER.warning("hyp close_mosaic %d >= --epochs %d: mosaic is off for the whole run", n, epochs)
    else:
        LOGGER.info("closing mosaic for the last %d epochs", epochs - epoch)


def plot_train_batch(run: Run, ni: int, imgs: torch.Tensor, targets: torch.Tensor, paths: list[str]) -> None:
    """train_batch0..2.jpg, as YOLOv5: the first three batches of a run as the model gets them (mosaic and
    augmentation applied), with their boxes and class names. imgs (bs, 3, H, W) uint8, targets (n, 6)."""
    if ni < 3 and run.info.main and not run.opt.noplots:
        from utils.io.plots import plot_images

        plot_images(imgs, targets, paths, run.save_dir / f"train_batch{ni}.jpg", unwrap(run.model).names)


def train_epoch(run: Run, epoch: int) -> torch.Tensor:
    """One pass over the training set; returns the mean loss items."""
    opt = run.opt
    run.model.train()
    nb = len(run.train_loader)
    set_epoch(run.train_loader, epoch)
    close_mosaic(run, epoch)
    names = run.compute_loss.names
    mloss = torch.zeros(len(names), device=run.device)
    LOGGER.info(("%11s" * (4 + len(names))) % ("Epoch", "GPU_mem", *names, "Instances", "Size"))
    pbar = tqdm(enumerate(run.train_loader), total=nb, bar_format="{l_bar}{bar:10}{r_bar}",
                disable=opt.quiet or not run.info.main)
    run.stepper.start_epoch()
    t_epoch = time.perf_counter()
    n_finite = n_assigned = n_targets = 0
    for i, (imgs, targets, paths, _) in pbar:
        if not len(imgs):  # every image of the batch failed to decode (the dataset warned)
            continue
        plot_train_batch(run, i + nb * epoch, imgs, targets, paths)
        res = run.stepper.step(imgs, targets, i + nb * epoch, epoch)
        n_targets += targets.shape[0]
        assigned = getattr(run.compute_loss, "last_assignment", None)
        n_assigned += sum(map(len, assigned)) if assigned is not None else 1  # a loss without one: unknown
        if res.finite:  # the mean is over the steps that counted
            mloss = (mloss * n_finite + res.items) / (n_finite + 1)
            n_finite += 1
        mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
        desc = (("%11s" * 2 + "%11.4g" * (len(names) + 2))
                % (f"{epoch}/{opt.epochs - 1}", mem, *mloss.tolist(), targets.shape[0], imgs.shape[-1]))
        pbar.set_description(desc)
    run.speed.train_seconds += time.perf_counter() - t_epoch
    run.speed.images += len(run.train_loader.dataset)
    if opt.quiet and run.info.main:
        LOGGER.info(desc)
    warn_learns_nothing(run, epoch, n_targets, n_assigned)
    if not n_finite:  # logged as nan, not as a loss of 0
        LOGGER.warning("WARNING: epoch %d: every step was skipped (non-finite losses)", epoch)
        mloss.fill_(float("nan"))
    return mloss


def warn_learns_nothing(run: Run, epoch: int, n_targets: int, n_assigned: int) -> None:
    """Once per run, loudly: an epoch whose batches held no object although the split has labels (the
    augmentations cut them all away), or whose assignment made no positive for any of its targets."""
    labelled = sum(len(lb) for lb in run.train_loader.dataset.labels)
    if not n_targets and labelled and "no targets" not in run.warned:
        run.warned.add("no targets")
        LOGGER.warning("WARNING: epoch %d: the augmentations left not one of the %d labelled objects in the training "
                       "batches: the run learns only background (check hyp perspective, scale, translate, "
                       "shear, degrees); said once per run", epoch, labelled)
    if n_targets and not n_assigned and "no positive" not in run.warned:
        run.warned.add("no positive")
        LOGGER.warning("WARNING: epoch %d: the '%s' assignment made no positive for any of the %d targets: the run "
                       "learns only background (check hyp anchor_t and the anchors, or the labels); said once per "
                       "run", epoch, run.hyp.get("loss", "yolov5"), n_targets)


class TrainingDiverged(FloatingPointError):
    """Losses or weights went non-finite; the message names the last finite last.pt."""


def diverged(run: Run, epoch: int, why: str) -> TrainingDiverged:
    """The error that stops a run whose losses or weights went non-finite, naming the last finite last.pt."""
    last = run.save_dir / "weights" / "last.pt"
    kept = (f"{last} (epoch {run.saved_epoch}) is the last finite checkpoint" if run.saved_epoch >= 0
            else "no checkpoint was written")
    return TrainingDiverged(f"training stopped in epoch {epoch}: {why}; {kept}. Lower lr0 or check the "
                            "other hyp values")


def check_weights_finite(run: Run, epoch: int) -> None:
    """Stop before validating or saving weights (or EMA weights) that hold NaN or inf."""
    modules = {"model": unwrap(run.model), **({"ema": run.ema.ema} if run.ema is not None else {})}
    bad = [f"{name}/{k}" for name, m in modules.items() for k in nonfinite_tensors(m.state_dict())]
    if bad:
        raise diverged(run, epoch, f"{len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]})")


def end_epoch(run: Run, epoch: int, mloss: torch.Tensor) -> bool:
    """Validate, log, checkpoint; returns True when early stopping says to stop."""
    opt = run.opt
    lrs = run.stepper.end_epoch()
    check_weights_finite(run, epoch)  # every rank holds the same weights: all stop together
    if not run.info.main:
        return broadcast(None, run.info)  # rank 0's early-stopping decision
    run.ema.update_attr(run.model)
    final = epoch + 1 == opt.epochs
    saved = not opt.nosave or final
    run.row = (mloss.tolist(), lrs)  # saved with last.pt: a resume rebuilds the row if it was not written
    if saved:  # before validation, so that a validation that fails loses no training
        save_epoch(run, epoch, is_best=False)
    metrics, val_loss = validate_epoch(run, final)
    fi = float(fitness(np.array(metrics)))
    improved = fi > run.best_fitness or run.best_epoch < 0
    if improved:
        run.best_fitness, run.best_epoch = max(fi, run.best_fitness), epoch
    log_results(run, epoch, mloss.tolist() + metrics + val_loss + lrs)
    stop = epoch - run.best_epoch >= opt.patience
    if (saved and improved) or (stop and not saved):  # last.pt again, with the new best
        save_epoch(run, epoch, is_best=improved)
    broadcast(stop, run.info)
    if stop:
        LOGGER.info("Stopping training early as no improvement observed in last %d epochs. Best results observed "
                    "at epoch %d, best model saved as best.pt.", opt.patience, run.best_epoch)
        return True
    return False


def validate_epoch(run: Run, final: bool) -> tuple[list[float], list[float]]:
    """([P, R, mAP50, mAP50-95], val losses) of the EMA model; zeros when --noval skips this epoch."""
    n_losses = len(run.compute_loss.names)
    if run.opt.noval and not final:
        return [0.0] * 4, [0.0] * n_losses
    res = validator.run(run.ema.ema, run.val_loader, run.ema.ema.names, single_cls=run.opt.single_cls,
                        compute_loss=run.compute_loss, save_dir=run.save_dir, plots=False,
                        progress=not run.opt.quiet, precision=run.precision)
    val_loss = res["loss"].tolist() if res["loss"] is not None else [0.0] * n_losses
    return [res["p"], res["r"], res["map50"], res["map"]], val_loss


def log_results(run: Run, epoch: int, values: list[float]) -> None:
    """The epoch's row of results.csv; a failed write (disk full) stops the run naming last.pt."""
    try:
        run.results.log(epoch, values)
    except RunDirError as e:
        last = run.save_dir / "weights" / "last.pt"
        kept = (f"{last} holds epoch {run.saved_epoch}: free some space and continue with python train.py "
                f"--resume {last}" if run.saved_epoch >= 0 else "no checkpoint was written")
        raise RunDirError(f"{e}; {kept}") from None


def complete_missing_row(run: Run) -> None:
    """A resumed run whose last.pt epoch has no results row (killed in between): validate that epoch's
    EMA weights now and write its row, so every epoch has one and best.pt is chosen over all of them."""
    epoch, train_loss, lrs = run.missing_row
    metrics, val_loss = validate_epoch(run, final=False)
    fi = float(fitness(np.array(metrics)))
    improved = fi > run.best_fitness or run.best_epoch < 0
    if improved:
        run.best_fitness, run.best_epoch = max(fi, run.best_fitness), epoch
    log_results(run, epoch, train_loss + metrics + val_loss + lrs)
    run.row, run.missing_row = (train_loss, lrs), None
    if improved:
        save_epoch(run, epoch, is_best=True)


def save_epoch(run: Run, epoch: int, is_best: bool) -> None:
    extra = {"best_epoch": run.best_epoch, "last_opt_step": run.stepper.last_opt_step,
             "bad_steps": run.stepper.bad_steps, "rng": rng_state(),
             **({"row": {"train_loss": run.row[0], "lr": run.row[1]}} if run.row else {})}
    ckpt = make_checkpoint(unwrap(run.model), ema=run.ema, optimizer=run.optimizer, epoch=epoch,
                           best_fitness=run.best_fitness, hyp=run.hyp, opt=run.opt, extra=extra)
    w = run.save_dir / "weights"
    try:
        save_checkpoint(ckpt, w / "last.pt")
    except NonFiniteCheckpoint as e:  # e.g. optimizer state: the weights themselves were checked
        raise diverged(run, epoch, str(e)) from None
    run.saved_epoch = epoch
    if is_best:
        save_checkpoint(ckpt, w / "best.pt")
    if run.opt.save_period > 0 and epoch % run.opt.save_period == 0:
        save_checkpoint(ckpt, w / f"epoch{epoch}.pt")


def finish(run: Run) -> dict[str, Any]:
    """Strip the final weights as YOLOv5 does and validate best.pt with per-class rows and plots."""
    w = run.save_dir / "weights"
    for f in (w / "last.pt", w / "best.pt"):
        if f.exists():
            save_checkpoint(strip_checkpoint(read_checkpoint(f)), f)
            LOGGER.info("stripped %s (fp16 EMA weights, no optimizer), %.1f MB", f, f.stat().st_size / 1e6)
    try:
        res = validate_best(run)
    finally:  # also when that validation fails: TensorBoard flushed, an MLflow run marked stopped
        run.results.close()
    LOGGER.info("Results saved to %s", run.save_dir)
    return res


def validate_best(run: Run) -> dict[str, Any]:
    """results.png, the validation of best.pt with per-class rows and plots, summary.json, and the loggers'
    ``end`` (the trackers' last records); returns the validation."""
    w = run.save_dir / "weights"
    if not run.opt.noplots and (run.save_dir / "results.csv").exists():
        plot_results(run.save_dir / "results.csv")
    best = w / "best.pt" if (w / "best.pt").exists() else w / "last.pt"
    if best.name != "best.pt":
        LOGGER.warning("WARNING: %s is missing; validating %s instead", w / "best.pt", best)
    model, _ = load_checkpoint(best, run.device)
    LOGGER.info("Validating %s...", best)
    res = validator.run(model, run.val_loader, model.names, single_cls=run.opt.single_cls,
                        save_dir=run.save_dir, plots=not run.opt.noplots, verbose=len(model.names) > 1,
                        progress=not run.opt.quiet, precision=run.precision)
    run.results.end(run.save_dir, write_summary(run, res, best))
    return res


def write_summary(run: Run, res: dict[str, Any], weights: Path) -> dict[str, Any]:
    """summary.json: the final validation of best.pt (overall and per class) and the run's speed; returned."""
    names = list(run.ema.ema.names)
    # every class with labels; those without a single correct detection score 0
    per_class = {names[c]: {"p": 0.0, "r": 0.0, "ap50": 0.0, "ap": 0.0} for c in np.flatnonzero(res["nt"])}
    for c, p, r, a50, a in zip(res["ap_class"], res["class_p"], res["class_r"], res["class_ap50"], res["class_ap"]):
        per_class[names[c]] = {"p": float(p), "r": float(r), "ap50": float(a50), "ap": float(a)}
    summary = {"loss": run.hyp.get("loss", "yolov5"), "weights": str(weights), "epochs": run.opt.epochs,
               "seed": run.opt.seed, "precision": run.precision.name, "p": res["p"], "r": res["r"],
               "map50": res["map50"], "map": res["map"], "per_class": per_class, **run.speed.summary(run.device),
               "numerics": numerics_environment()}
    write_atomic(run.save_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


def start_loggers(run: Run) -> None:
    """The run's loggers get their start (rank 0): MLflow joins the list with ``--track mlflow``."""
    if run.opt.track == "mlflow":
        from utils.io.trackers import MlflowLogger

        run.results.add(MlflowLogger())
    run.results.start(run.save_dir, run.opt.as_dict(), dict(run.hyp))


def train(opt: argparse.Namespace) -> dict[str, Any]:
    """Run a whole training; returns the final validation of best.pt.

    Ctrl-C stops cleanly: last.pt already holds the last finished epoch, and ``--resume`` continues.
    """
    run = setup(opt)
    try:
        with repeatable_kernels(run.device):  # CPU: a run repeats bit for bit (docs/reproducibility.md)
            return train_run(run)
    finally:
        if run.lock is not None:
            run.lock.release()


def train_run(run: Run) -> dict[str, Any]:
    """The epochs and the final validation of a set-up run (see :func:`train`)."""
    t0 = time.time()
    epoch = run.start_epoch
    if run.info.main:
        start_loggers(run)
    if run.missing_row is not None:
        complete_missing_row(run)
    try:
        for epoch in range(run.start_epoch, run.opt.epochs):
            mloss = train_epoch(run, epoch)
            if end_epoch(run, epoch, mloss):
                break
    except FloatingPointError as e:  # the stepper's MAX_BAD_STEPS, or check_weights_finite
        if run.info.main:
            run.results.close()
        cleanup(run.info)
        raise e if isinstance(e, TrainingDiverged) else diverged(run, epoch, str(e)) from None
    except KeyboardInterrupt:
        if run.info.main:
            LOGGER.warning("interrupted: %s holds the last finished epoch; continue with "
                           "python train.py --resume %s", run.save_dir / "weights" / "last.pt",
                           run.save_dir / "weights" / "last.pt")
            run.results.close()
        cleanup(run.info)
        raise
    if not replicas_identical(unwrap(run.model), run.info):
        cleanup(run.info)
        raise RuntimeError("DDP ranks ended with different weights")
    if not run.info.main:
        cleanup(run.info)
        return {}
    LOGGER.info("%d epochs completed in %.3f hours.", run.opt.epochs - run.start_epoch, (time.time() - t0) / 3600)
    try:
        return finish(run)
    finally:
        cleanup(run.info)
