"""Training as YOLOv5's train.py does it, split into steps that can be run and tested alone:

    setup(opt) -> Run          run folder, hyp, data, model, loss, optimiser, EMA, loaders, resume
    train_epoch(run, epoch)    warm-up, gradient accumulation to a nominal batch of 64, AMP on CUDA,
                               clipping, EMA; non-finite losses skipped
    end_epoch(run, epoch)      validation of the EMA model, results.csv, last.pt / best.pt
    finish(run)                validation of best.pt with per-class rows and plots

The loss strategy is the hyp file's ``loss`` key; the model is built with the head it trains.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from models.yolo import Model
from utils import validator
from utils.autoanchor import check_anchors
from utils.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, read_checkpoint, save_checkpoint
from utils.dataloaders import check_dataset, create_dataloader
from utils.distributed import DistInfo, broadcast, cleanup, dist_info, init_distributed, replicas_identical
from utils.ema import ModelEMA, unwrap
from utils.hyp import load_hyp
from utils.loss import build_loss, loss_class
from utils.metrics import fitness
from utils.optim import build_optimizer, lr_lambda
from utils.paths import increment_path
from utils.run_log import ResultsLogger, plot_results

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
NBS = 64  # nominal batch size: gradients are accumulated up to it
MAX_BAD_STEPS = 10  # consecutive non-finite losses before training stops
# YOLOv5's defaults, used where neither the command line nor the dataset YAML's train_defaults set a value
FALLBACK = {"epochs": 100, "batch_size": 16, "imgsz": 640}


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
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEMA | None  # rank 0 only
    train_loader: Any
    val_loader: Any  # rank 0 only
    results: ResultsLogger | None  # rank 0 only
    start_epoch: int = 0
    best_fitness: float = 0.0
    best_epoch: int = -1
    accumulate: int = 1
    last_opt_step: int = -1
    bad_steps: int = 0
    scaler: Any = None
    info: DistInfo = field(default_factory=DistInfo)
    speed: "SpeedStats" = field(default_factory=lambda: SpeedStats())


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


def resolve_defaults(opt: argparse.Namespace, data: dict[str, Any]) -> None:
    """Fill epochs / batch size / image size: the command line wins, then the dataset YAML's
    ``train_defaults`` (the built-in dataset uses it to train in minutes on a CPU), then YOLOv5's."""
    suggested = data.get("train_defaults") or {}
    for key, fallback in FALLBACK.items():
        if getattr(opt, key, None) is None:
            setattr(opt, key, suggested.get(key, fallback))
            if key in suggested:
                LOGGER.info("%s=%s from %s train_defaults", key, suggested[key], Path(data["yaml_file"]).name)


