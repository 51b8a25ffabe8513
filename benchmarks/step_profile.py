"""Where the time of a CPU training epoch goes: loader wait, forward, loss, backward, optimiser, EMA, logging.

    python benchmarks/step_profile.py --data data/bccd.yaml --cfg models/yolov5n.yaml --img 320 \\
        --batch-size 16 --workers 2 --precision bf16 [--hyp hyp/hyp.scratch.yaml] [--epochs 2]

It runs the real trainer (utils.engine.trainer: setup + train_epoch, the loader, loss, optimiser,
warm-up and EMA of train.py) without validation. The stepper's ``PhaseClock`` times forward, loss,
backward, optimiser (unscale, clip, step, zero_grad) and EMA inside ``Stepper.step``; "step, rest" is
the remainder of the step (batch to float, warm-up, finiteness check); "loader wait" is the time the
loop waits for the next batch; "logging and loop" is what is left of the epoch (loss means, progress
line, the train_batch pictures when plotting). Epochs after the first are timed (worker start-up and
first-call costs excluded). Prints a table and the command; absolute times on a shared machine are noise.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.train_speed import train_opt, train_parser  # noqa: E402
from utils.engine import trainer  # noqa: E402
from utils.engine.step import PhaseClock  # noqa: E402

PHASES = ("forward", "loss", "backward", "optimizer", "ema")


class TimedLoader:
    """A training loader that adds up the time its consumer waits for each batch in ``wait``."""

    def __init__(self, loader: Any):
        self.loader, self.wait = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            self.wait += time.perf_counter() - t0
            if batch is None:
                return
            yield batch


def profile(opt: argparse.Namespace, epochs: int) -> tuple[dict[str, float], int]:
    """Seconds per part over the epochs after the first, and the number of steps they ran."""
    run = trainer.setup(opt)
    loader = TimedLoader(run.train_loader)
    run.train_loader = loader
    step, step_s = run.stepper.step, [0.0]

    def timed_step(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return step(*args)
        finally:
            step_s[0] += time.perf_counter() - t0

    run.stepper.step = timed_step
    trainer.train_epoch(run, 0)
    run.stepper.clock, loader.wait, step_s[0] = PhaseClock(run.device), 0.0, 0.0
    t0 = time.perf_counter()
    for epoch in range(1, epochs):
        trainer.train_epoch(run, epoch)
    total = time.perf_counter() - t0
    parts = {name: run.stepper.clock.seconds.get(name, 0.0) for name in PHASES}
    parts["step, rest"] = step_s[0] - sum(parts.values())
    parts["loader wait"] = loader.wait
    parts["logging and loop"] = total - step_s[0] - loader.wait
    if run.lock is not None:
        run.lock.release()
    return parts, len(loader) * (epochs - 1)


def main() -> None:
    p = train_parser(__doc__, precision="bf16", epochs=2)
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is not timed)")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        opt = train_opt(args, tmp)
        parts, steps = profile(opt, args.epochs)
    total = sum(parts.values())
    print(f"\ncommand: python benchmarks/step_profile.py --data {args.data} --cfg {args.cfg} --hyp {args.hyp} "
          f"--img {args.img} --batch-size {args.batch_size} --workers {args.workers} --precision {args.precision} "
          f"--epochs {args.epochs}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {steps} timed steps")
    print("| part | ms per step | share |\n|---|---|---|")
    for name, s in parts.items():
        print(f"| {name} | {1e3 * s / steps:.1f} | {100 * s / total:.1f} % |")
    print(f"| **epoch** | {1e3 * total / steps:.1f} | 100 % |")


if __name__ == "__main__":
    main()
