"""Does a CPU training step repeat bit for bit? Every loss strategy's step, run again and again on one batch.

    python benchmarks/repeatability.py [--losses yolov5,ota,...] [--cfg models/yolov5n.yaml] [--img 128]
        [--batch 16] [--objects 40] [--nc 3] [--repeats 6] [--threads 2] [--bf16]

For each strategy, ``--repeats`` times with torch's default kernels and as often under
``utils.core.torch_utils.repeatable_kernels`` (the two interleaved): the same model (same seed) takes a
forward pass (channels_last, as training on x86; bf16 autocast with ``--bf16``), the loss and backward on one
synthetic batch, and the result (the loss and every parameter's gradient) is hashed. The table gives the
number of distinct results of each kind (1 = it repeats) and, where they differ, how many parameters' gradients
differ from the first repeat's. Races need crowding: ``--objects`` objects per image make cells that several
objects share. Prints the command.
"""
from __future__ import annotations

import contextlib
import hashlib
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_speed import batch_parser, synthetic_targets  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.core.torch_utils import repeatable_kernels  # noqa: E402
from utils.loss import LOSSES, build_loss  # noqa: E402


def step_result(model: Model, loss_fn, imgs: torch.Tensor, targets: torch.Tensor, bf16: bool,
                deterministic: bool) -> tuple[str, dict[str, torch.Tensor]]:
    """(hash of the loss and all gradients, {parameter name: gradient}) of one forward + loss + backward."""
    model.zero_grad(set_to_none=True)
    with repeatable_kernels(torch.device("cpu")) if deterministic else contextlib.nullcontext():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            preds = model(imgs)
        loss, _ = loss_fn([p.float() for p in preds], targets, imgs)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    digest = hashlib.sha256(loss.detach().numpy().tobytes())
    for g in grads.values():
        digest.update(g.numpy().tobytes())
    return digest.hexdigest(), grads


def main() -> None:
    ap = batch_parser(__doc__, repeats=6)
    ap.set_defaults(img=128, objects=40)
    ap.add_argument("--losses", default=",".join(LOSSES), help="comma-separated strategy names")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--bf16", action="store_true", help="forward pass under bf16 autocast")
    a = ap.parse_args()
    names = a.losses.split(",")
    unknown = [n for n in names if n not in LOSSES]
    if unknown or a.repeats < 2 or a.threads < 1:
        ap.error(f"--losses from {', '.join(LOSSES)}; --repeats >= 2; --threads >= 1")
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(a.batch, 3, a.img, a.img, generator=g).contiguous(memory_format=torch.channels_last)
    targets = synthetic_targets(a.batch, a.objects, a.nc, g)
    print(f"{'loss':<11}{'default kernels':>17}{'repeatable_kernels':>20}")
    for name in names:
        torch.manual_seed(0)
        model = Model(a.cfg, ch=3, nc=a.nc, head=LOSSES[name].head).train().to(memory_format=torch.channels_last)
        loss_fn = build_loss(model, {"loss": name})
        seen: dict[bool, list] = {False: [], True: []}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(a.repeats):
                for det in (False, True):
                    seen[det].append(step_result(model, loss_fn, imgs, targets, a.bf16, det))
        cells = []
        for det in (False, True):
            first = seen[det][0][1]
            distinct = len({h for h, _ in seen[det]})
            differ = max(sum(not torch.equal(first[k], grads[k]) for k in first) for _, grads in seen[det])
            cells.append(f"{distinct} distinct" + (f" ({differ} grads)" if differ else ""))
        print(f"{name:<11}{cells[0]:>17}{cells[1]:>20}")
        for w in {str(w.message) for w in caught if "deterministic" in str(w.message)}:
            print(f"  {name}: {w}")
    print(f"cfg {Path(a.cfg).name}, img {a.img}, batch {a.batch}, {a.objects} objects/image, {a.nc} classes, "
          f"{'bf16 autocast' if a.bf16 else 'fp32'}, channels_last, {a.threads} threads, {a.repeats} repeats of each "
          f"kind interleaved; distinct = different (loss, gradients) results, 1 = repeats bit for bit")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
