"""Per-step cost of loss strategies (forward + backward) on identical random head outputs.

    python benchmarks/loss_speed.py [--losses yolov5,ota,yolov5+tal] [--repeats 7] [--threads 2]

Two cases, as the ``ota`` issue asks: batch 16 at 640 px with 80 classes and ~8 objects per image,
and batch 16 at 320 px with 3 classes and ~15 objects per image. For each case one set of random
head outputs (N(0, 1) logits, shaped like yolov5n's head of the strategy's kind) and one set of
targets (5-30 % of the image side) is shared by every strategy, so only the loss differs. Each
repeat times every strategy in turn (interleaved, so load from other processes hits all alike):
the loss call plus ``backward()`` into the head outputs and, where the strategy has one, its
``assign()`` alone. The table gives the median and the best repeat, and the extra milliseconds
over the first strategy named. Prints the command.

Wall-clock times on a shared 2-core machine swing with the other processes' load (a parallel op
waits for a descheduled thread). ``--cpu-time`` measures this thread's CPU time with one torch
thread instead (``time.thread_time``), which load barely moves: use it to compare strategies there.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.yolo import Model  # noqa: E402
from utils.loss import LOSSES, build_loss, split_strategy  # noqa: E402

CASES = (  # (batch, image px, classes, objects per image)
    (16, 640, 80, 8),
    (16, 320, 3, 15),
)


def synthetic_targets(bs: int, per_image: int, nc: int, g: torch.Generator) -> torch.Tensor:
    """(about bs * per_image, 6) ``[image, class, x, y, w, h]`` normalised; 0..2x per_image per image."""
    n = bs * per_image
    wh = torch.rand(n, 2, generator=g) * 0.25 + 0.05
    xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
    image = torch.randint(0, bs, (n, 1), generator=g).float()
    return torch.cat((image, torch.randint(0, nc, (n, 1), generator=g).float(), xy, wh), 1)


def head_shapes(cfg: str, nc: int, head: str, img: int, bs: int) -> tuple[Model, list[tuple[int, ...]]]:
    model = Model(cfg, nc=nc, head=head).train()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, img, img))
    return model, [(bs, *o.shape[1:]) for o in out]


CLOCK = time.perf_counter


def time_once(fn) -> float:
    t0 = CLOCK()
    fn()
    return (CLOCK() - t0) * 1e3


def run_case(names: list[str], cfg: str, bs: int, img: int, nc: int, per_image: int,
             repeats: int, seed: int) -> dict[str, dict[str, list[float]]]:
    g = torch.Generator().manual_seed(seed)
    targets = synthetic_targets(bs, per_image, nc, g)
    imgs = torch.zeros(bs, 3, img, img, dtype=torch.uint8)
    setups, outputs = {}, {}
    for name in names:
        loss, rule = split_strategy(name)  # loss or loss+rule (yolov5+tal)
        head = LOSSES[loss].head
        model, shapes = head_shapes(cfg, nc, head, img, bs)
        if head not in outputs:
            gh = torch.Generator().manual_seed(seed + 1)
            outputs[head] = [torch.randn(s, generator=gh) for s in shapes]
        setups[name] = (build_loss(model, {"loss": loss, **({"assigner": rule} if rule else {})}), outputs[head])

    def step(name: str) -> float:
        loss_fn, base = setups[name]
        preds = [p.clone().requires_grad_() for p in base]
        return time_once(lambda: loss_fn(preds, targets, imgs)[0].backward())

    times = {n: {"step": [], "assign": []} for n in names}
    for n in names:  # warm-up
        step(n)
    for _ in range(repeats):
        for n in names:
            times[n]["step"].append(step(n))
            loss_fn, base = setups[n]
            if hasattr(loss_fn, "assign"):
                times[n]["assign"].append(time_once(lambda: loss_fn.assign(base, targets, imgs)))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--losses", default="yolov5,ota", help="comma-separated strategy names; the first is the baseline")
    ap.add_argument("--cfg", default=str(ROOT / "models" / "yolov5n.yaml"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-time", action="store_true", help="one thread, CPU time instead of wall-clock")
    a = ap.parse_args()
    names = [n.strip() for n in a.losses.split(",") if n.strip()]
    for n in names:
        try:
            split_strategy(n)
        except ValueError as e:
            ap.error(f"--losses {n!r}: {e}")
    global CLOCK
    if a.cpu_time:
        a.threads, CLOCK = 1, time.thread_time
    torch.set_num_threads(a.threads)
    base = names[0]
    print(f"\n{'case':<26} {'loss':<11} {'step ms med':>11} {'best':>7} {'extra vs ' + base:>16} "
          f"{'ratio':>6} {'assign ms med':>13} {'best':>6}")
    for bs, img, nc, per_image in CASES:
        times = run_case(names, a.cfg, bs, img, nc, per_image, a.repeats, a.seed)
        ref_med = statistics.median(times[base]["step"])
        case = f"bs{bs} {img}px {nc}cls ~{per_image}obj"
        for n in names:
            st, asg = times[n]["step"], times[n]["assign"]
            med = statistics.median(st)
            extra = f"{med - ref_med:+.1f} (best {min(st) - min(times[base]['step']):+.1f})"
            amed = f"{statistics.median(asg):.1f}" if asg else "-"
            abest = f"{min(asg):.1f}" if asg else "-"
            print(f"{case:<26} {n:<11} {med:>11.1f} {min(st):>7.1f} {extra:>16} {med / ref_med:>6.2f} "
                  f"{amed:>13} {abest:>6}")
            case = ""
    print(f"\nmedian and best of {a.repeats} interleaved repeats after one warm-up; "
          f"torch.set_num_threads({a.threads}); {'CPU' if a.cpu_time else 'wall-clock'} ms; "
          "step = loss + backward into the head outputs")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
