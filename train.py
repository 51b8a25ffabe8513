"""Train a YOLOv5-compatible detector with the label-assignment / loss strategy of the hyp file.

    python train.py                                      # built-in shapes dataset, yolov5n, hyp.scratch.yaml
    python train.py --hyp hyp.ota.yaml                   # a bare hyp name is looked up in hyp/
    python train.py --data data/bccd.yaml --cfg models/yolov5n.yaml --hyp hyp/hyp.scratch.yaml --img 320
    python train.py --resume                             # continue the newest run with a last.pt (or --resume path/to/last.pt)
    python train.py --precision bf16                     # bf16 autocast (fast on CPUs with AVX512-BF16 / AMX)
    python train.py --track mlflow                       # also log to MLflow (runs/mlflow.db, or MLFLOW_TRACKING_URI)
    torchrun --nproc_per_node 2 train.py --batch-size 32 # DDP: NCCL on GPUs, Gloo on CPU; --batch-size is the total
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.engine.optim import AUTO, OPTIMIZERS  # noqa: E402
from utils.io.cli import (HelpFormatter, add_max_pixels_flag, add_precision_flag, fraction, image_size,  # noqa: E402
                          interrupt_on_signals, non_negative_int, positive_int, seed)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--weights", type=str, default="", help="initial weights: our .pt or an official YOLOv5 .pt ('' = from scratch)")
    p.add_argument("--cfg", type=str, default="", help="model YAML (default models/yolov5n.yaml, or the architecture of --weights)")
    p.add_argument("--data", type=str, default=str(ROOT / "data/shapes.yaml"), help="dataset YAML (default: the built-in shapes dataset, generated on first use)")
    p.add_argument("--hyp", type=str, default=str(ROOT / "hyp/hyp.scratch.yaml"),
                   help="hyp YAML; its 'loss' key picks the strategy (default: hyp/hyp.scratch.yaml)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the dataset YAML's train_defaults, else 100)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: train_defaults, else 16)")
    p.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=None, help="train/val image size in pixels (default: train_defaults, else 640)")
    p.add_argument("--rect", action="store_true", help="rectangular training batches (no mosaic, no shuffle)")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the latest run, or the given last.pt")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--cache", type=str, nargs="?", const="ram", default=None, help="cache images in 'ram' (default) or 'disk'")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu (default: first GPU if any)")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=(AUTO, *OPTIMIZERS), default=None,
                   help="optimizer; auto = ultralytics' rule: AdamW with lr0 0.01/(4 + classes) up to 10,000 "
                        "optimiser steps, else SGD lr0 0.01 (default: train_defaults, else SGD)")
    p.add_argument("--workers", type=non_negative_int, default=8, help="max dataloader workers")
    p.add_argument("--project", default=None, help="save to project/name (default: runs/train); with --resume of "
                   "a last.pt outside its run folder, a new folder for it")
    p.add_argument("--name", default=None, help="save to project/name (default: exp)")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=fraction, default=0.0, help="label smoothing epsilon")
    p.add_argument("--patience", type=positive_int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=non_negative_int, default=[0], help="freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="save a checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=seed, default=0, help="global training seed")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs (DDP on CUDA only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--track", choices=("mlflow",), default=None,
                   help="also log the run to MLflow (pip install -r requirements-track.txt): runs/mlflow.db, "
                        "or the store MLFLOW_TRACKING_URI names")
    add_precision_flag(p)
    add_max_pixels_flag(p)
    opt = p.parse_args(argv)
    if not opt.cfg and not opt.weights and not opt.resume:  # a resumed run keeps its own model
        opt.cfg = str(ROOT / "models/yolov5n.yaml")
    return opt


def main(opt: argparse.Namespace) -> int:
    from utils.engine.trainer import train
    from utils.io.cli import run_cli

    try:
        return run_cli(lambda: train(opt), "train")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    interrupt_on_signals()
    # under torchrun only rank 0 logs progress; the other ranks report warnings and errors
    main_rank = int(os.getenv("RANK", "-1")) in (-1, 0)
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING, format="%(message)s")
    sys.exit(main(parse_opt()))
