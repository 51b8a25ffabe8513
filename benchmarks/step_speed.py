"""Training-step cost of loss strategies relative to the first one named, on identical inputs.

    python benchmarks/step_speed.py [--losses yolov5,ssd] [--cfg models/yolov5n.yaml] [--img 320] [--batch 16] [--objects 15] [--nc 3]

One model and one synthetic batch (``--objects`` boxes per image, BCCD-like sizes of 5-30 % of the
image side) are shared by every strategy. Two timings per strategy, interleaved, best of
``--repeats``: the loss alone (assign + loss + backward into the head outputs) and a full training
step (model forward + loss + backward). Prints a table and the command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.yolo import Model  # noqa: E402
from utils.loss import LOSSES, build_loss  # noqa: E402


def synthetic_targets(bs: int, per_image: int, nc: int, g: torch.Generator) -> torch.Tensor:
    """(bs * per_image, 6) ``[image, class, x, y, w, h]`` normalised."""
    n = bs * per_image
    wh = torch.rand(n, 2, generator=g) * 0.25 + 0.05
    xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
    image = torch.arange(bs).repeat_interleave(per_image).float()[:, None]
    return torch.cat((image, torch.randint(0, nc, (n, 1), generator=g).float(), xy, wh), 1)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cfg", default=str(ROOT / "models" / "yolov5n.yaml"))
    ap.add_argument("--img", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--objects", type=int, default=15, help="objects per image")
    ap.add_argument("--nc", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--losses", default="yolov5,ssd", help="comma-separated strategy names; the first is the baseline")
    a = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(a.batch, 3, a.img, a.img, generator=g)
    targets = synthetic_targets(a.batch, a.objects, a.nc, g)
    names = a.losses.split(",")
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        ap.error(f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}")
    models, fixed = {}, {}
    for head in dict.fromkeys(LOSSES[n].head for n in names):  # one model per head kind, same seed
        torch.manual_seed(0)
        models[head] = Model(a.cfg, ch=3, nc=a.nc, head=head).train()
        with torch.no_grad():
            fixed[head] = [p.detach() for p in models[head](imgs)]
    losses = {name: build_loss(models[LOSSES[name].head], {"loss": name}) for name in names}

    def loss_only(fn):
        preds = [p.clone().requires_grad_() for p in fixed[fn.head]]
        fn(preds, targets, imgs)[0].backward()

    def full_step(fn):
        model = models[fn.head]
        model.zero_grad(set_to_none=True)
        fn(model(imgs), targets, imgs)[0].backward()

    results = {name: [float("inf"), float("inf")] for name in names}
    for name in names:  # warm-up
        loss_only(losses[name])
        full_step(losses[name])
    for _ in range(a.repeats):  # interleaved so drifting machine load hits both alike
        for name in names:
            results[name][0] = min(results[name][0], best_time(lambda: loss_only(losses[name]), 1))
            results[name][1] = min(results[name][1], best_time(lambda: full_step(losses[name]), 1))

    base = results[names[0]]
    print(f"{'loss':<10}{'loss ms':>10}{'x':>7}{'step ms':>10}{'x':>7}")
    for name in names:
        lo, st = results[name]
        print(f"{name:<10}{lo * 1e3:>10.1f}{lo / base[0]:>7.2f}{st * 1e3:>10.1f}{st / base[1]:>7.2f}")
    print(f"cfg {Path(a.cfg).name}, img {a.img}, batch {a.batch}, {a.objects} objects/image, "
          f"best of {a.repeats}, {torch.get_num_threads()} threads")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
