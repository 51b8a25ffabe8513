"""CPU training-step cost of fp32, channels_last, bf16 autocast and bf16 + channels_last, in one process.

    python benchmarks/precision_speed.py [--cfg models/yolov5n.yaml] [--img 320] [--batch 16] [--objects 15]
        [--nc 3] [--loss yolov5] [--repeats 5] [--modes fp32,cl,bf16,bf16+cl] [--threads N]
        [--cpu-time]

A mode with ``+det`` appended (``cl+det``, ``bf16+cl+det``) runs the same step inside
``utils.core.torch_utils.repeatable_kernels``, the deterministic kernels training uses on the CPU:
``--modes cl,cl+det`` measures what that costs (docs/reproducibility.md).

A whole training step on one synthetic batch (BCCD-like boxes): forward (under autocast for the bf16
modes, the outputs cast to float32), the loss in float32, backward, clip and an SGD step, as
utils/engine/step.py runs it. Every mode gets its own copy of the same model (same seed); the modes
are interleaved within each repeat so drifting machine load hits all alike. The table gives the best
and the median of ``--repeats`` and the best's ratio to the first mode's best. Prints the command.
Absolute times on a shared machine are noise; read the ratios.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_speed import batch_parser, synthetic_targets  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.core.precision import cpu_bf16_feature  # noqa: E402
from utils.core.torch_utils import repeatable_kernels  # noqa: E402
from utils.loss import LOSSES, build_loss  # noqa: E402

MODES = ("fp32", "cl", "bf16", "bf16+cl")
DET = "+det"  # suffix: the step under repeatable_kernels


def make_step(model: Model, loss_fn, imgs: torch.Tensor, targets: torch.Tensor, mode: str):
    """A callable running one training step of ``model`` in ``mode`` on the fixed batch."""
    deterministic = mode.endswith(DET)
    mode = mode.removesuffix(DET)
    channels_last = mode.endswith("cl")
    if channels_last:
        model.to(memory_format=torch.channels_last)
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)

    def step() -> None:
        with repeatable_kernels(torch.device("cpu")) if deterministic else contextlib.nullcontext():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
                preds = model(imgs)
            loss, _ = loss_fn([p.float() for p in preds], targets, imgs)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    ap = batch_parser(__doc__, repeats=5)
    ap.add_argument("--loss", default="yolov5", choices=sorted(LOSSES))
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}, each "
                                                             f"optionally with {DET}; the first is the baseline")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one torch thread, this thread's CPU time: steadier than wall-clock on a loaded machine")
    a = ap.parse_args()
    modes = a.modes.split(",")
    if a.repeats < 1 or any(m.removesuffix(DET) not in MODES for m in modes):
        ap.error(f"--repeats must be >= 1 and --modes from {', '.join(MODES)}, each optionally with {DET}")
    if a.threads < 0 or (a.cpu_time and a.threads > 1):
        ap.error("--threads must be >= 0 (and 1 with --cpu-time, which counts one thread)")
    if a.threads or a.cpu_time:
        torch.set_num_threads(a.threads or 1)
    clock = time.thread_time if a.cpu_time else time.perf_counter
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(a.batch, 3, a.img, a.img, generator=g)
    targets = synthetic_targets(a.batch, a.objects, a.nc, g)
    torch.manual_seed(0)
    base = Model(a.cfg, ch=3, nc=a.nc, head=LOSSES[a.loss].head).train()
    steps = {}
    for m in modes:
        model = copy.deepcopy(base)
        steps[m] = make_step(model, build_loss(model, {"loss": a.loss}), imgs, targets, m)
        steps[m]()  # warm-up: oneDNN primitive creation
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(a.repeats):
        for m in modes:
            t0 = clock()
            steps[m]()
            times[m].append(clock() - t0)
    ref, ref_med = min(times[modes[0]]), statistics.median(times[modes[0]])
    print(f"{'mode':<13}{'best s':>9}{'median s':>10}{'speed-up':>10}{'(medians)':>11}")
    for m in modes:
        med = statistics.median(times[m])
        print(f"{m:<13}{min(times[m]):>9.3f}{med:>10.3f}{ref / min(times[m]):>9.2f}x{ref_med / med:>10.2f}x")
    print(f"{Path(a.cfg).name}, img {a.img}, batch {a.batch}, loss {a.loss}, step = forward + fp32 loss + backward "
          f"+ clip + SGD; best / median of {a.repeats} interleaved repeats after a warm-up; "
          f"{torch.get_num_threads()} threads, {'CPU' if a.cpu_time else 'wall-clock'} s; "
          f"CPU bf16 feature: {cpu_bf16_feature() or 'none'}; torch {torch.__version__}")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