def resume_checkpoint(opt: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The options and checkpoint of the run to resume: ``--resume`` = True (latest last.pt under
    --project) or a path to a last.pt. The resumed run keeps its own options and folder."""
    if opt.resume is True or opt.resume == "":
        found = sorted(Path(opt.project).glob("**/last.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"--resume: no last.pt found under {opt.project}")
        path = found[-1]
    else:
        path = Path(opt.resume)
    ckpt = read_checkpoint(path)
    if ckpt.get("optimizer") is None:
        raise CheckpointError(f"--resume: {path} has no optimizer state (the run finished); "
                              f"start a new run with --weights {path}")
    new = argparse.Namespace(**{**vars(opt), **ckpt["opt"]})
    new.resume, new.weights = str(path), str(path)
    new.save_dir = str(path.parent.parent)
    LOGGER.info("resuming training from %s (epoch %d done)", path, ckpt["epoch"])
    return new, ckpt


def scaled_loss_hyp(hyp: dict[str, Any], nl: int, nc: int, imgsz: int, label_smoothing: float) -> dict[str, Any]:
    """YOLOv5's train.py scaling of the loss gains (3 levels, 80 classes and 640 px are unity)."""
    keys = loss_class(hyp.get("loss")).Hyp.keys()
    out = dict(hyp)
    if "box" in keys:
        out["box"] = hyp.get("box", 0.05) * 3 / nl
    if "cls" in keys:
        out["cls"] = hyp.get("cls", 0.5) * nc / 80 * 3 / nl
    if "obj" in keys:
        out["obj"] = hyp.get("obj", 1.0) * (imgsz / 640) ** 2 * 3 / nl
    if "label_smoothing" in keys:
        out["label_smoothing"] = label_smoothing
    return out


def build_model(opt: argparse.Namespace, hyp: dict[str, Any], nc: int, names: list[str], device) -> Model:
    """The model of --cfg (or of --weights when no --cfg), with --weights' matching tensors loaded."""
    head = loss_class(hyp.get("loss")).head
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


def freeze_layers(model: nn.Module, freeze: list[int]) -> None:
    """--freeze 10 freezes layers 0-9 (the backbone); --freeze 0 1 2 freezes those layers."""
    layers = freeze if len(freeze) > 1 else list(range(freeze[0]))
    prefixes = tuple(f"model.{x}." for x in layers)
    for k, v in model.named_parameters():
        v.requires_grad = True
        if prefixes and k.startswith(prefixes):
            LOGGER.info("freezing %s", k)
            v.requires_grad = False


def make_save_dir(opt: argparse.Namespace, info: DistInfo) -> Path:
    """runs/train/exp* chosen by rank 0 and shared with the other ranks."""
    if opt.resume:
        save_dir = Path(opt.save_dir)
    else:
        save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok) if info.main else None
        save_dir = broadcast(save_dir, info)
        opt.save_dir = str(save_dir)
    if info.main:
        (save_dir / "weights").mkdir(parents=True, exist_ok=True)
    return save_dir


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
    save_dir = make_save_dir(opt, info)
    init_seeds(opt.seed + 1 + max(info.rank, 0))
    hyp = load_hyp(ckpt["hyp"] if ckpt else opt.hyp)
    data = check_dataset(opt.data) if info.main else None
    broadcast(None, info)  # a barrier: rank 0 has generated / converted the dataset
    data = data or check_dataset(opt.data)
    resolve_defaults(opt, data)
    if opt.batch_size % info.world:
        raise ValueError(f"--batch-size {opt.batch_size} must be a multiple of the {info.world} processes")
    names = ["item"] if opt.single_cls else data["names"]
    nc = len(names)
    if info.main:
        yaml.safe_dump(hyp, open(save_dir / "hyp.yaml", "w"), sort_keys=False)
        yaml.safe_dump({k: v for k, v in vars(opt).items()}, open(save_dir / "opt.yaml", "w"), sort_keys=False)

    model = build_model(opt, hyp, nc, names, device)
    freeze_layers(model, opt.freeze)
    gs = max(int(model.stride.max()), 32)
    imgsz = math.ceil(opt.imgsz / gs) * gs
    if imgsz != opt.imgsz:
        LOGGER.warning("--img-size %d must be a multiple of max stride %d, updating to %d", opt.imgsz, gs, imgsz)
    opt.imgsz = imgsz

    accumulate = max(round(NBS / opt.batch_size), 1)
    decay = hyp["weight_decay"] * opt.batch_size * accumulate / NBS
    optimizer = build_optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_lambda(opt.epochs, hyp["lrf"], opt.cos_lr))

    train_loader, train_set = create_dataloader(
        data["train"], imgsz, opt.batch_size // info.world, gs, opt.single_cls, hyp=hyp, augment=True,
        cache=opt.cache, rect=opt.rect, workers=opt.workers, prefix="train: ", shuffle=True, seed=opt.seed,
        rank=info.rank, nc=len(data["names"]))
    val_loader = None
    if info.main:
        val_loader, _ = create_dataloader(
            data["val"], imgsz, opt.batch_size // info.world * 2, gs, opt.single_cls, hyp=hyp, cache=opt.cache,
            rect=True, workers=opt.workers, pad=0.5, prefix="val: ", nc=len(data["names"]))
        if not opt.resume and not opt.noautoanchor and model.head_kind == "anchor":
            check_anchors(train_set, model, anchor_t=hyp.get("anchor_t", 4.0), imgsz=imgsz)
        if not opt.resume and not opt.noplots:
            from utils.plots import plot_labels

            plot_labels(np.concatenate([l for l in train_set.labels if len(l)] or [np.zeros((0, 5))]), names, save_dir)
    ema = ModelEMA(model) if info.main else None
    model = wrap_ddp(model, info, device, opt.sync_bn)
    compute_loss = build_loss(model, scaled_loss_hyp(hyp, unwrap(model).model[-1].nl, nc, imgsz, opt.label_smoothing))
    run = Run(opt=opt, save_dir=save_dir, device=device, hyp=hyp, data=data, model=model,
              compute_loss=compute_loss, optimizer=optimizer, scheduler=scheduler, ema=ema,
              train_loader=train_loader, val_loader=val_loader, accumulate=accumulate, info=info,
              results=ResultsLogger(save_dir, compute_loss.names, ckpt["epoch"] + 1 if ckpt else 0) if info.main else None,
              scaler=torch.amp.GradScaler("cuda", enabled=device.type == "cuda"))
    if ckpt:
        restore(run, ckpt)
    LOGGER.info("%s: %d train images, %d classes, loss '%s', image size %d, batch %d, %d epochs; "
                "logging to %s", Path(data["yaml_file"]).name, len(train_set), nc,
                hyp.get("loss", "yolov5"), imgsz, opt.batch_size, opt.epochs, save_dir)
    return run


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
    run.last_opt_step = extra.get("last_opt_step", -1)
    if run.start_epoch >= run.opt.epochs:
        raise CheckpointError(f"--resume: {run.opt.resume} already trained {run.opt.epochs} epochs, nothing to resume")
    if extra.get("rng"):
        set_rng_state(extra["rng"])
    run.scheduler.last_epoch = run.start_epoch - 1


