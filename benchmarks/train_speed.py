"""Training throughput of our train.py loop (images/s), for comparison with the official YOLOv5
train.py run by the reviewer on the same machine and settings.

    python benchmarks/train_speed.py --data data/bccd.yaml --cfg models/yolov5n.yaml --img 320 --batch-size 16 \
        [--precision auto|fp32|bf16]

It runs the real trainer (utils.engine.trainer: setup + train_epoch, same data pipeline, loss, optimiser,
warm-up and EMA as train.py) for ``--epochs`` epochs without validation, and reports images/s of
the epochs after the first (worker start-up and first-iteration costs excluded). Prints a table
and the command.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train as train_cli  # noqa: E402
from utils.engine import trainer  # noqa: E402


def train_parser(doc: str, precision: str = "auto", epochs: int = 3) -> argparse.ArgumentParser:
    """The options of the benchmarks that run the real trainer (BCCD, yolov5n, 320 px, batch 16)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/bccd.yaml")
    p.add_argument("--cfg", default="models/yolov5n.yaml")
    p.add_argument("--hyp", default="hyp/hyp.scratch.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=epochs, help="timed epochs = epochs - 1")
    p.add_argument("--precision", default=precision, choices=("auto", "fp32", "bf16"), help="train.py --precision")
    return p


def train_opt(args: argparse.Namespace, project: str) -> argparse.Namespace:
    """train.py's options for ``args`` (see ``train_parser``), quiet and without plots, into ``project``."""
    return train_cli.parse_opt(["--data", args.data, "--cfg", args.cfg, "--hyp", args.hyp, "--img", str(args.img),
                                "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                                "--epochs", str(args.epochs), "--precision", args.precision, "--project", project,
                                "--noplots", "--quiet"])


def main() -> None:
    args = train_parser(__doc__).parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        opt = train_opt(args, tmp)
        run = trainer.setup(opt)
        n_images = len(run.train_loader.dataset)
        times = []
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            trainer.train_epoch(run, epoch)
            times.append(time.perf_counter() - t0)
    timed = times[1:] or times
    ips = n_images * len(timed) / sum(timed)
    print(f"\ncommand: python benchmarks/train_speed.py --data {args.data} --cfg {args.cfg} --img {args.img} "
          f"--batch-size {args.batch_size} --workers {args.workers} --epochs {args.epochs} --precision {args.precision}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {run.precision.describe()}")
    print("| epoch | seconds | images/s |\n|---|---|---|")
    for i, t in enumerate(times):
        print(f"| {i}{' (warm-up, not counted)' if i == 0 and len(times) > 1 else ''} | {t:.1f} | {n_images / t:.1f} |")
    print(f"| **mean of timed epochs** | {sum(timed) / len(timed):.1f} | **{ips:.1f}** |")


if __name__ == "__main__":
    main()
