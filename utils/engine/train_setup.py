"""Training set-up, the steps before the first epoch of utils/engine/trainer.py:

    setup(opt) -> Run    run folder (rank 0's, shared under DDP), hyp (+ the dataset's train_defaults),
                         data, precision (--precision), model with the strategy's head, optimiser,
                         scheduler, EMA, loaders, AutoAnchor, DDP wrapper, loss; on --resume
                         everything restored from last.pt
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from models.yolo import Model
from utils.engine.autoanchor import check_anchors
from utils.eval.metrics import fitness
from utils.core.argtypes import MAX_IMGSZ
from utils.io.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from utils.dataloaders import check_dataset, create_dataloader
from utils.engine.distributed import DistInfo, broadcast, dist_info, init_distributed
from utils.engine.ema import ModelEMA, unwrap
from utils.hyp import load_hyp, validate_hyp
from utils.engine.optim import resolve_optimizer
from utils.core.precision import Precision, resolve_precision
from utils.loss import loss_class
from utils.data import verify
from utils.engine.step import SpeedStats, Stepper, make_stepper
from utils.core.torch_utils import numerics_environment
from utils.io.paths import RunDirError, RunLock, make_run_dir, write_atomic
from utils.io.run_log import ResultsLogger, epoch_metrics

LOGGER = logging.getLogger(__name__)
# YOLOv5's defaults, used where neither the command line nor the dataset YAML's train_defaults set a value
DEFAULT_PROJECT = Path(__file__).resolve().parents[2] / "runs" / "train"  # train.py --project (None = this)
FALLBACK = {"epochs": 100, "batch_size": 16, "imgsz": 640, "optimizer": "SGD"}


@dataclass
class Run:
    """Everything one training run holds between steps."""

    opt: argparse.Namespace
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

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.stepper.optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        return self.stepper.scheduler


def init_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as plain data (for weights_only checkpoints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(internal), gauss_next]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def resolve_defaults(opt: argparse.Namespace, data: dict[str, Any], hyp: dict[str, Any]) -> dict[str, Any]:
    """Fill epochs / batch size / image size / optimizer: the command line wins, then the dataset
    YAML's ``train_defaults``, then YOLOv5's. ``train_defaults: {hyp: {...}}`` overrides hyp values
    for this dataset (every strategy alike); returns the hyp to train with.

    The built-in dataset uses it to learn in minutes on a CPU: its 400 images give a nominal batch
    of 64 only ~6 optimiser steps per epoch, too few for SGD from scratch in 20 epochs.
    """
    suggested = data.get("train_defaults") or {}
    unknown = set(suggested) - set(FALLBACK) - {"hyp"}
    if unknown:
        raise ValueError(f"{data['yaml_file']}: unknown train_defaults keys {sorted(unknown)}; "
                         f"choose from {sorted(FALLBACK) + ['hyp']}")
    source = Path(data["yaml_file"]).name
    for key, fallback in FALLBACK.items():
        if getattr(opt, key, None) is None:
            setattr(opt, key, suggested.get(key, fallback))
            if key in suggested:
                LOGGER.info("%s=%s from %s train_defaults", key, suggested[key], source)
                if key != "optimizer" and (isinstance(suggested[key], bool) or not isinstance(suggested[key], int)
                                           or suggested[key] < 1):
                    raise ValueError(f"{data['yaml_file']}: train_defaults key '{key}' must be a positive "
                                     f"integer, got {suggested[key]!r}")
                if key == "imgsz" and suggested[key] > MAX_IMGSZ:
                    raise ValueError(f"{data['yaml_file']}: train_defaults key 'imgsz' must be at most "
                                     f"{MAX_IMGSZ} pixels, got {suggested[key]}")
    overrides = suggested.get("hyp") or {}
    if overrides:
        LOGGER.info("hyp overrides from %s train_defaults: %s", source,
                    ", ".join(f"{k}={v}" for k, v in overrides.items()))
    return validate_hyp({**hyp, **overrides}, f"{source} train_defaults") if overrides else hyp


def in_run_folder(last: Path) -> bool:
    """Whether a checkpoint sits in a run folder: ``<run>/weights/last.pt`` next to ``<run>/opt.yaml``."""
    return last.parent.name == "weights" and (last.parent.parent / "opt.yaml").is_file()


def latest_run(project: Path) -> tuple[Path, list[Path]]:
    """The last.pt of the newest run under ``project`` that has one (by its last write), and the run
    folders started after that write that have none (killed before their first epoch ended)."""
    lasts = sorted((p for p in project.glob("**/weights/last.pt") if in_run_folder(p)), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise FileNotFoundError(f"--resume: no run with a weights/last.pt under {project}")
    since = lasts[-1].stat().st_mtime
    newer = sorted(f.parent for f in project.glob("**/opt.yaml")
                   if f.stat().st_mtime > since and not (f.parent / "weights" / "last.pt").exists())
    return lasts[-1], newer


def resume_checkpoint(opt: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The options and checkpoint of the run to resume: ``--resume`` = True (the newest run with a
    last.pt under --project) or a path to a last.pt. The resumed run keeps its own options and writes
    only into its own run folder; a last.pt outside one (a backup copy) is refused, unless
    --project / --name name a new folder for it."""
    new_dir = opt.project is not None or opt.name is not None
    newer: list[Path] = []
    if opt.resume is True or opt.resume == "":
        path, newer = latest_run(Path(opt.project or DEFAULT_PROJECT))
    else:
        path = Path(opt.resume)
    ckpt = read_checkpoint(path)
    if ckpt.get("optimizer") is None:
        raise CheckpointError(f"--resume: {path} has no optimizer state (the run finished); "
                              f"start a new run with --weights {path}")
    own = in_run_folder(path)
    if not own and not new_dir:
        raise CheckpointError(f"--resume: {path} is not inside a run folder (<run>/weights/last.pt next to "
                              "<run>/opt.yaml); resume it into a new folder with --project/--name")
    new = argparse.Namespace(**{**vars(opt), **ckpt["opt"]})
    new.resume, new.weights = str(path), str(path)
    if own:
        new.save_dir = str(path.parent.parent)
    else:
        new.project, new.name = opt.project or str(DEFAULT_PROJECT), opt.name or "exp"
        new.save_dir, new.exist_ok = None, False
    if newer:
        LOGGER.warning("WARNING: --resume: resuming %s (epoch %d done), the newest run with a last.pt; newer runs "
                       "without one (stopped before their first epoch ended): %s", path.parent.parent,
                       ckpt["epoch"], ", ".join(map(str, newer)))
    LOGGER.info("resuming training from %s (epoch %d done)%s", path, ckpt["epoch"],
                "" if own else f" into a new run folder under {new.project}")
    return new, ckpt