def warmup(run: Run, ni: int, nw: int, epoch: int) -> None:
    """Linear warm-up of learning rates (bias from warmup_bias_lr down, others from 0 up), momentum
    and the accumulation count, over the first ``nw`` iterations."""
    h, xi = run.hyp, [0, nw]
    run.accumulate = max(1, int(np.interp(ni, xi, [1, NBS / run.opt.batch_size]).round()))
    lf = run.scheduler.lr_lambdas[0]
    for j, group in enumerate(run.optimizer.param_groups):
        group["lr"] = float(np.interp(ni, xi, [h["warmup_bias_lr"] if j == 2 else 0.0, group["initial_lr"] * lf(epoch)]))
        if "momentum" in group:
            group["momentum"] = float(np.interp(ni, xi, [h["warmup_momentum"], h["momentum"]]))


def optimizer_step(run: Run) -> None:
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), max_norm=10.0)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad()
    if run.ema is not None:
        run.ema.update(run.model)


def check_finite(run: Run, loss: torch.Tensor, items: torch.Tensor) -> bool:
    """False (skip the step) for a non-finite loss; stop the run after MAX_BAD_STEPS in a row."""
    if torch.isfinite(loss).all():
        run.bad_steps = 0
        return True
    bad = [n for n, v in zip(run.compute_loss.names, items.tolist()) if not math.isfinite(v)]
    run.bad_steps += 1
    LOGGER.warning("non-finite loss of strategy '%s' (components: %s); step skipped",
                   run.hyp.get("loss", "yolov5"), ", ".join(bad) or "total")
    run.optimizer.zero_grad()
    if run.bad_steps >= MAX_BAD_STEPS:
        raise FloatingPointError(f"{MAX_BAD_STEPS} consecutive non-finite losses; stopping without saving "
                                 f"NaN weights (last good checkpoint: {run.save_dir / 'weights' / 'last.pt'})")
    return False


