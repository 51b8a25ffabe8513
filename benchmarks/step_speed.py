"""Training-step cost of every loss strategy relative to the first one named (``yolov5``), on identical inputs.

    python benchmarks/step_speed.py [--losses yolov5,ota,freeanchor,gfl,ssd,dw,tal] [--cfg models/yolov5n.yaml]
        [--img 320] [--batch 16] [--objects 15] [--nc 3] [--repeats 7] [--device cpu|cuda] [--amp] [--cpu-time]

One model per head kind (same seed) and one synthetic batch (``--objects`` boxes per image, BCCD-like
sizes of 5-30 % of the image side) are shared by every strategy. Two timings per strategy, the
strategies interleaved within each repeat so that drifting machine load hits all alike: the loss
alone (assign + loss + backward into the head outputs) and a full training step (model forward +
loss + backward, under autocast with ``--amp``). The table gives the median and the best of
``--repeats`` and the median's ratio to the first strategy's. Prints the command.
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
from utils.loss import LOSSES, build_loss  # noqa: E402


def synthetic_targets(bs: int, per_image: int, nc: int, g: torch.Generator) -> torch.Tensor:
    """(bs * per_image, 6) ``[image, class, x, y, w, h]`` normalised."""
    n = bs * per_image
    wh = torch.rand(n, 2, generator=g) * 0.25 + 0.05
    xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
    image = torch.arange(bs).repeat_interleave(per_image).float()[:, None]
    return torch.cat((image, torch.randint(0, nc, (n, 1), generator=g).float(), xy, wh), 1)


def time_once(fn, device: torch.device, clock=time.perf_counter) -> float:
    """Seconds of one call on ``clock`` (the device synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - t0


def batch_parser(doc: str, repeats: int = 7) -> argparse.ArgumentParser:
    """The model, synthetic batch and repeat options of the step benchmarks."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--cfg", default=str(ROOT / "models" / "yolov5n.yaml"))
    ap.add_argument("--img", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--objects", type=int, default=15, help="objects per image")
    ap.add_argument("--nc", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def main() -> None:
    ap = batch_parser(__doc__)
    ap.add_argument("--losses", default=",".join(LOSSES), help="comma-separated strategy names; the first is the baseline")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="full step under autocast (float16 on CUDA, bfloat16 on CPU)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one torch thread, this thread's CPU time: steadier than wall-clock on a loaded machine")
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    if a.device not in ("cpu", "cuda") or (a.device == "cuda" and not torch.cuda.is_available()):
        ap.error(f"--device {a.device!r}: expected cpu, or cuda on a machine with a GPU")
    if a.cpu_time and a.device != "cpu":
        ap.error("--cpu-time measures the CPU: use it with --device cpu")
    device = torch.device(a.device)
    clock = time.thread_time if a.cpu_time else time.perf_counter
    if a.cpu_time:
        torch.set_num_threads(1)

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(a.batch, 3, a.img, a.img, generator=g).to(device)
    targets = synthetic_targets(a.batch, a.objects, a.nc, g).to(device)
    names = a.losses.split(",")
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        ap.error(f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}")
    models, fixed = {}, {}
    for head in dict.fromkeys(LOSSES[n].head for n in names):  # one model per head kind, same seed
        torch.manual_seed(0)
        models[head] = Model(a.cfg, ch=3, nc=a.nc, head=head).to(device).train()
        with torch.no_grad():
            fixed[head] = [p.detach() for p in models[head](imgs)]
    losses = {name: build_loss(models[LOSSES[name].head], {"loss": name}) for name in names}

    def loss_only(fn):
        preds = [p.clone().requires_grad_() for p in fixed[fn.head]]
        fn(preds, targets, imgs)[0].backward()

    def full_step(fn):
        model = models[fn.head]
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=a.amp):
            preds = model(imgs)
        fn(preds, targets, imgs)[0].backward()

    times = {name: ([], []) for name in names}
    for name in names:  # warm-up
        loss_only(losses[name])
        full_step(losses[name])
    for _ in range(a.repeats):
        for name in names:
            times[name][0].append(time_once(lambda: loss_only(losses[name]), device, clock))
            times[name][1].append(time_once(lambda: full_step(losses[name]), device, clock))

    med = {n: [statistics.median(t) for t in times[n]] for n in names}
    base = med[names[0]]
    print(f"{'loss':<11}{'loss ms med':>12}{'best':>8}{'x':>7}{'step ms med':>13}{'best':>8}{'x':>7}")
    for n in names:
        (lo, st), (lo_all, st_all) = med[n], times[n]
        print(f"{n:<11}{lo * 1e3:>12.1f}{min(lo_all) * 1e3:>8.1f}{lo / base[0]:>7.2f}"
              f"{st * 1e3:>13.1f}{min(st_all) * 1e3:>8.1f}{st / base[1]:>7.2f}")
    print(f"cfg {Path(a.cfg).name}, img {a.img}, batch {a.batch}, {a.objects} objects/image, {a.nc} classes, "
          f"{a.device}{' AMP' if a.amp else ''}, median and best of {a.repeats} interleaved repeats after one "
          f"warm-up, {torch.get_num_threads()} threads, {'CPU' if a.cpu_time else 'wall-clock'} ms; "
          f"x = median / {names[0]}'s median")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