def build_model(opt: argparse.Namespace, head: str, nc: int, names: list[str], device) -> Model:
    """The model of --cfg (or of --weights when no --cfg) with the ``head`` the loss strategy trains,
    with --weights' matching tensors loaded."""
    if opt.weights:
        src, meta = load_checkpoint(opt.weights, "cpu")
        cfg = opt.cfg or meta["yaml"]
        model = Model(cfg, ch=3, nc=nc, head=head)
        # anchors come from --cfg (or AutoAnchor) when a cfg is given, as YOLOv5 does
        exclude = ("anchors",) if opt.cfg and not opt.resume else ()
        own = model.state_dict()
        csd = {k: v for k, v in src.state_dict().items()
               if k in own and v.shape == own[k].shape and not any(x in k for x in exclude)}
        model.load_state_dict(csd, strict=False)
        LOGGER.info("transferred %d/%d items from %s", len(csd), len(own), opt.weights)
    else:
        model = Model(opt.cfg, ch=3, nc=nc, head=head)
    model.names = list(names)
    return model.to(device)


def warn_unlabelled(dataset: Any, split: str, consequence: str) -> None:
    """One loud line when a split holds not a single labelled object (a run that looks fine and learns nothing)."""
    if not any(len(lb) for lb in dataset.labels):
        LOGGER.warning("WARNING: %snot one labelled object in the %d %s images: %s (check the labels folder "
                       "next to the images)", dataset.prefix, len(dataset.labels), split, consequence)


