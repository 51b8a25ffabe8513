"""Training-loader throughput vs. a plain ``cv2.imread`` + ``letterbox`` loop, on BCCD.

    python benchmarks/loader_speed.py [--data data/bccd.yaml] [--img 320] [--batch 16] [--workers 2]

Ours: ``create_dataloader(augment=True)`` with YOLOv5's hyp.scratch-low values (mosaic of 4
images, random affine, HSV, flips), batches collated to uint8 tensors. Plain: one process reading
the same images in a loop and letterboxing them to ``--img``. Both see the same number of images;
the first batch (worker start-up) is excluded from our timing. Prints a table and the command.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.data.augmentations import HYP_DEFAULTS, letterbox  # noqa: E402
from utils.dataloaders import check_dataset, create_dataloader  # noqa: E402


def time_ours(path: str, img: int, batch: int, workers: int, n_images: int, cache) -> tuple[int, float]:
    """Images/s of our augmenting loader over at least ``n_images`` images (after one warm-up batch)."""
    loader, _ = create_dataloader(path, img, batch, 32, hyp=HYP_DEFAULTS, augment=True, workers=workers,
                                  shuffle=True, seed=0, cache=cache)
    seen, t0 = 0, None
    while seen < n_images:
        for imgs, _, _, _ in loader:
            if t0 is None:
                t0 = time.perf_counter()  # after the first batch: workers are up
                continue
            seen += imgs.shape[0]
            if seen >= n_images:
                break
    return seen, time.perf_counter() - t0


def time_plain(files: list[str], img: int, n_images: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    for i in range(n_images):
        im = cv2.imread(files[i % len(files)])
        letterbox(im, img, auto=False)
    return n_images, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "bccd.yaml"))
    ap.add_argument("--img", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=400, help="images per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best time is kept")
    a = ap.parse_args()
    d = check_dataset(a.data)
    _, ds = create_dataloader(d["train"], a.img, a.batch, 32, workers=0)
    files = ds.im_files
    runs = {
        "plain cv2.imread + letterbox, 1 process": lambda: time_plain(files, a.img, a.images),
        f"ours: mosaic+affine+HSV+flip, {a.workers} workers":
            lambda: time_ours(d["train"], a.img, a.batch, a.workers, a.images, None),
        "ours: same, 0 workers (1 process)": lambda: time_ours(d["train"], a.img, a.batch, 0, a.images, None),
        f"ours: same, {a.workers} workers, cache=ram":
            lambda: time_ours(d["train"], a.img, a.batch, a.workers, a.images, "ram"),
    }
    best: dict[str, tuple[int, float]] = {}
    for _ in range(a.repeats):  # interleaved, so load from other processes hits all rows alike
        for name, fn in runs.items():
            n, t = fn()
            if name not in best or n / t > best[name][0] / best[name][1]:
                best[name] = (n, t)
    plain_ips = best[next(iter(runs))][0] / best[next(iter(runs))][1]
    print(f"\n{'pipeline':<48} {'images':>7} {'s':>7} {'img/s':>8} {'cost vs plain':>14}")
    for name, (n, t) in best.items():
        print(f"{name:<48} {n:>7} {t:>7.2f} {n / t:>8.1f} {plain_ips / (n / t):>13.2f}x")
    print(f"\nbest of {a.repeats} interleaved runs; batch {a.batch}, {a.img} px, {len(files)} train images "
          f"of {a.data}; os.cpu_count() = {os.cpu_count()}")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