def synced_time(device: torch.device) -> float:
    """perf_counter after the device's queued work is done (so GPU time is counted where it is spent)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def train_epoch(run: Run, epoch: int) -> torch.Tensor:
    """One pass over the training set; returns the mean loss items."""
    model, opt = run.model, run.opt
    model.train()
    nb = len(run.train_loader)
    nw = max(round(run.hyp["warmup_epochs"] * nb), 100)
    if hasattr(run.train_loader.sampler, "set_epoch"):
        run.train_loader.sampler.set_epoch(epoch)
    names = run.compute_loss.names
    mloss = torch.zeros(len(names), device=run.device)
    LOGGER.info(("%11s" * (4 + len(names))) % ("Epoch", "GPU_mem", *names, "Instances", "Size"))
    pbar = tqdm(enumerate(run.train_loader), total=nb, bar_format="{l_bar}{bar:10}{r_bar}",
                disable=opt.quiet or not run.info.main)
    run.optimizer.zero_grad()
    t_epoch = time.perf_counter()
    for i, (imgs, targets, _, _) in pbar:
        ni = i + nb * epoch
        imgs = imgs.to(run.device, non_blocking=True).float() / 255
        if ni <= nw:
            warmup(run, ni, nw, epoch)
        with torch.autocast(run.device.type, enabled=run.device.type == "cuda"):
            preds = model(imgs)
            t_loss = synced_time(run.device)
            loss, items = run.compute_loss(preds, targets.to(run.device), imgs)
            if run.info.world > 1:
                loss = loss * run.info.world  # DDP averages gradients over processes; YOLOv5 sums them
            run.speed.loss_seconds += synced_time(run.device) - t_loss
            run.speed.loss_calls += 1
        if check_finite(run, loss, items):
            run.scaler.scale(loss).backward()
            if ni - run.last_opt_step >= run.accumulate:
                optimizer_step(run)
                run.last_opt_step = ni
            mloss = (mloss * i + items) / (i + 1)
        mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
        desc = (("%11s" * 2 + "%11.4g" * (len(names) + 2))
                % (f"{epoch}/{opt.epochs - 1}", mem, *mloss.tolist(), targets.shape[0], imgs.shape[-1]))
        pbar.set_description(desc)
    run.speed.train_seconds += time.perf_counter() - t_epoch
    run.speed.images += len(run.train_loader.dataset)
    if opt.quiet and run.info.main:
        LOGGER.info(desc)
    return mloss


def end_epoch(run: Run, epoch: int, mloss: torch.Tensor) -> bool:
    """Validate, log, checkpoint; returns True when early stopping says to stop."""
    opt = run.opt
    lrs = [g["lr"] for g in run.optimizer.param_groups]
    run.scheduler.step()
    if not run.info.main:
        return broadcast(None, run.info)  # rank 0's early-stopping decision
    run.ema.update_attr(run.model)
    final = epoch + 1 == opt.epochs
    n_losses = len(run.compute_loss.names)
    if not opt.noval or final:
        res = validator.run(run.ema.ema, run.val_loader, run.ema.ema.names, single_cls=opt.single_cls,
                            compute_loss=run.compute_loss, save_dir=run.save_dir, plots=False,
                            progress=not opt.quiet)
        metrics = [res["p"], res["r"], res["map50"], res["map"]]
        val_loss = res["loss"].tolist() if res["loss"] is not None else [0.0] * n_losses
    else:
        metrics, val_loss = [0.0] * 4, [0.0] * n_losses
    fi = float(fitness(np.array(metrics)))
    if fi > run.best_fitness or run.best_epoch < 0:
        run.best_fitness, run.best_epoch = max(fi, run.best_fitness), epoch
    run.results.log(epoch, mloss.tolist() + metrics + val_loss + lrs)
    stop = epoch - run.best_epoch >= opt.patience
    if not opt.nosave or final or stop:
        save_epoch(run, epoch, is_best=run.best_epoch == epoch)
    broadcast(stop, run.info)
    if stop:
        LOGGER.info("Stopping training early as no improvement observed in last %d epochs. Best results observed "
                    "at epoch %d, best model saved as best.pt.", opt.patience, run.best_epoch)
        return True
    return False


def save_epoch(run: Run, epoch: int, is_best: bool) -> None:
    extra = {"best_epoch": run.best_epoch, "last_opt_step": run.last_opt_step,
             "rng": rng_state()}
    ckpt = make_checkpoint(unwrap(run.model), ema=run.ema, optimizer=run.optimizer, epoch=epoch,
                           best_fitness=run.best_fitness, hyp=run.hyp, opt=run.opt, extra=extra)
    w = run.save_dir / "weights"
    save_checkpoint(ckpt, w / "last.pt")
    if is_best:
        save_checkpoint(ckpt, w / "best.pt")
    if run.opt.save_period > 0 and epoch % run.opt.save_period == 0:
        save_checkpoint(ckpt, w / f"epoch{epoch}.pt")


def finish(run: Run) -> dict[str, Any]:
    """Drop optimiser state from the final weights and validate best.pt with per-class rows and plots."""
    w = run.save_dir / "weights"
    for f in (w / "last.pt", w / "best.pt"):
        if f.exists():
            ckpt = read_checkpoint(f)
            ckpt["optimizer"] = None
            save_checkpoint(ckpt, f)
    run.results.close()
    if not run.opt.noplots and (run.save_dir / "results.csv").exists():
        plot_results(run.save_dir / "results.csv")
    best = w / "best.pt" if (w / "best.pt").exists() else w / "last.pt"
    model, _ = load_checkpoint(best, run.device)
    LOGGER.info("Validating %s...", best)
    res = validator.run(model, run.val_loader, model.names, single_cls=run.opt.single_cls,
                        save_dir=run.save_dir, plots=not run.opt.noplots, verbose=len(model.names) > 1,
                        progress=not run.opt.quiet)
    write_summary(run, res, best)
    LOGGER.info("Results saved to %s", run.save_dir)
    return res


def write_summary(run: Run, res: dict[str, Any], weights: Path) -> None:
    """summary.json: the final validation of best.pt (overall and per class) and the run's speed."""
    names = list(run.ema.ema.names)
    # every class with labels; those without a single correct detection score 0
    per_class = {names[c]: {"p": 0.0, "r": 0.0, "ap50": 0.0, "ap": 0.0} for c in np.flatnonzero(res["nt"])}
    for c, p, r, a50, a in zip(res["ap_class"], res["class_p"], res["class_r"], res["class_ap50"], res["class_ap"]):
        per_class[names[c]] = {"p": float(p), "r": float(r), "ap50": float(a50), "ap": float(a)}
    summary = {"loss": run.hyp.get("loss", "yolov5"), "weights": str(weights), "epochs": run.opt.epochs,
               "seed": run.opt.seed, "p": res["p"], "r": res["r"], "map50": res["map50"], "map": res["map"],
               "per_class": per_class, **run.speed.summary(run.device)}
    (run.save_dir / "summary.json").write_text(json.dumps(summary, indent=1))


def train(opt: argparse.Namespace) -> dict[str, Any]:
    """Run a whole training; returns the final validation of best.pt.

    Ctrl-C stops cleanly: last.pt already holds the last finished epoch, and ``--resume`` continues.
    """
    run = setup(opt)
    t0 = time.time()
    try:
        for epoch in range(run.start_epoch, run.opt.epochs):
            mloss = train_epoch(run, epoch)
            if end_epoch(run, epoch, mloss):
                break
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