def freeze_layers(model: nn.Module, freeze: list[int]) -> None:
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


def make_save_dir(opt: argparse.Namespace, info: DistInfo) -> tuple[Path, bool, RunLock | None]:
    """runs/train/exp* chosen by rank 0 and shared with the other ranks -> (folder, created by this
    run, rank 0's lock on it). A folder another live run holds is refused (RunDirError)."""
    created, lock = False, None
    if opt.resume and opt.save_dir:
        save_dir = Path(opt.save_dir)
    else:
        if info.main:
            save_dir, created = make_run_dir(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
        save_dir = broadcast(save_dir if info.main else None, info)
        opt.save_dir = str(save_dir)
    if info.main:
        lock = RunLock(save_dir).acquire()
        try:
            (save_dir / "weights").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            lock.release()
            raise RunDirError(f"cannot write to the run folder {save_dir} ({e.strerror or e})") from None
    return save_dir, created, lock


def abandon_save_dir(save_dir: Path, created: bool, lock: RunLock | None) -> None:
    """After a failed start: release the lock and remove the folder this run created, unless it
    already holds a checkpoint (a failed start must not leave an empty run folder behind)."""
    if lock is not None:
        lock.release()
    if created and lock is not None and not any((save_dir / "weights").glob("*.pt")):
        shutil.rmtree(save_dir, ignore_errors=True)
        LOGGER.info("removed the run folder %s of the failed start", save_dir)


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    """DDP wrapper (its construction broadcasts rank 0's parameters and buffers, AutoAnchor's anchors included)."""
    if info.world <= 1:
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        LOGGER.info("using SyncBatchNorm")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def setup(opt: argparse.Namespace) -> Run:
    """Everything before the first epoch."""
    info = dist_info()
    device = init_distributed(info, opt.device)
    ckpt = None
    if opt.resume:
        opt, ckpt = resume_checkpoint(opt)
    opt.project, opt.name = opt.project or str(DEFAULT_PROJECT), opt.name or "exp"
    verify.set_max_pixels(getattr(opt, "max_pixels", verify.DEFAULT_MAX_IMAGE_PIXELS))
    save_dir, created, lock = make_save_dir(opt, info)
    try:
        run = build_run(opt, info, device, ckpt, save_dir)
    except BaseException:
        abandon_save_dir(save_dir, created, lock)
        raise
    run.lock = lock
    return run


def build_run(opt: argparse.Namespace, info: DistInfo, device: torch.device, ckpt: dict[str, Any] | None,
              save_dir: Path) -> Run:
    """Hyp, data, model, optimiser, loaders and loss of a run whose folder exists."""
    init_seeds(opt.seed + 1 + max(info.rank, 0))
    hyp = load_hyp(ckpt["hyp"] if ckpt else opt.hyp)
    data = check_dataset(opt.data) if info.main else None
    broadcast(None, info)  # a barrier: rank 0 has generated / converted the dataset
    data = data or check_dataset(opt.data)
    hyp = resolve_defaults(opt, data, hyp)
    if opt.batch_size % info.world:
        raise ValueError(f"--batch-size {opt.batch_size} must be a multiple of the {info.world} processes")
    names = ["item"] if opt.single_cls else data["names"]
    nc = len(names)
    if ckpt and len(ckpt.get("names") or ()) != nc:
        raise CheckpointError(f"--resume: {opt.resume} was trained on {len(ckpt.get('names') or ())} classes but "
                              f"{opt.data} now has {nc}; the class count changed, so the run cannot continue: start "
                              f"a new run with --weights {opt.resume} (its matching layers are transferred)")

    strategy = loss_class(hyp.get("loss"))  # the one place the strategy name is resolved
    precision = resolve_precision(getattr(opt, "precision", "auto"), device)
    if info.main:
        LOGGER.info(precision.describe())
    model = precision.prepare(build_model(opt, strategy.head, nc, names, device))
    freeze_layers(model, opt.freeze)
    gs = max(int(model.stride.max()), 32)
    imgsz = math.ceil(opt.imgsz / gs) * gs
    if imgsz != opt.imgsz:
        LOGGER.warning("--img-size %d must be a multiple of max stride %d, updating to %d", opt.imgsz, gs, imgsz)
    opt.imgsz = imgsz
    if info.main:  # YOLOv5's summary line, and what the run's float results depend on (docs/reproducibility.md)
        model.info(imgsz)
        LOGGER.info("numerics: %s", ", ".join(f"{k} {v}" for k, v in numerics_environment().items()))

    train_loader, train_set = create_dataloader(
        data["train"], imgsz, opt.batch_size // info.world, gs, opt.single_cls, hyp=hyp, augment=True,
        cache=opt.cache, rect=opt.rect, workers=opt.workers, prefix="train: ", shuffle=True, seed=opt.seed,
        rank=info.rank, nc=len(data["names"]))
    val_loader = None
    if info.main:
        val_loader, val_set = create_dataloader(
            data["val"], imgsz, opt.batch_size // info.world * 2, gs, opt.single_cls, hyp=hyp, cache=opt.cache,
            rect=True, workers=opt.workers, pad=0.5, prefix="val: ", nc=len(data["names"]))
        warn_unlabelled(train_set, "training", "the run learns only background")
        warn_unlabelled(val_set, "validation", "every mAP will be 0")
        if not opt.resume and not opt.noautoanchor and model.head_kind == "anchor":
            check_anchors(train_set, model, anchor_t=hyp.get("anchor_t", 4.0), imgsz=imgsz)
    optimizer, hyp = resolve_optimizer(opt.optimizer, hyp, n_images=len(train_set), batch_size=opt.batch_size,
                                       epochs=opt.epochs, nc=nc)
    ema = ModelEMA(model) if info.main else None
    model = wrap_ddp(model, info, device, opt.sync_bn)
    compute_loss = strategy(model, strategy.train_hyp(hyp, nl=unwrap(model).model[-1].nl, nc=nc, imgsz=imgsz,
                                                      label_smoothing=opt.label_smoothing))
    speed = SpeedStats()
    stepper = make_stepper(model, compute_loss, hyp, optimizer=optimizer, batch_size=opt.batch_size,
                           epochs=opt.epochs, batches_per_epoch=len(train_loader), cos_lr=opt.cos_lr, ema=ema,
                           world=info.world, speed=speed, save_dir=save_dir, precision=precision)
    run = Run(opt=opt, save_dir=save_dir, device=device, hyp=hyp, data=data, model=model,
              compute_loss=compute_loss, stepper=stepper, ema=ema, speed=speed, precision=precision,
              train_loader=train_loader, val_loader=val_loader, info=info, results=None)
    if ckpt:
        restore(run, ckpt)
    if info.main:
        start_run_files(run, train_set)
    LOGGER.info("%s: %d train images, %d classes, loss '%s', image size %d, batch %d, %d epochs; "
                "logging to %s", Path(data["yaml_file"]).name, len(train_set), nc,
                hyp.get("loss", "yolov5"), imgsz, opt.batch_size, opt.epochs, save_dir)
    return run


def start_run_files(run: Run, train_set: Any) -> None:
    """The run's files, written only now that every check has passed (a failed start, ``--exist-ok``
    into a finished run included, changes nothing in the folder): hyp.yaml, opt.yaml, labels.jpg and
    results.csv (kept up to the resumed epoch)."""
    opt, save_dir = run.opt, run.save_dir
    write_atomic(save_dir / "hyp.yaml", yaml.safe_dump(run.hyp, sort_keys=False))
    write_atomic(save_dir / "opt.yaml", yaml.safe_dump(dict(vars(opt)), sort_keys=False))
    if not opt.resume and not opt.noplots:
        from utils.io.plots import plot_labels

        labels = [lb for lb in train_set.labels if len(lb)] or [np.zeros((0, 5))]
        plot_labels(np.concatenate(labels), unwrap(run.model).names, save_dir)
    run.results = ResultsLogger(save_dir, run.compute_loss.names, run.start_epoch)


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
