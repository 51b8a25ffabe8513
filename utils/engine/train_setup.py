"""Training set-up, the steps before the first epoch of utils/engine/trainer.py:

    setup(opt) -> Run    the options of the command line (or of the resumed checkpoint: resume.py),
                         the run folder (run_dir.py), hyp and data, the frozen TrainConfig (config.py),
                         the model with the strategy's head (build.py), a memory check (memory.py),
                         loaders, AutoAnchor, optimiser, EMA, DDP, loss; on --resume everything put
                         back from last.pt (restore.py)
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.core.precision import Precision, resolve_precision
from utils.core.torch_utils import numerics_environment
from utils.data import verify
from utils.dataloaders import check_dataset, create_dataloader
from utils.engine.autoanchor import check_anchors
from utils.engine.build import build_model, freeze_layers, warn_unlabelled, wrap_ddp
from utils.engine.config import TrainConfig, options_of, read_train_defaults, resolve_config, resolve_defaults
from utils.engine.distributed import DistInfo, broadcast, dist_info, init_distributed
from utils.engine.ema import ModelEMA, unwrap
from utils.engine.memory import check_step_fits, local_batch
from utils.engine.optim import resolve_optimizer
from utils.engine.restore import restore
from utils.engine.resume import check_train_defaults, resume_options
from utils.engine.rng import init_seeds
from utils.engine.run_dir import abandon_save_dir, make_save_dir, plot_training_labels, write_run_files
from utils.engine.run import Run
from utils.engine.step import SpeedStats, make_stepper
from utils.hyp import load_hyp, run_hyp
from utils.io.checkpoint import CheckpointError
from utils.io.run_log import ResultsLogger
from utils.loss import loss_class

LOGGER = logging.getLogger(__name__)


def setup(opt: argparse.Namespace) -> Run:
    """Everything before the first epoch. ``opt`` (train.py's Namespace) is read, never changed."""
    info = dist_info()
    device = init_distributed(info, opt.device)
    ckpt = None
    if opt.resume:
        options, ckpt = resume_options(opt, info)
    else:
        options = options_of(opt)
    verify.set_max_pixels(options["max_pixels"])
    save_dir, created, lock = make_save_dir(options, info)
    try:
        run = build_run(options, info, device, ckpt, save_dir)
    except BaseException:
        abandon_save_dir(save_dir, created, lock)
        raise
    run.lock = lock
    return run


def read_inputs(options: dict[str, Any], info: DistInfo, ckpt: dict[str, Any] | None
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(hyp, data, epochs / batch / imgsz / optimizer, the dataset's train_defaults block): the hyp file
    (a resumed run's own hyp) and the dataset YAML (rank 0 generates or converts it first)."""
    hyp = run_hyp(ckpt["hyp"], f"{options['resume']} (its hyp)") if ckpt else load_hyp(options["hyp"])
    data = check_dataset(options["data"]) if info.main else None
    broadcast(None, info)  # a barrier: rank 0 has generated / converted the dataset
    data = data or check_dataset(options["data"])
    block = read_train_defaults(data)
    if ckpt:  # the run's own hyp and settings; an edited train_defaults is refused or said (resume.py)
        check_train_defaults(options, block, data["yaml_file"], hyp)
        values = {k: options[k] for k in ("epochs", "batch_size", "imgsz", "optimizer")}
    else:
        values, hyp = resolve_defaults(options, data, hyp)
    return hyp, data, values, block


def build_run(options: dict[str, Any], info: DistInfo, device: torch.device, ckpt: dict[str, Any] | None,
              save_dir: Path) -> Run:
    """Hyp, data, config, model, optimiser, loaders and loss of a run whose folder exists."""
    init_seeds(options["seed"] + 1 + max(info.rank, 0))
    hyp, data, values, block = read_inputs(options, info, ckpt)
    if values["batch_size"] % info.world:
        raise ValueError(f"--batch-size {values['batch_size']} must be a multiple of the {info.world} processes")
    names = ["item"] if options["single_cls"] else data["names"]
    nc = len(names)
    if ckpt and len(ckpt.get("names") or ()) != nc:
        raise CheckpointError(f"--resume: {options['resume']} was trained on {len(ckpt.get('names') or ())} classes "
                              f"but {options['data']} now has {nc}; the class count changed, so the run cannot "
                              f"continue: start a new run with --weights {options['resume']} (its matching layers "
                              "are transferred)")
    strategy = loss_class(hyp.get("loss"))  # the one place the strategy name is resolved
    precision = resolve_precision(options["precision"], device)
    if info.main:
        LOGGER.info(precision.describe())
    model = precision.prepare(build_model(options, strategy.head, nc, names, device))
    freeze_layers(model, options["freeze"])
    gs = max(int(model.stride.max()), 32)
    cfg = resolve_config(options, values, gs=gs, save_dir=save_dir, train_defaults=block)
    check_step_fits(model, cfg.imgsz, local_batch(cfg.batch_size, info.world, device),
                    2 if precision.name in ("bf16", "fp16") else 4, device)
    if info.main:  # YOLOv5's summary line, and what the run's float results depend on (docs/reproducibility.md)
        model.info(cfg.imgsz)
        LOGGER.info("numerics: %s", ", ".join(f"{k} {v}" for k, v in numerics_environment().items()))
    return assemble(cfg, info, device, ckpt, hyp, data, model, strategy, precision)


def assemble(cfg: TrainConfig, info: DistInfo, device: torch.device, ckpt: dict[str, Any] | None,
             hyp: dict[str, Any], data: dict[str, Any], model: nn.Module, strategy: Any,
             precision: Precision) -> Run:
    """Loaders, AutoAnchor, optimiser, EMA, DDP and loss around a built model; the run's files."""
    gs, nc, save_dir = max(int(model.stride.max()), 32), len(unwrap(model).names), Path(cfg.save_dir)
    train_loader, train_set = create_dataloader(
        data["train"], cfg.imgsz, cfg.batch_size // info.world, gs, cfg.single_cls, hyp=hyp, augment=True,
        cache=cfg.cache, rect=cfg.rect, workers=cfg.workers, prefix="train: ", shuffle=True, seed=cfg.seed,
        rank=info.rank, nc=len(data["names"]))
    val_loader = None
    if info.main:
        val_loader, val_set = create_dataloader(
            data["val"], cfg.imgsz, cfg.batch_size // info.world * 2, gs, cfg.single_cls, hyp=hyp, cache=cfg.cache,
            rect=True, workers=cfg.workers, pad=0.5, prefix="val: ", nc=len(data["names"]))
        warn_unlabelled(train_set, "training", "the run learns only background")
        warn_unlabelled(val_set, "validation", "every mAP will be 0")
        if not cfg.resume and not cfg.noautoanchor and model.head_kind == "anchor":
            check_anchors(train_set, model, anchor_t=hyp.get("anchor_t", 4.0), imgsz=cfg.imgsz)
    optimizer, hyp = resolve_optimizer(cfg.optimizer, hyp, n_images=len(train_set), batch_size=cfg.batch_size,
                                       epochs=cfg.epochs, nc=nc)
    ema = ModelEMA(model) if info.main else None
    model = wrap_ddp(model, info, device, cfg.sync_bn)
    compute_loss = strategy(model, strategy.train_hyp(hyp, nl=unwrap(model).model[-1].nl, nc=nc, imgsz=cfg.imgsz,
                                                      label_smoothing=cfg.label_smoothing))
    speed = SpeedStats()
    stepper = make_stepper(model, compute_loss, hyp, optimizer=optimizer, batch_size=cfg.batch_size,
                           epochs=cfg.epochs, batches_per_epoch=len(train_loader), cos_lr=cfg.cos_lr, ema=ema,
                           world=info.world, speed=speed, save_dir=save_dir, precision=precision, warn=info.main)
    run = Run(opt=cfg, save_dir=save_dir, device=device, hyp=hyp, data=data, model=model,
              compute_loss=compute_loss, stepper=stepper, ema=ema, speed=speed, precision=precision,
              train_loader=train_loader, val_loader=val_loader, info=info, results=None)
    if ckpt:
        restore(run, ckpt)
    if info.main:
        write_run_files(save_dir, run.hyp, cfg.as_dict())
        if not cfg.resume and not cfg.noplots:
            plot_training_labels(save_dir, train_set.labels, unwrap(run.model).names)
        run.results = ResultsLogger(save_dir, run.compute_loss.names, run.start_epoch)
    LOGGER.info("%s: %d train images, %d classes, loss '%s', image size %d, batch %d, %d epochs; "
                "logging to %s", Path(data["yaml_file"]).name, len(train_set), nc,
                hyp.get("loss", "yolov5"), cfg.imgsz, cfg.batch_size, cfg.epochs, save_dir)
    return run
